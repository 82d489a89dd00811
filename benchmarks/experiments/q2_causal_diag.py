"""Where the persistent head-dim-256 kernel with two Q buffers (q_bufs=2) departs from the tl
kernel's bits on causal shapes (sessions 20 and 23: the causal shapes with several work items
per CTA). Per differing (batch, head, 128-row block): its work item, the CTA that ran it, the
item's position in that CTA's run (_causal_schedule) and the item before it, which 64-row
warpgroup half and which head-dim quarters differ, the share of differing elements and the
largest difference. One JSON line per shape and variant (the one-buffer form beside it).
Since session 23 gluon_fwd._launch_plan refuses q_bufs=2 above head dim 128: lift that check to
run the second variant (e.g. while looking for the cause).

    python benchmarks/experiments/q2_causal_diag.py
"""
from __future__ import annotations

import json

import torch

from fp8attn.attention import gluon_fwd
from fp8attn.attention import triton_fwd
from fp8attn import Recipe
from fp8attn.quant import quantize_qkv

TL = {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 2, "SPLIT": 2,
      "REVERSE": False}
SHAPES = [(1, 4, 2, 4500, 4200, "top_left"), (2, 24, 24, 1000, 1000, "top_left"),
          (2, 24, 24, 1000, 1000, "bottom_right"), (1, 8, 8, 2048, 2048, "top_left")]
VARIANTS = [("pingpong_n128_s2_eighths_noturn_ts2_persist", 1),
            ("pingpong_n128_s2_eighths_noturn_ts2_persist", 2)]    # (gluon_fwd.VARIANTS, q_bufs)


def quantized(b, hq, hkv, sq, sk, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(b, hq, sq, 256, generator=g, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(b, hkv, sk, 256, generator=g, device="cuda", dtype=torch.bfloat16)
            for _ in range(2))
    return quantize_qkv(q, k, v, Recipe(), v_key_order="mma")


def tl_ref(q8, k8, v8, causal):
    return triton_fwd.attention_fwd_fp8(
        q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale, q_block=q8.block_size,
        k_block=k8.block_size, v_block=v8.block_size, softmax_scale=256 ** -0.5, causal=causal,
        return_lse=False, config=TL, v_key_order=v8.key_order)


def item_of(b, h, blk, n_m, n_hz, H, section):
    """_work_item's causal order inverted: (off_hz, pid_m) -> w."""
    hz = b * H + h
    sec = hz // section
    heads = min(section, n_hz - sec * section)
    r = (n_m - 1 - blk) * heads + (hz - sec * section)
    return sec * n_m * section + r


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    for b, hq, hkv, sq, sk, causal in SHAPES:
        q8, k8, v8 = quantized(b, hq, hkv, sq, sk, seed=sq + 13 * sk)
        ref = tl_ref(q8, k8, v8, causal)
        n_m = -(-sq // 128)
        n_hz = b * hq
        section = gluon_fwd._section_heads(sk, 256)
        grid = min(n_m * n_hz, gluon_fwd._sm_count(q8.data.device))
        mode = {"top_left": 1, "bottom_right": 2}[causal]
        table = gluon_fwd._causal_schedule(n_m, n_hz, section, grid, sq, sk, 128, 128, mode,
                                           "cpu").tolist()
        offs, flat = table[:grid + 1], table[grid + 1:]
        where = {}
        for c in range(grid):
            for pos, w in enumerate(flat[offs[c]:offs[c + 1]]):
                where[w] = (c, pos, offs[c + 1] - offs[c])
        for name, q_bufs in VARIANTS:
            rec = dict(shape=[b, hq, hkv, sq, sk, causal], variant=name, q_bufs=q_bufs,
                       grid=grid, items=n_m * n_hz)
            try:
                got = gluon_fwd.gluon_attention_fwd(
                    q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                    q8.block_size, k8.block_size, v8.block_size, 256 ** -0.5, causal=causal,
                    v_key_order="mma", **dict(gluon_fwd.VARIANTS[name], q_bufs=q_bufs))
                torch.cuda.synchronize()
            except Exception as e:     # noqa: BLE001 (an illegal access ends the process)
                rec["error"] = repr(e)[:300]
                print(json.dumps(rec), flush=True)
                return
            diff = got.float() != ref.float()
            rec["nan"] = bool(got.isnan().any())
            rec["equal"] = bool(not diff.any())
            bad = []
            for bb in range(b):
                for h in range(hq):
                    for blk in range(n_m):
                        rows = slice(blk * 128, min(sq, blk * 128 + 128))
                        d = diff[bb, h, rows]
                        if not d.any():
                            continue
                        w = item_of(bb, h, blk, n_m, n_hz, hq, section)
                        c, pos, n_items = where[w]
                        halves = [int(d[i * 64:(i + 1) * 64].any()) for i in range(2)]
                        quarters = [int(d[:, i * 64:(i + 1) * 64].any()) for i in range(4)]
                        prev = flat[offs[c] + pos - 1] if pos else None
                        bad.append(dict(b=bb, h=h, blk=blk, w=w, cta=c, pos=pos,
                                        n_items=n_items, prev=prev, halves=halves,
                                        quarters=quarters, frac=round(float(d.float().mean()), 3),
                                        maxdiff=float((got[bb, h, rows].float()
                                                       - ref[bb, h, rows].float()).abs().max())))
            rec["n_bad_blocks"] = len(bad)
            rec["bad_pos_hist"] = {}
            for x in bad:
                rec["bad_pos_hist"][x["pos"]] = rec["bad_pos_hist"].get(x["pos"], 0) + 1
            multi = sum(1 for c in range(grid) if offs[c + 1] - offs[c] > 1)
            rec["ctas_with_several_items"] = multi
            rec["bad"] = bad[:12]
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
