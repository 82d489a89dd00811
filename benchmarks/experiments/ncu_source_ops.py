"""Per-kernel instruction mix and warp-stall reasons from an Nsight Compute source export.

    ncu --import attn.ncu-rep --page source --print-source sass --csv > src.csv
    python benchmarks/experiments/ncu_source_ops.py src.csv

(the export of ncu_attn.py's profile). For each profiled kernel: warp-level instructions executed
by opcode (the first dot-separated part of the SASS mnemonic) and the share of stall samples by
reason.
"""
import collections
import csv
import sys


def kernels(path):
    out = []
    for r in csv.reader(open(path)):
        if r and r[0] == "Kernel Name":
            out.append(dict(name=r[1], header=None, lines=[]))
        elif r and r[0] == "Address" and out:
            out[-1]["header"] = r
        elif out and out[-1]["header"] and len(r) == len(out[-1]["header"]):
            out[-1]["lines"].append(r)
    return out


def summary(k):
    ix = {n: i for i, n in enumerate(k["header"])}
    stall_cols = [n for n in k["header"] if n.startswith("stall_") and "Not Issued" not in n]
    ops, stalls = collections.Counter(), collections.Counter()
    samples = 0
    for r in k["lines"]:
        words = r[ix["Source"]].split()
        words = words[1:] if words and words[0].startswith("@") else words
        ops[words[0].split(".")[0] if words else "?"] += int(r[ix["Instructions Executed"]] or 0)
        for c in stall_cols:
            stalls[c[len("stall_"):]] += int(r[ix[c]] or 0)
        samples += int(r[ix["Warp Stall Sampling (All Samples)"]] or 0)
    return ops, stalls, samples


if __name__ == "__main__":
    for k in kernels(sys.argv[1]):
        ops, stalls, samples = summary(k)
        print(f"== {k['name'][:80]}: {sum(ops.values()) / 1e6:.1f}M warp instructions")
        print("  ops:", ", ".join(f"{o} {n / 1e6:.1f}M" for o, n in ops.most_common(24)))
        print("  stalls:", ", ".join(f"{s} {n / max(samples, 1) * 100:.1f}%"
                                     for s, n in stalls.most_common(10)))
