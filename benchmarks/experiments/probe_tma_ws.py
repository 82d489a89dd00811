"""GPU probe (session 3): the TMA-descriptor kernel of attn_tma_ws.py, with and without Triton's
automatic warp specialisation, beside the package kernel (autotuned) and FA3 FP8 in the same run.
FA3's setting: 16k tokens per batch, hidden 2048, bf16 inputs quantised by the default recipe.
Prints one JSON row per shape (TFLOP/s; *_maxdiff = max |out - package kernel out|) and writes
$OUT/ws_probe.json. CFGS holds the configs timed in the two session-3 runs (tma_probe_s3.json
used kern="tma" only)."""
import json, os, sys, time
import torch, triton
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from triton.tools.tensor_descriptor import TensorDescriptor
from attn_tma_ws import _attn_fwd_tma, LOG2E
from common import attn_flops, bench_ms, fa3_out, load_fa3
from fp8attn import Recipe
from fp8attn.quant import quantize_qkv
from fp8attn.attention.triton_fwd import attention_fwd_fp8, _BEST

def tma_call(q8, k8, v8, causal, out, cfg):
    B, H, S, D = q8.data.shape
    Hkv, Sk = k8.data.shape[1], k8.data.shape[2]
    BM, BN, split = cfg["BM"], cfg["BN"], cfg.get("split", 1)
    vt = v8.data
    dq = TensorDescriptor(q8.data, list(q8.data.shape), list(q8.data.stride()), [1, 1, BM, D])
    dk = TensorDescriptor(k8.data, list(k8.data.shape), list(k8.data.stride()), [1, 1, BN, D])
    dv = TensorDescriptor(vt, list(vt.shape), list(vt.stride()), [1, 1, D // split, BN])
    grid = (triton.cdiv(S, BM), B * H)
    _attn_fwd_tma[grid](dq, dk, dv, q8.descale, k8.descale, v8.descale, out,
                        q8.descale.stride(0), q8.descale.stride(1), k8.descale.stride(0), k8.descale.stride(1),
                        v8.descale.stride(0), v8.descale.stride(1), out.stride(0), out.stride(1), out.stride(2),
                        H, H // Hkv, S, Sk, q8.block_size, k8.block_size, v8.block_size, D ** -0.5 * LOG2E,
                        CAUSAL=2 if causal else 0, HEAD_DIM=D, P_SHIFT=8, WS=cfg.get('ws', False), ONE_LOOP=cfg.get('ws', False) or cfg.get('one_loop', False),
                        REVERSE=cfg.get("rev", True), SPLIT=split, INTERPRET=os.environ.get("TRITON_INTERPRET") == "1", BLOCK_M=BM, BLOCK_N=BN,
                        num_warps=cfg["w"], num_stages=cfg["s"])
    return out

# run 1 (tma_probe_s3.json): TMA loads, the package's two-loop form (WS off)
CFGS_RUN1 = {64: [dict(BM=128, BN=128, w=4, s=3), dict(BM=64, BN=128, w=4, s=3), dict(BM=128, BN=128, w=8, s=3), dict(BM=64, BN=128, w=4, s=4)],
             128: [dict(BM=64, BN=128, w=4, s=3), dict(BM=64, BN=128, w=4, s=4), dict(BM=128, BN=128, w=8, s=3), dict(BM=64, BN=128, w=4, s=2), dict(BM=128, BN=128, w=8, s=2)],
             256: [dict(BM=64, BN=64, w=4, s=3, split=2, rev=False), dict(BM=64, BN=64, w=4, s=2, split=2, rev=False)]}
# run 2 (ws_probe_s3.json): ws=True is the one-loop warp-specialised form; the last hdim-128 entry
# is run 1's two-loop form again
CFGS = {128: [dict(BM=64, BN=128, w=4, s=3, ws=True), dict(BM=64, BN=128, w=4, s=2, ws=True), dict(BM=64, BN=64, w=4, s=3, ws=True),
               dict(BM=64, BN=128, w=4, s=3, ws=False, one_loop=True), dict(BM=64, BN=128, w=4, s=3)],
         64: [dict(BM=64, BN=128, w=4, s=3, ws=True), dict(BM=64, BN=64, w=4, s=3, ws=True), dict(BM=64, BN=128, w=4, s=2, ws=True)],
         256: [dict(BM=64, BN=64, w=4, s=3, split=2, ws=True), dict(BM=64, BN=64, w=4, s=2, split=2, ws=True)]}


def main():
    cfgs = CFGS_RUN1 if "--run1" in sys.argv else CFGS
    fa3, why = load_fa3(); print("fa3", why or "ok", flush=True)
    rows = []
    t0 = time.time()
    for d in (128, 64, 256):
        for s in (4096, 16384, 1024):
            b, h = 16384 // s, 2048 // d
            g = torch.Generator(device="cuda").manual_seed(s + d)
            q, k, v = (torch.randn(b, s, h, d, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
            q8, k8, v8 = quantize_qkv(qh, kh, vh, Recipe())
            ones = torch.ones(b, h, device="cuda")
            qf, kf, vf = (x.to(torch.float8_e4m3fn) for x in (q, k, v))
            for causal in (False, True):
                out = torch.empty(b, h, s, d, device="cuda", dtype=torch.bfloat16)
                ref = attention_fwd_fp8(q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                        q_block=q8.block_size, k_block=k8.block_size, v_block=v8.block_size,
                        softmax_scale=d ** -0.5, causal="bottom_right" if causal else None).float()
                fl = attn_flops(b, h, s, s, d, causal)
                row = dict(hdim=d, seqlen=s, causal=causal)
                row["ours"] = fl / bench_ms(lambda: attention_fwd_fp8(q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                        q_block=q8.block_size, k_block=k8.block_size, v_block=v8.block_size,
                        softmax_scale=d ** -0.5, causal="bottom_right" if causal else None, out=out)) * 1e-9
                if fa3 is not None:
                    row["fa3_fp8"] = fl / bench_ms(lambda: fa3_out(fa3.flash_attn_func(qf, kf, vf, causal=causal, q_descale=ones, k_descale=ones, v_descale=ones))) * 1e-9
                for i, cfg in enumerate(cfgs[d]):
                    try:
                        o = tma_call(q8, k8, v8, causal, torch.empty_like(out), cfg).float()
                        err = (o - ref).abs().max().item()
                        row[f"tma{i}"] = fl / bench_ms(lambda: tma_call(q8, k8, v8, causal, out, cfg)) * 1e-9
                        row[f"tma{i}_maxdiff"] = err
                    except Exception as e:
                        row[f"tma{i}"] = f"{type(e).__name__}: {str(e)[:200]}"
                print(json.dumps(row), flush=True)
                rows.append(row)
            if time.time() - t0 > 330:
                break
    out = os.environ.get("OUT", "/tmp")
    json.dump(dict(rows=rows, cfgs=cfgs, gpu=torch.cuda.get_device_name(), best={str(k): str(v) for k, v in _BEST.items()}), open(os.path.join(out, "ws_probe.json"), "w"), indent=1)

if __name__ == "__main__":
    main()
