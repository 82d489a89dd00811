"""Instructions per score element in the tile loop: the package's dispatched Gluon kernels beside
FA3's FP8 kernels from the fa3-fwd wheel, read from the SASS offline (no GPU needed).

    PYTHONPATH=/tmp/t36:. python benchmarks/experiments/sass_vs_fa3.py .whl/fa3_fwd-*.whl \
        [--head-dims 64,128,256] [--causal]

(/tmp/t36: the Triton 3.6 wheel unpacked, for its ptxas / cuobjdump; c++filt from binutils;
the fa3-fwd wheel, on any machine: `pip download --no-deps --only-binary=:all: --python-version
3.12 --implementation cp --platform manylinux_2_24_x86_64 -d .whl fa3-fwd==0.0.3`.) For each head dim: FA3's e4m3 kernel
for plain batches (no varlen, paging, split, local, softcap, GQA packing), its tile shape and
register split (setmaxnreg), and per innermost tile loop of each kernel: instructions, MUFU.EX2
(one per score element and a few per row for the rescale factors), instructions per EX2, and the
most frequent opcodes. Ours: gluon_dispatch.variant_for at 4k keys, compiled as
sass_loop_skip_check.kernel_sass does. Instructions per EX2 compares the per-element work with
the per-tile work spread over it, whatever the tile length.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sass_issue_model import innermost_wgmma_loops, opcode_counts  # noqa: E402

# CollectiveMainloopFwdSm90's bool template arguments, in order (FA3's hopper/
# mainloop_fwd_sm90_tma_gmma_ws.hpp)
FA3_FLAGS = ("causal", "local", "softcap", "varlen", "paged_non_tma", "append_kv", "has_qv",
             "mma_pv_rs", "intra_wg_overlap", "pack_gqa", "split", "v_colmajor")
MAINLOOP = re.compile(
    r"CollectiveMainloopFwdSm90<(\d+), cute::tuple<[^>]*>, [^>]*>, [^>]*> >, "
    r"cute::tuple<cute::C<(\d+)>, cute::C<(\d+)>, cute::C<(\d+)> >, (\d+), "
    r"cutlass::float_e4m3_t, float, cutlass::arch::Sm90, ((?:(?:true|false)(?:, )?)+)>")


def _cuobjdump():
    import triton
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                        "cuobjdump")


def _run(cmd, cwd=None) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed (rc {r.returncode}): "
                           f"{r.stderr.strip()[-400:]}")
    return r.stdout


def fa3_kernels(wheel: str, workdir: str) -> list[dict]:
    """FA3's e4m3 forward kernels for plain batches in the wheel (or its extension module):
    cubin, mangled name, stages, tile (m, n), head dim, flags."""
    so = wheel
    if wheel.endswith(".whl"):
        with zipfile.ZipFile(wheel) as z:
            name = next(n for n in z.namelist() if n.endswith(".so"))
            so = z.extract(name, workdir)
    _run([_cuobjdump(), "-xelf", "all", os.path.abspath(so)], cwd=workdir)
    found = []
    for cubin in sorted(f for f in os.listdir(workdir) if f.endswith("sm_90.cubin")):
        path = os.path.join(workdir, cubin)
        mangled = re.findall(r"STT_FUNC\s+STB_\w+\s+STO_ENTRY\s+(_Z\S+)",
                             _run([_cuobjdump(), "-symbols", path]))
        if not mangled:
            continue
        for m, d in zip(mangled, _demangle(mangled)):
            hit = MAINLOOP.search(d)
            if not hit or "FlashAttnFwdSm90" not in d:
                continue
            flags = dict(zip(FA3_FLAGS, (x == "true" for x in hit.group(6).split(", "))))
            if any(flags[k] for k in ("local", "softcap", "varlen", "paged_non_tma",
                                      "append_kv", "has_qv", "pack_gqa", "split")):
                continue
            found.append(dict(cubin=path, mangled=m, stages=int(hit.group(1)),
                              tile=(int(hit.group(2)), int(hit.group(3))),
                              head_dim=int(hit.group(4)), flags=flags))
    return found


def _demangle(names: list[str]) -> list[str]:
    r = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"c++filt failed: {r.stderr.strip()[-200:]}")
    return r.stdout.splitlines()


def fa3_sass(kernel: dict) -> str:
    return _run([_cuobjdump(), "-sass", "-fun", kernel["mangled"], kernel["cubin"]])


def our_sass(head_dim: int, causal: bool) -> tuple[dict, str]:
    from fp8attn.attention import gluon_dispatch as gd
    from sass_loop_skip_check import kernel_sass
    variant = gd.variant_for(head_dim, "top_left" if causal else None, 4096, 4096)
    return variant, kernel_sass(f"vsfa3_d{head_dim}_c{int(causal)}", head_dim=head_dim,
                                causal=int(causal), **variant)


def describe(sass: str) -> list[str]:
    """One line per innermost tile loop: instructions, EX2, instructions per EX2, top opcodes;
    and the setmaxnreg values."""
    regs = sorted(set(re.findall(r"USETMAXREG\.(\w+)\.CTAPOOL (?:UP0, )?(0x[0-9a-f]+)", sass)))
    lines = ["  setmaxnreg: " + ", ".join(f"{k.lower()} {int(v, 16)}" for k, v in regs)]
    seen = set()
    for body in innermost_wgmma_loops(sass, min_wgmmas=2, max_len=3000):
        ex2 = sum("MUFU.EX2" in t for t in body)
        counts = opcode_counts(body)
        key = (len(body), ex2)
        if key in seen:     # unrolled copies of the same loop
            continue
        seen.add(key)
        top = ", ".join(f"{k} {v}" for k, v in list(counts.items())[:16])
        lines.append(f"  loop: {len(body)} instructions, {ex2} EX2, "
                     f"{len(body) / max(ex2, 1):.2f} a EX2; {top}")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wheel", help="the fa3-fwd wheel (.whl) or its _C.abi3.so")
    ap.add_argument("--head-dims", default="64,128,256")
    ap.add_argument("--causal", action="store_true")
    a = ap.parse_args()
    dims = [int(x) for x in a.head_dims.split(",")]
    with tempfile.TemporaryDirectory(prefix="fa3sass_") as work:
        kernels = fa3_kernels(a.wheel, work)
        for d in dims:
            mine = [k for k in kernels if k["head_dim"] == d and k["flags"]["causal"] == a.causal]
            print(f"head dim {d}, {'causal' if a.causal else 'non-causal'}")
            if mine:
                k = mine[0]
                print(f" FA3 FP8: {k['tile'][0]} x {k['tile'][1]} tiles, {k['stages']} stages, "
                      f"P from registers {k['flags']['mma_pv_rs']}, intra-warpgroup overlap "
                      f"{k['flags']['intra_wg_overlap']} ({len(mine)} matching, the first shown)")
                print("\n".join(describe(fa3_sass(k))))
            else:
                print(" FA3 FP8: no matching kernel in the wheel")
            variant, sass = our_sass(d, a.causal)
            print(f" ours: {variant}")
            print("\n".join(describe(sass)))


if __name__ == "__main__":
    main()
