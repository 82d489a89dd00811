"""Where the persistent head-dim-256 kernel with two Q buffers (q_bufs=2) departs from the tl
kernel's bits on causal shapes (sessions 20 and 23: the causal shapes with several work items
per CTA). Per differing (batch, head, 128-row block): its work item, the CTA that ran it, the
item's position in that CTA's run (_causal_schedule) and the item before it, which 64-row
warpgroup half and which head-dim quarters differ, the share of differing elements and the
largest difference. One JSON line per shape and variant (the one-buffer form beside it).
(Session 25: the cause fixed in the kernel, gluon_fwd._consumer_split's Q_BUFS, and the
package's refusal of these calls gone; the script now checks the fixed form.)

Session 24 adds, per differing block, what its wrong rows are: the item before it's output rows
(a shared output tile stored stale), another block's right rows (a Q / K / V tile of another
item), or zeros; and two probe forms: plain stores (tma_store=0: no shared output tiles) and the
dispatched form (item_licm, VARIANT_D256_CAUSAL's) with two Q buffers; and whether the wrong rows
used the previous item's Q rows or K / V tiles (they did not). `--non-causal` checks the
two-Q-buffer form's bits on non-causal shapes instead (the dispatch candidate); `--only-q2` runs
the two-buffer form alone. The cause, found with q2_sanitize.py: a ptxas miscompile
(sass_loop_skip_check.py).

    python benchmarks/experiments/q2_causal_diag.py [--non-causal]
"""
from __future__ import annotations

import json
import sys
import types

import torch

from fp8attn.attention import gluon_fwd
from fp8attn.attention import triton_fwd
from fp8attn import Recipe
from fp8attn.quant import quantize_qkv
from fp8attn.quant.key_order import padded_view

TL = {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 2, "SPLIT": 2,
      "REVERSE": False}
SHAPES = [(1, 4, 2, 4500, 4200, "top_left"), (2, 24, 24, 1000, 1000, "top_left"),
          (2, 24, 24, 1000, 1000, "bottom_right"), (1, 8, 8, 2048, 2048, "top_left")]
E = "pingpong_n128_s2_eighths_noturn_ts2_persist"
P = "pingpong_n128_s2_pipe_noturn_ts2_persist_licm"
# (label, gluon_fwd.VARIANTS name, overrides)
VARIANTS = [("q1", E, {}), ("q2", E, dict(q_bufs=2)),
            ("q2_plain_store", E, dict(q_bufs=2, tma_store=0)),
            ("q2_licm", E + "_licm", dict(q_bufs=2))]
if "--only-q2" in sys.argv:
    VARIANTS = VARIANTS[1:2]
NC_SHAPES = [(2, 24, 24, 1000, 1000), (1, 4, 2, 4500, 4200), (4, 8, 8, 1024, 1024),
             (2, 8, 4, 2048, 2048), (1, 8, 8, 1100, 3000)]
NC_VARIANTS = [("q2_pipe_licm", P, dict(q_bufs=2)), ("q1_pipe_licm", P, {})]


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


def run(q8, k8, v8, causal, name, over):
    return gluon_fwd.gluon_attention_fwd(
        q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale, q8.block_size,
        k8.block_size, v8.block_size, 256 ** -0.5, causal=causal, v_key_order="mma",
        **dict(gluon_fwd.VARIANTS[name], **over))


def what_it_is(bad_rows, prev_rows, ref_halves):
    """Where a wrong (64, 256) block of output rows comes from: the previous item's rows in the
    same place, another block's right rows (index into ref_halves), zeros, or unknown."""
    if prev_rows is not None and torch.equal(bad_rows, prev_rows):
        return "prev_item_rows"
    if not bad_rows.any():
        return "zeros"
    hit = (ref_halves[:, 0] == bad_rows[0]).all(-1).nonzero().flatten().tolist()
    for i in hit:
        if torch.equal(ref_halves[i], bad_rows):
            return f"ref_half_{i}"
    return "unknown"


