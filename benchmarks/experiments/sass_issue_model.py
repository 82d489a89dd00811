"""In-order, single-warp issue model of the softmax phase in a kernel's SASS (no GPU needed).

    python benchmarks/experiments/sass_issue_model.py /tmp/gluon_attn_<name>.sass

(SASS: `cuobjdump -sass` of the .o that gluon_compile.py's report leaves in /tmp.) For every
region from a "S ready" wait (WARPGROUP.DEPBAR.LE gsb0, 0x0) to the next wgmma with a register
A operand (P @ V), 150-600 instructions long, it prints the instruction and MUFU counts and the
cycles one warp would take to issue them alone. The model: instructions issue in order,
one a cycle at most, each once its source registers are ready (LATENCY, rough Hopper figures);
MUFU at most one a warp every MUFU_INTERVAL cycles (16 exp2 a clock an SM, four schedulers).
No other warp competes. The gap to a traced phase (gluon_trace_tiles.py) is contention
(session 19: ~527 modelled against 714 traced at hdim 256, 64-key tiles).
"""
from __future__ import annotations

import re
import sys

LATENCY = {"FFMA": 4, "FADD": 4, "FMUL": 4, "FMNMX": 4, "FSEL": 4, "IMAD": 4, "IADD3": 4,
           "MOV": 2, "F2FP": 5, "MUFU": 18, "SHFL": 26, "LDL": 32, "R2UR": 10, "S2R": 20,
           "LEA": 4, "LOP3": 4, "SEL": 4, "PRMT": 4, "SHF": 4}
MUFU_INTERVAL = 8
NO_DEST = ("STL", "BRA", "SYNCS", "WARPGROUP", "QGMMA", "BAR", "ISETP", "FSETP")


def issue_cycles(instructions: list[str]) -> int:
    """Cycle at which the last instruction issues (see the module docstring)."""
    ready = {}
    t = 0
    last_mufu = -MUFU_INTERVAL
    for text in instructions:
        text = re.sub(r"^@!?U?P\w+\s+", "", text)      # the predicate guard
        base = text.split()[0].split(".")[0]
        regs = re.findall(r"\bU?R\d+\b", text)
        if base in NO_DEST:
            dst, srcs = None, regs
        else:
            dst, srcs = (regs[0], regs[1:]) if regs else (None, [])
        t = max([t + 1] + [ready.get(r, 0) for r in srcs])
        if base == "MUFU":
            t = max(t, last_mufu + MUFU_INTERVAL)
            last_mufu = t
        if dst:
            ready[dst] = t + LATENCY.get(base, 4)
    return t


def sass_instructions(sass: str) -> list[tuple[int, str]]:
    """(address, text without the ';') of every instruction in `cuobjdump -sass` output (also
    gluon_compile.py's parser)."""
    ins = []
    for line in sass.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2).strip()))
    return ins


def innermost_wgmma_loops(sass: str, min_wgmmas: int = 6,
                          max_len: int = 1200) -> list[list[str]]:
    """The instruction texts of each innermost loop of `sass` (cuobjdump -sass text) that holds
    at least min_wgmmas QGMMA instructions in at most max_len instructions: the tile loops of an
    attention kernel (an item loop around a tile loop is not innermost). A loop is a predicated
    backward branch; the unconditional backward branches are the mbarrier wait stubs' retries
    into the code."""
    ins = sass_instructions(sass)
    at = {a: i for i, (a, _) in enumerate(ins)}
    loops = []
    for i, (a, text) in enumerate(ins):
        m = re.match(r"@!?U?P\w+\s+BRA .*?(0x[0-9a-f]+)", text)
        if m and int(m.group(1), 16) < a and int(m.group(1), 16) in at:
            lo = at[int(m.group(1), 16)]
            if i - lo < max_len and sum("QGMMA" in t for _, t in ins[lo:i + 1]) >= min_wgmmas:
                loops.append((lo, i))
    return [[t for _, t in ins[lo:hi + 1]] for lo, hi in loops
            if not any((lo, hi) != (l2, h2) and lo <= l2 and h2 <= hi for l2, h2 in loops)]


def opcode_counts(body: list[str]) -> dict[str, int]:
    """Instructions of `body` by opcode without modifiers or predicate guard (MUFU.EX2 and
    MUFU.RCP both count as MUFU), most frequent first."""
    counts: dict[str, int] = {}
    for text in body:
        op = re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]
        counts[op] = counts.get(op, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def softmax_regions(sass: str) -> list[list[str]]:
    ins = [text for _, text in sass_instructions(sass)]
    regions = []
    for i, text in enumerate(ins):
        if text.startswith("WARPGROUP.DEPBAR.LE gsb0, 0x0"):
            for k in range(i + 1, min(i + 700, len(ins))):
                if re.match(r"QGMMA\.\S+ R\d+, R\d+, gdesc", ins[k]):
                    if 150 < k - i - 1 < 600:
                        regions.append(ins[i + 1:k])
                    break
    return regions


def main(path: str) -> None:
    with open(path) as f:
        for seg in softmax_regions(f.read()):
            print(f"{len(seg)} instructions, {sum('MUFU' in s for s in seg)} MUFU: "
                  f"{issue_cycles(seg)} cycles (one warp, in order)")


if __name__ == "__main__":
    main(sys.argv[1])
