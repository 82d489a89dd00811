"""Offline sm_90a compile of the Triton (tl) attention kernel, triton_fwd._attn_fwd (no GPU needed):
registers, spills and the kinds of global loads in the PTX, for dense and varlen launches.

    PYTHONPATH=/tmp/t36:/work/main /work/venv/bin/python benchmarks/experiments/tl_compile.py

(/tmp/t36: the Triton 3.6 wheel unpacked, the version the device machine runs.) Session 31 found
with it that varlen calls loaded V^T a byte at a time (`ld.global.b8`) where dense ones use
16-byte `cp.async`: the kernel could not prove a varlen sequence's K / V start aligned until
KV_ALIGNED told it. Pointer arguments are declared 16-byte aligned and every stride a multiple of
16 except the unit ones, as Triton specialises them at launch on the GPU. PTX lands in
/tmp/tl_attn.ptx.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fp8attn.attention import triton_fwd

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
POINTERS = {"Q": "*fp8e4nv", "QL": "*fp8e4nv", "K": "*fp8e4nv", "VT": "*fp8e4nv", "QD": "*fp32",
            "KD": "*fp32", "VD": "*fp32", "O": "*bf16", "LSE": "*fp32", "CU_Q": "*i32",
            "CU_K": "*i32", "CU_KV": "*i32"}
UNIT_STRIDES = {"stride_qd", "stride_kd", "stride_vn", "stride_od", "stride_lm"}


def compile_attn(*, varlen: bool, k_mode: int, v_per_col: bool, kv_aligned: bool, causal=0,
                 d=128, block_m=64, block_n=128, warps=4, stages=3) -> dict:
    meta = dict(CAUSAL=causal, HEAD_DIM=d, HEAD_DIM_PAD=d, IS_VARLEN=varlen, RETURN_LSE=False,
                P_SHIFT=8, ACC_MODE=0, K_MODE=k_mode, V_PER_COL=v_per_col, KV_ALIGNED=kv_aligned,
                SPLIT=2 if d >= 256 else 1, ONE_LOOP=False, REVERSE=True, INTERPRET=False,
                Q_TERMS=1, BLOCK_M=block_m, BLOCK_N=block_n)
    fn = triton_fwd._attn_fwd
    sig, const, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in meta:
            sig[name], const[name] = "constexpr", meta[name]
        elif name in POINTERS:
            sig[name], attrs[(i,)] = POINTERS[name], [["tt.divisibility", 16]]
        elif name in UNIT_STRIDES:
            sig[name], const[name] = "constexpr", 1
        elif name == "qk_scale":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if name.startswith("stride") or name in ("q_block", "k_block", "v_block"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const, attrs=attrs),
                            target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=warps, num_stages=stages))
    ptx = kernel.asm["ptx"]
    with open("/tmp/tl_attn.ptx", "w") as f:
        f.write(ptx)
    with tempfile.TemporaryDirectory() as tmp:
        log = subprocess.run([PTXAS, "-arch=sm_90a", "-v", "/tmp/tl_attn.ptx", "-o",
                              os.path.join(tmp, "k.cubin")], capture_output=True, text=True).stderr
    loads: dict[str, int] = {}
    load = r"ld\.global[.\w]*|cp\.async\.c[ag]\.shared\.global[^;]*?, (?:0x)?\d+"
    for m in re.finditer(load, ptx):
        kind = re.sub(r"\[[^\]]*\]", "[]", m.group(0))
        loads[kind] = loads.get(kind, 0) + 1
    return dict(regs=int(re.search(r"Used (\d+) registers", log).group(1)),
                spill_bytes=int(re.search(r"(\d+) bytes spill stores", log).group(1)), loads=loads)


def main():
    cases = [("dense", dict(varlen=False, k_mode=1, v_per_col=False, kv_aligned=True)),
             ("varlen, padded starts", dict(varlen=True, k_mode=1, v_per_col=False,
                                            kv_aligned=True)),
             ("varlen, padded, no hint", dict(varlen=True, k_mode=1, v_per_col=False,
                                              kv_aligned=False)),
             ("varlen, packed", dict(varlen=True, k_mode=2, v_per_col=True, kv_aligned=False))]
    for name, kw in cases:
        r = compile_attn(**kw)
        print(f"{name:26s} regs {r['regs']:3d}  spill {r['spill_bytes']:5d} B  loads {r['loads']}")


if __name__ == "__main__":
    main()
