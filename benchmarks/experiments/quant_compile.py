"""Offline sm_90a compile of the quantiser's `_quant_kernel` as quantize_qkv launches it for a
varlen batch (K / V into padded rows), with and without ROW_MAP: registers and spills from
ptxas (no GPU needed). Two steps: the launches' meta captured from an interpreter call on the
CPU, then compiled with the Triton the device machine runs (/tmp/t36: the 3.6 wheel unpacked),
with the hardware's rounding (SOFT_CAST off) and the first config the autotuner's prune keeps:

    TRITON_INTERPRET=1 FP8ATTN_TUNE=minimal PYTHONPATH=$PWD python \
        benchmarks/experiments/quant_compile.py 96
    PYTHONPATH=/tmp/t36:$PWD python benchmarks/experiments/quant_compile.py 96

Session 37 (head dim 96 / 80: K's rotation in LAYOUT 1, BLOCK_S 128, 4 warps): 254 registers,
no spills, with and without the row map. PTX in /tmp/qc/."""
import json
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import fp8attn.quant.triton as qt
from fp8attn import Recipe
from fp8attn.quant import quantize_qkv
from fp8attn.quant.padded_rows import padded_rows

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
captured = []
real = qt._run


def spy(args, scale, row_amax, signs_arg, hm, B, H, S, D, nb, bs, xs, os_, config, **meta):
    captured.append(dict(meta, HEAD_DIM=D, TRANSPOSE=meta["TRANSPOSE"]))
    return real(args, scale, row_amax, signs_arg, hm, B, H, S, D, nb, bs, xs, os_, config, **meta)


qt._run = spy
d = int(sys.argv[1]) if len(sys.argv) > 1 else 96
lens = [70, 300]
tot = sum(lens)
q = torch.randn(1, 2, tot, d, dtype=torch.bfloat16)
k = torch.randn(tot, 2, d, dtype=torch.bfloat16).permute(1, 0, 2).unsqueeze(0)
v = torch.randn(tot, 2, d, dtype=torch.bfloat16).permute(1, 0, 2).unsqueeze(0)
cu = torch.tensor([0, 70, 370], dtype=torch.int32)
layout = padded_rows(cu, tot, 128)
os.makedirs("/tmp/qc", exist_ok=True)
if os.environ.get("TRITON_INTERPRET") == "1":
    quantize_qkv(q, k, v, Recipe(), backend="triton", kv_rows=layout, v_key_order="mma")
    json.dump(captured, open(f"/tmp/qc/meta_{d}.json", "w"), default=str)
    sys.exit(0)
captured = json.load(open(f"/tmp/qc/meta_{d}.json"))
fn = qt._quant_kernel.fn
PTR = {"x_ptr": "*bf16", "out_ptr": "*fp8e4nv", "res_ptr": "*fp8e4nv", "map_ptr": "*i32"}
for meta in captured:
    for row_map in (True, False):
        m = {k: v for k, v in meta.items() if k not in ("map_ptr", "S_SRC", "enable_fp_fusion")}
        m["ROW_MAP"] = row_map and meta.get("ROW_MAP", False)
        m["SOFT_CAST"] = False
        if not m["ROW_MAP"]:
            m.pop("MAP_ALIGN", None)
        os.environ["FP8ATTN_TUNE"] = "minimal"
        c = qt._prune(qt.CONFIGS, m)[0]
        cfg = dict(m, **c.kwargs)
        warps = c.num_warps
        sig, const, attrs = {}, {}, {}
        for i, name in enumerate(fn.arg_names):
            if name in cfg:
                sig[name], const[name] = "constexpr", cfg[name]
            elif name.endswith("_ptr"):
                if name == "map_ptr" and not cfg["ROW_MAP"]:
                    sig[name], const[name] = "constexpr", None
                    continue
                sig[name] = PTR.get(name, "*fp32")
                attrs[(i,)] = [["tt.divisibility", 16]]
            elif name == "S_SRC" and not cfg["ROW_MAP"]:
                sig[name], const[name] = "constexpr", None
            else:
                sig[name] = "i32"
        kern = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const, attrs=attrs),
                              target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
        ptx = kern.asm["ptx"]
        open(f"/tmp/qc/q_{d}_{meta['TRANSPOSE']}_{m['ROW_MAP']}.ptx", "w").write(ptx)
        with tempfile.TemporaryDirectory() as tmp:
            p = os.path.join(tmp, "k.ptx"); open(p, "w").write(ptx)
            log = subprocess.run([PTXAS, "-arch=sm_90a", "-v", p, "-o", p + ".o"],
                                 capture_output=True, text=True).stderr
        print(d, "V" if meta["TRANSPOSE"] else "K", "ROW_MAP" if m["ROW_MAP"] else "plain",
              "layout", cfg["LAYOUT"], "BLOCK_S", cfg["BLOCK_S"], "warps", warps,
              re.findall(r"Used (\d+) registers", log), re.findall(r"(\d+) bytes spill stores", log))
