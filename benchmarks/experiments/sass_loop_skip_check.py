"""Look in a kernel's SASS for uniform registers that a loop-skipping path reads but only the
skipped loop's preheader or body writes: the miscompile behind the two-Q-buffer causal bug
(session 24).

There, ptxas (Triton 3.6's) computed the Q K^T descriptors of k-steps 1.. (UR20 = Q's + 2, ...)
once in the preheader of a consumer's full-tile loop and reused them in the masked tiles after
it. An item with no full tile (query block 0, causal) branches around the loop, so its masked
tile read the previous item's descriptors (the other Q buffer with two of them: wrong rows) or,
as a CTA's first item, never-written ones (an out-of-bounds shared read: compute-sanitizer
memcheck, results/q2san_memcheck_s24.log). The PTX is right: it recomputes them there.

For every forward conditional branch whose span ends with a loop's back edge,
it walks the code from the branch's target up to the next backward branch leaving that code
and lists each uniform register read there before being written there, that the skipped span
writes. A register not written between the enclosing loop's head and the branch holds a stale
or undefined value on the skipping path ("stale"); one written or read there too (a value
carried into the item) is counted as a "merge" (both paths define it; same value or not, this
cannot tell). gdesc[URn] reads URn..URn+3.

    cuobjdump -sass kernel.o > k.sass
    python benchmarks/experiments/sass_loop_skip_check.py k.sass [more.sass ...]
    PYTHONPATH=/tmp/t36:. python benchmarks/experiments/sass_loop_skip_check.py --build [name part]
        (offline, Triton 3.6 first on PYTHONPATH: every kernel gluon_dispatch launches, then the
        causal two-Q-buffer head-dim-256 forms; exit status = kernels with stale reads)
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

INS = re.compile(r"\s*/\*([0-9a-f]{4,6})\*/\s+(.*?)\s*;")
BRA = re.compile(r"^(@!?U?P\w+\s+)?BRA(?:\.\w+)*\s+(?:\w+\s+)?0x([0-9a-f]+)")
UREG = re.compile(r"\bUR(\d+)\b")
GDESC = re.compile(r"gdesc\[UR(\d+)\]")


def parse(text: str) -> list[tuple[int, str]]:
    return [(int(m.group(1), 16), m.group(2)) for m in map(INS.match, text.splitlines()) if m]


def _writes(t: str) -> set[int]:
    """Uniform registers an instruction writes: the first operand of a uniform-datapath
    instruction (U*, R2UR, S2UR, ULDC, ...) when it is a UR."""
    body = re.sub(r"^@!?U?P\w+\s+", "", t)
    op, _, rest = body.partition(" ")
    first = rest.split(",")[0].strip()
    m = re.fullmatch(r"UR(\d+)", first)
    if not m or not (op.startswith("U") or op.startswith(("R2UR", "S2UR", "LDCU"))):
        return set()
    w = {int(m.group(1))}
    if ".64" in op or op.startswith("ULDC.64") or op.startswith("UIMAD.WIDE"):
        w.add(int(m.group(1)) + 1)
    return w


def _reads(t: str) -> set[int]:
    body = re.sub(r"^@!?U?P\w+\s+", "", t)
    op, _, rest = body.partition(" ")
    ops = [o.strip() for o in rest.split(",")]
    srcs = ops[1:] if _writes(t) else ops
    r = set()
    for o in srcs:
        g = GDESC.search(o)
        if g:
            r |= {int(g.group(1)) + i for i in range(4)}
        else:
            r |= {int(x) for x in UREG.findall(o)}
    return r


def check(ins: list[tuple[int, str]]) -> list[dict]:
    idx = {a: i for i, (a, _) in enumerate(ins)}
    branches = []
    for i, (a, t) in enumerate(ins):
        m = BRA.match(t)
        if m and int(m.group(2), 16) in idx:
            branches.append((i, idx[int(m.group(2), 16)], bool(m.group(1))))
    # the mbarrier waits' retry blocks sit after the kernel's last EXIT
    cold = max((k for k, (_, t) in enumerate(ins) if t.startswith("EXIT")), default=len(ins))
    found = []
    for i, j, cond in branches:
        if not cond or j <= i + 1 or j > cold:
            continue
        # the span ends with a loop: a backward branch among its last instructions jumps to
        # inside it (`@!P BRA T; preheader; L: ...; @P BRA L; T:`), conditionally (the far
        # retry blocks of the mbarrier waits end in an unconditional branch back)
        if not any(j - 4 <= s < j and i < d < s and c for s, d, c in branches):
            continue
        span_writes = set()
        for _, t in ins[i + 1:j]:
            span_writes |= _writes(t)
        # the enclosing loop's head: the target of the first backward branch after j that
        # jumps to before i
        head = next((d for s, d, _ in branches if s > j and d <= i), None)
        before = set()          # written, or read (live into the item: carried), before it
        if head is not None:
            for _, t in ins[head:i]:
                before |= _writes(t) | _reads(t)
        # the code after the skip: up to the next backward branch out of it (or 4000 lines)
        end = next((s for s, d, _ in branches if s >= j and d < j), min(len(ins), j + 4000))
        written = set()
        for k in range(j, end):
            a, t = ins[k]
            bad = (_reads(t) - written) & span_writes
            for r in sorted(bad):
                found.append(dict(branch=hex(ins[i][0]), target=hex(ins[j][0]), at=hex(a),
                                  reg=f"UR{r}", kind="merge" if r in before else "stale",
                                  qgmma="QGMMA" in t or "HGMMA" in t, ins=t))
            written |= _writes(t)
    return found


def report(name: str, text: str) -> int:
    found = check(parse(text))
    stale = [f for f in found if f["kind"] == "stale"]
    print(f"{name}: {len(stale)} stale reads after a loop skip"
          f" ({sum(f['qgmma'] for f in stale)} by a tensor-core instruction), "
          f"{len(found) - len(stale)} merges")
    seen = set()
    for f in stale:
        key = (f["branch"], f["reg"])
        if key not in seen:
            seen.add(key)
            print(f"  skip {f['branch']} -> {f['target']}: {f['reg']} read at {f['at']} "
                  f"({f['ins']}) written only in the skipped loop")
    return len(stale)


def dispatched_kernels() -> dict:
    """name -> gluon_compile.build arguments: every kernel gluon_dispatch launches (head dims,
    causal alignments, the LSE and two-Q-term forms at head dim 128), then the causal
    two-Q-buffer head-dim-256 forms (not dispatched; miscompiled in session 24, clean since
    session 25's masked-tile Q view)."""
    from fp8attn.attention import gluon_dispatch as gd
    from fp8attn.attention.gluon_fwd import VARIANTS
    k = {}
    for c in (0, 1, 2):
        tag = ("nc", "tl", "br")[c]
        if c == 0:
            for name in ("VARIANT", "VARIANT_LONG"):
                k[f"d128_{name}"] = dict(head_dim=128, causal=0, **getattr(gd, name))
            k["d128_VARIANT_lse"] = dict(head_dim=128, causal=0, lse=True, **gd.VARIANT)
            k["d128_VARIANT_q2terms"] = dict(head_dim=128, causal=0, q_terms=2, **gd.VARIANT)
            k["d64_VARIANT_D64"] = dict(head_dim=64, causal=0, **gd.VARIANT_D64)
            for name in ("VARIANT_D256", "VARIANT_D256_SHORT"):
                k[f"d256_{name}"] = dict(head_dim=256, causal=0, **getattr(gd, name))
            k["d256_VARIANT_D256_N64"] = dict(head_dim=256, causal=0, kv_block=64, block_n=64,
                                              **gd.VARIANT_D256_N64)
            continue
        for name in ("CAUSAL_VARIANT", "CAUSAL_PERSISTENT_VARIANT"):
            k[f"d128_{name}_{tag}"] = dict(head_dim=128, causal=c, **getattr(gd, name))
        k[f"d128_CAUSAL_PERSISTENT_VARIANT_lse_{tag}"] = dict(
            head_dim=128, causal=c, lse=True, **gd.CAUSAL_PERSISTENT_VARIANT)
        for name in ("VARIANT_D64", "VARIANT_D64_CAUSAL_ONE_BLOCK"):
            k[f"d64_{name}_{tag}"] = dict(head_dim=64, causal=c, **getattr(gd, name))
        for name in ("VARIANT_D256_CAUSAL", "VARIANT_D256_CAUSAL_ONE_BLOCK"):
            k[f"d256_{name}_{tag}"] = dict(head_dim=256, causal=c, **getattr(gd, name))
        k[f"d256_VARIANT_D256_N64_CAUSAL_{tag}"] = dict(head_dim=256, causal=c, kv_block=64,
                                                        block_n=64, **gd.VARIANT_D256_N64_CAUSAL)
    k["q2_d256_causal_tl"] = dict(head_dim=256, causal=1, **dict(
        gd.VARIANT_D256_CAUSAL, q_bufs=2))
    k["q2_d256_eighths_persist_tl"] = dict(head_dim=256, causal=1, **dict(
        VARIANTS["pingpong_n128_s2_eighths_noturn_ts2_persist"], q_bufs=2))
    return k


def kernel_sass(tag: str, **build_args) -> str:
    """Offline (Triton 3.6): gluon_compile.build(**build_args), assembled with ptxas into
    /tmp/gluon_attn_<tag>.o, and its SASS (cuobjdump)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gluon_compile as gc
    r = gc.report(tag, gc.build(**build_args))
    if r["ptxas_rc"]:
        raise RuntimeError(f"ptxas failed on {tag} (rc {r['ptxas_rc']}): {r['ptxas_err']}")
    out = subprocess.run([gc.CUOBJDUMP, "-sass", f"/tmp/gluon_attn_{tag}.o"],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"cuobjdump failed on /tmp/gluon_attn_{tag}.o (rc {out.returncode}): "
                           f"{out.stderr.strip()[-400:]}")
    return out.stdout


def build_and_check(only: str = "") -> int:
    """Offline (Triton 3.6 on PYTHONPATH): build each kernel, read its SASS, report; returns
    the number of kernels with stale reads."""
    bad = 0
    for name, kw in dispatched_kernels().items():
        if only and only not in name:
            continue
        bad += report(name, kernel_sass("skipcheck_" + name, **kw)) > 0
    return bad


if __name__ == "__main__":
    if "--build" in sys.argv:
        rest = [a for a in sys.argv[1:] if a != "--build"]
        sys.exit(build_and_check(rest[0] if rest else ""))
    else:
        for path in sys.argv[1:]:
            report(path, open(path).read())