def stale_q_test(q8, k8, v8, causal, bb, h, blk, half, prev_block, bad_rows):
    """Are the wrong rows the tl kernel's output for these rows computed with the previous
    item's Q rows (its data, this block's descale: a stale Q buffer)?"""
    pb, ph, pblk = prev_block
    data = q8.data.clone()
    r = slice(blk * 128 + half * 64, blk * 128 + half * 64 + 64)
    pr = slice(pblk * 128 + half * 64, pblk * 128 + half * 64 + 64)
    data[bb, h, r] = q8.data[pb, ph, pr]
    fake = types.SimpleNamespace(data=data, descale=q8.descale, block_size=q8.block_size)
    out = tl_ref(fake, k8, v8, causal)[bb, h, r]
    if torch.equal(out, bad_rows):
        return "stale_q_prev_item"
    return f"not_stale_q(maxdiff {float((out.float() - bad_rows.float()).abs().max()):.3g})"


def stale_kv_test(q8, k8, v8, causal, bb, h, blk, half, prev_block, bad_rows, hq, hkv):
    """Are the wrong rows the tl kernel's output for these rows with this item's (one) K / V
    tile replaced by one of the previous item's last two tiles (the ring's two slots: a K or
    V tile read before the producer's load of it landed)? Data swapped, descales kept."""
    pb, ph, pblk = prev_block
    sq, sk = q8.data.shape[2], k8.data.shape[2]
    off = sk - sq if causal == "bottom_right" else 0
    kv_end = max(min(sk, min((pblk + 1) * 128, sq) - 1 + off + 1), 0)
    n_prev = -(-kv_end // 128)
    kvh, pkvh = h // (hq // hkv), ph // (hq // hkv)
    r = slice(blk * 128 + half * 64, blk * 128 + half * 64 + 64)
    found = []
    for t in (n_prev - 2, n_prev - 1):
        if t < 0:
            continue
        src = slice(t * 128, min(sk, t * 128 + 128))
        n = src.stop - src.start
        for which in ("k", "v", "kv"):
            kd = k8.data.clone()
            vd = padded_view(v8.data).clone()[..., :sk]     # keeps the 16-key padded rows
            if "k" in which:
                kd[bb, kvh, :n] = k8.data[pb, pkvh, src]
            if "v" in which:
                vd[bb, kvh, :, :n] = v8.data[pb, pkvh, :, src]
            fk = types.SimpleNamespace(data=kd, descale=k8.descale, block_size=k8.block_size)
            fv = types.SimpleNamespace(data=vd, descale=v8.descale, block_size=v8.block_size,
                                       key_order=v8.key_order)
            if torch.equal(tl_ref(q8, fk, fv, causal)[bb, h, r], bad_rows):
                found.append(f"stale_{which}_prev_tile_{t}_of_{n_prev}")
    return ",".join(found) or "not_stale_kv"


def non_causal():
    for b, hq, hkv, sq, sk in NC_SHAPES:
        q8, k8, v8 = quantized(b, hq, hkv, sq, sk, seed=sq + 13 * sk)
        ref = tl_ref(q8, k8, v8, None)
        for label, name, over in NC_VARIANTS:
            got = run(q8, k8, v8, None, name, over)
            torch.cuda.synchronize()
            print(json.dumps(dict(shape=[b, hq, hkv, sq, sk, None], variant=label,
                                  equal=bool(torch.equal(got, ref)),
                                  n_diff=int((got != ref).sum()))), flush=True)


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    if "--non-causal" in sys.argv:
        non_causal()
        return
    for b, hq, hkv, sq, sk, causal in SHAPES:
        q8, k8, v8 = quantized(b, hq, hkv, sq, sk, seed=sq + 13 * sk)
        ref = tl_ref(q8, k8, v8, causal)
        n_m = -(-sq // 128)
        n_hz = b * hq
        # every (b, h, block, half) of the right output as (n, 64, 256) (tails padded with NaN)
        pad = torch.full((b, hq, n_m * 128, 256), float("nan"), dtype=ref.dtype,
                         device=ref.device)
        pad[:, :, :sq] = ref
        ref_halves = pad.reshape(-1, 64, 256)
        section = gluon_fwd._section_heads(sk, 256)
        grid = min(n_m * n_hz, gluon_fwd._sm_count(q8.data.device))
        mode = {"top_left": 1, "bottom_right": 2}[causal]
        table = gluon_fwd._causal_schedule(n_m, n_hz, section, grid, sq, sk, 128, 128, mode,
                                           "cpu").tolist()
        offs, flat = table[:grid + 1], table[grid + 1:]
        where, block_of = {}, {}
        for bb in range(b):
            for h in range(hq):
                for blk in range(n_m):
                    block_of[item_of(bb, h, blk, n_m, n_hz, hq, section)] = (bb, h, blk)
        for c in range(grid):
            for pos, w in enumerate(flat[offs[c]:offs[c + 1]]):
                where[w] = (c, pos, offs[c + 1] - offs[c])
        for label, name, over in VARIANTS:
            rec = dict(shape=[b, hq, hkv, sq, sk, causal], variant=label, grid=grid,
                       items=n_m * n_hz)
            try:
                got = run(q8, k8, v8, causal, name, over)
                torch.cuda.synchronize()
            except Exception as e:     # noqa: BLE001 (an illegal access ends the process)
                rec["error"] = repr(e)[:300]
                print(json.dumps(rec), flush=True)
                return
            diff = got != ref
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
                        kinds = []
                        for i in range(2):
                            if not halves[i] or blk * 128 + i * 64 + 64 > sq:
                                continue
                            r = slice(blk * 128 + i * 64, blk * 128 + i * 64 + 64)
                            prev_rows = None
                            if prev is not None:
                                pb, ph, pblk = block_of[prev]
                                pr = slice(pblk * 128 + i * 64, pblk * 128 + i * 64 + 64)
                                if pr.stop <= sq:
                                    prev_rows = got[pb, ph, pr]
                            kind = what_it_is(got[bb, h, r], prev_rows, ref_halves)
                            if kind.startswith("ref_half_"):       # -> (b, h, block, half)
                                j = int(kind[9:])
                                kind = (f"block_{j // (hq * n_m * 2)}_{j // (n_m * 2) % hq}_"
                                        f"{j // 2 % n_m}_{j % 2}")
                            if kind == "unknown" and prev is not None and len(bad) < 2:
                                kind += "/" + stale_q_test(q8, k8, v8, causal, bb, h, blk, i,
                                                           block_of[prev], got[bb, h, r])
                                kind += "/" + stale_kv_test(q8, k8, v8, causal, bb, h, blk, i,
                                                            block_of[prev], got[bb, h, r],
                                                            hq, hkv)
                            kinds.append(kind)
                        bad.append(dict(b=bb, h=h, blk=blk, w=w, cta=c, pos=pos,
                                        n_items=n_items, prev=prev,
                                        prev_block=block_of.get(prev), halves=halves,
                                        quarters=quarters, kinds=kinds,
                                        frac=round(float(d.float().mean()), 3),
                                        maxdiff=float((got[bb, h, rows].float()
                                                       - ref[bb, h, rows].float()).abs().max())))
            rec["n_bad_blocks"] = len(bad)
            rec["bad_pos_hist"] = {}
            rec["kinds_hist"] = {}
            for x in bad:
                rec["bad_pos_hist"][x["pos"]] = rec["bad_pos_hist"].get(x["pos"], 0) + 1
                for k in x["kinds"]:
                    k = k.split("(")[0] if not k.startswith("block_") else "another_block"
                    rec["kinds_hist"][k] = rec["kinds_hist"].get(k, 0) + 1
            multi = sum(1 for c in range(grid) if offs[c + 1] - offs[c] > 1)
            rec["ctas_with_several_items"] = multi
            rec["bad"] = bad[:6]
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
