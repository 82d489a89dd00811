"""Would rotating V (a seeded Hadamard along the head dim before quantising, undone on the
output: O = (P (V H)) H^T) cut V's share of the FP8 error, as the rotation does for Q and K?

CPU, FA3's outlier distribution (error_budget.py's setting and helpers: block-128 e4m3 scales,
P cast after the FA3 shift), float64 oracle. Prints, per seed, the RMSE with only V in FP8 and
with everything in FP8, V plain and V rotated.

    PYTHONPATH=. python benchmarks/experiments/probe_v_rotation.py [--seeds 0,1]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from error_budget import attend, fp8  # noqa: E402

from fp8attn.analysis.inputs import fa3_outliers  # noqa: E402
from fp8attn.analysis.metrics import rmse  # noqa: E402
from fp8attn.hadamard.reference import hadamard_signs, random_hadamard_reference  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args()
    d = 128
    scale = d ** -0.5
    signs_qk, signs_v = hadamard_signs(d, 0), hadamard_signs(d, 7)
    # the rotation as a matrix: random_hadamard_reference(v) == v @ h (rows of h: the basis
    # vectors' images); h is orthogonal, so h^T undoes it
    h = random_hadamard_reference(torch.eye(d), signs_v).double()
    for seed in (int(s) for s in args.seeds.split(",")):
        q, k, v = fa3_outliers(1, 4, 2048, d, seed=seed)
        ref = torch.softmax((q.double() @ k.double().transpose(-1, -2)) * scale, -1) @ v.double()
        qr, kr = (random_hadamard_reference(x, signs_qk).float() for x in (q, k))
        vr = random_hadamard_reference(v, signs_v).float()
        assert torch.allclose(v.double() @ h, vr.double(), atol=1e-4)
        q8, k8, v8, vr8 = fp8(qr), fp8(kr), fp8(v), fp8(vr)
        only_v = rmse(attend(qr, kr, v8, scale, False), ref)
        only_v_rot = rmse(attend(qr, kr, vr8, scale, False).double() @ h.T, ref)
        every = rmse(attend(q8, k8, v8, scale, True), ref)
        every_rot = rmse(attend(q8, k8, vr8, scale, True).double() @ h.T, ref)
        print(f"seed {seed}: only V in FP8 {only_v:.3e} (V rotated {only_v_rot:.3e}); "
              f"all in FP8 {every:.3e} (V rotated {every_rot:.3e})")


if __name__ == "__main__":
    main()
