"""Offline sm_90a compile check of fp8attn/attention/gluon_fwd.py (no GPU needed).

    PYTHONPATH=/tmp/t36:/work/main /work/venv/bin/python benchmarks/experiments/gluon_compile.py

(/tmp/t36: the Triton 3.6 wheel unpacked, the version the device machine runs.) Prints per variant:
compile OK or the error, registers / spills from ptxas -v, shared memory, the number of wgmma
instructions in the PTX, the setmaxnreg values and, per tile step, the softmax work ptxas left
under the P @ V (softmax_under_pv). Optional arguments: variant names to build
(default: all), e.g. `ws pingpong`. PTX and TTGIR land in /tmp/gluon_attn_<variant>.{ptx,ttgir}.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import traceback

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fp8attn.attention import gluon_fwd as gluon_attn  # noqa: E402
from sass_issue_model import innermost_wgmma_loops  # noqa: E402

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
CUOBJDUMP = os.path.join(os.path.dirname(PTXAS), "cuobjdump")

VARIANTS = gluon_attn.VARIANTS


def build(head_dim=128, causal=0, lse=False, kv_block=128, q_terms=1, out="bf16", trace=False,
          v_rows=0, varlen=False, **kw):
    """causal: 0, 1 (top-left) or 2 (bottom-right); causal and lse: mode pingpong with overlap
    only. kv_block: the K and V descale block (compile-time; 0 = one per head). out: the output
    type (bf16, fp16, fp32). v_rows: rows of V^T a head when not head_dim (0), a head dim
    below 128 on the 128 kernel (gluon_dispatch.kernel_head_dim). varlen: the VARLEN form
    (gluon_dispatch.VARIANT_VARLEN*)."""
    cfg = gluon_attn.kernel_config(**kw)
    out_types = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    num_warps = cfg.pop("num_warps")
    q_box = gluon_attn.q_box_rows(cfg["BLOCK_M"], cfg["CONSUMERS"])
    ql, kl, vl = gluon_attn.smem_layouts(head_dim, q_box, cfg["BLOCK_N"])
    descs = dict(q_desc=f"tensordesc<fp8e4nv[{q_box}, {head_dim}],{ql!r}>",
                 ql_desc=f"tensordesc<fp8e4nv[{q_box}, {head_dim}],{ql!r}>",
                 k_desc=f"tensordesc<fp8e4nv[{cfg['BLOCK_N']}, {head_dim}],{kl!r}>",
                 v_desc=f"tensordesc<fp8e4nv[{head_dim}, {cfg['BLOCK_N']}],{vl!r}>")
    if cfg.get("TMA_STORE"):
        blk, ol = gluon_attn.out_tile_layout(cfg["BLOCK_M"] // cfg["CONSUMERS"], head_dim,
                                             cfg["TMA_STORE"], out_types[out])
        descs["o_desc"] = f"tensordesc<{out}[{', '.join(map(str, blk))}],{ol!r}>"
    else:
        descs["o_desc"] = descs["q_desc"]
    consts = dict(cfg, HEAD_DIM=head_dim, P_SHIFT=8, CAUSAL=causal, RETURN_LSE=lse,
                  V_ROWS=v_rows, k_block=kv_block, v_block=kv_block, Q_TERMS=q_terms,
                  TRACE=trace, VARLEN=varlen)
    fn = gluon_attn._attn_fwd_gluon
    sig, attrs = {}, {}
    for i, n in enumerate(fn.arg_names):
        if n in descs:
            sig[n] = descs[n]
        elif n in consts:
            sig[n] = "constexpr"
        elif n in ("QD", "KD", "VD"):
            sig[n] = "*fp32"
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif n == "O":
            sig[n] = "*" + out
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif n == "LSE":
            sig[n] = "*fp32"
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif n == "SCHED":
            # a varlen launch passes q_descale there (no schedule: nothing may read it), or
            # its int32 work buffer with dynamic=True
            sig[n] = "*fp32" if varlen and not cfg["DYNAMIC"] else "*i32"
        elif n in ("CU_Q", "CU_K", "KV_STARTS", "Q_TILES", "Q_TILE_SEQ"):
            sig[n] = "*i32"
        elif n == "TRACE_PTR":
            sig[n] = "*i64"
        elif n == "qk_scale":
            sig[n] = "fp32"
        else:
            sig[n] = "i32"
    src = GluonASTSource(fn=fn, signature=sig, constexprs={k: consts[k] for k in consts
                                                           if k in fn.arg_names}, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=num_warps))


def softmax_under_pv(sass: str) -> list:
    """Per tile step of each wgmma loop in `sass` (cuobjdump -sass text): the (instructions,
    row-max FMNMX, MUFU exp2) between a `wait_group 1` (S ready, the previous P @ V still in
    flight) and the next `wait_group 0`, i.e. the softmax work that overlaps the P @ V. ptxas
    moves the second wait up when it lacks registers, silently (session 17: the persistent
    kernels ran 0-45 instructions there against ~275 in the non-persistent ones, 8-10% of
    their causal speed)."""
    steps = []
    for body in innermost_wgmma_loops(sass):
        for j in (j for j, t in enumerate(body) if "DEPBAR.LE gsb0, 0x1" in t):
            k = next((k for k in range(j + 1, j + len(body)) if "DEPBAR.LE gsb0, 0x0"
                      in body[k % len(body)]), None)
            if k is not None:
                seg = [body[x % len(body)] for x in range(j + 1, k)]
                steps.append((len(seg), sum("FMNMX" in t for t in seg),
                              sum("MUFU.EX2" in t for t in seg)))
    return steps


def report(name, kern):
    ptx = kern.asm["ptx"]
    base = f"/tmp/gluon_attn_{name}"
    with open(base + ".ptx", "w") as f:
        f.write(ptx)
    with open(base + ".ttgir", "w") as f:
        f.write(kern.asm["ttgir"])
    r = subprocess.run([PTXAS, "-arch=sm_90a", "-v", base + ".ptx", "-o", base + ".o"],
                       capture_output=True, text=True)
    regs = re.findall(r"Used (\d+) registers", r.stderr)
    spill = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", r.stderr)
    setmax = re.findall(r"setmaxnreg\.(inc|dec)\.sync\.aligned\.u32\s+(\d+)", ptx)
    sass = subprocess.run([CUOBJDUMP, "-sass", base + ".o"], capture_output=True,
                          text=True).stdout if r.returncode == 0 else ""
    return dict(regs=regs, spills=spill, smem=kern.metadata.shared,
                softmax_under_pv=softmax_under_pv(sass),
                wgmma=len(re.findall(r"wgmma\.mma_async", ptx)),
                setmaxnreg=sorted(set(f"{a}{b}" for a, b in setmax)),
                ptxas_rc=r.returncode, ptxas_err=r.stderr.strip()[-400:] if r.returncode else "",
                ptxas_warn=sorted(set(re.findall(r"(?:warning|Performance Loss)[^\n]*",
                                                  r.stderr)))[:3])


def main(names):
    for name in names or VARIANTS:
        t = time.time()
        try:
            kern = build(**VARIANTS[name])
        except Exception as e:  # report and go on with the next variant
            msg = "".join(traceback.format_exception_only(type(e), e)).strip()
            print(f"{name}: COMPILE ERROR ({time.time() - t:.1f}s): {msg[-1500:]}")
            continue
        print(f"{name}: OK ({time.time() - t:.1f}s) {report(name, kern)}")


if __name__ == "__main__":
    main(sys.argv[1:])
