"""Which allocations does reduce-overhead's CUDA-graph pool refuse on a process's first call?"""
import torch
import torch._inductor.config as ic

import fp8attn

ic.triton.cudagraph_trees_history_recording = True
compiled = torch.compile(lambda a, b, c: fp8attn.flash_attn_func(a, b, c),
                         mode="reduce-overhead", fullgraph=True)
g = torch.Generator(device="cuda").manual_seed(8)
for i in range(4):
    q, k, v = (torch.randn(2, 512, 4, 128, generator=g, device="cuda").bfloat16()
               for _ in range(3))
    try:
        o = compiled(q, k, v).clone()
        print(i, "ok", torch.equal(o, fp8attn.flash_attn_func(q, k, v)))
    except RuntimeError as e:
        msg = str(e)
        print(i, "RuntimeError:", msg[:6000])
        break
