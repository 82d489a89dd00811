"""Which attention_fwd_fp8 calls go to the Gluon kernel (attention/gluon_fwd.py), and the launch.

The Gluon kernel has FA3's structure (a TMA producer warp; two consumer warpgroups in ping-pong,
one's softmax under the other's GEMMs; Q K^T of tile j issued with P @ V of tile j-1; for
non-causal calls the loop unrolled by two; persistent CTAs (for causal calls since session 17
at every length, up to 8k keys before), storing the output with TMA (non-causal calls up to
8k keys; causal ones since session 18 through one full-width store, with two Q buffers)). On the
calls below it gives the same bits as the tl kernel with 64-row blocks and the same key tiles
(GPU tests: tests/test_gluon_dispatch.py, bottom-right causal included since session 13) and
is faster from 1k keys at head dim 128, 512 at 256 (128-key tiles; 64-key ones from 4k) and
1.5k at 64 (causal 2k) (H200, Triton 3.6, benchmarks/RESULTS.md "Session 5" to "Session 28").
The calls it
takes:
    CUDA sm_90, Triton 3.6 (Gluon's API moves between releases), not the interpreter;
    e4m3 Q / K / V, bf16 / fp16 / fp32 output, two-level accumulation ("tile");
    varlen batches (session 35) at head dim 128 (80 / 96 / 112 since session 37) with K / V
    in padded rows (each sequence starting on a KV tile: ops._kv_align, and the FP8-input
    call's packing), one Q term,
    causal (bottom-right per sequence) or not, LSE or not: VARIANT_VARLEN*, items over every
    sequence's query tiles (gluon_fwd._varlen_item);
    head dim 128: causal or not (bottom-right masks with seqlen_k >= seqlen_q), LSE or not,
    one or two Q terms (Recipe.q_terms); the same for head dims 80 / 96 / 112 on the 128
    kernel since session 29 (kernel_head_dim);
    head dim 256: causal or not (causal since session 13), without the LSE, one Q term (the
    kernel's four-part P @ V loop has neither);
    head dim 64 (session 14): causal or not, LSE or not, one Q term, on three consumer
    warpgroups (VARIANT_D64; since session 28 causal or not on persistent CTAs with two Q
    buffers and the TMA store, causal ones with per-warpgroup causal bounds, as causal calls
    since session 16), non-causal from MIN_SEQLEN_K_D64 keys, causal from
    MIN_SEQLEN_K_D64_CAUSAL;
    one K and one V descale per KV tile (tile_keys keys: k_block and v_block multiples of it,
    or per head), q8 / k8 (and Q's second term) contiguous, V^T rows 16-byte aligned (the
    package's quantiser output), and seqlen_k >= MIN_SEQLEN_K (1024 keys; head dim 256:
    512 on 128-key tiles, MIN_SEQLEN_K_D256_N128 (1024 until session 24 non-causal, session
    25 causal), else MIN_SEQLEN_K_D256, 4096;
    head dim 64: MIN_SEQLEN_K_D64, 1536, causal MIN_SEQLEN_K_D64_CAUSAL, 2048). Below it the
    launch's host time would be a large share of the call. Until session 12 the threshold was
    4k keys at every head dim: a Gluon call's host time at 1k (0.16-0.31 ms, H200, session 11)
    was as long as its GPU work. Session 12's launch plan
    and direct compiled-kernel launch (gluon_fwd._launch_plan, fp8attn.kernel_launch) cut the
    kernel-only call's host time at (16, 1024, 16, 128) to 52 us non-causal / 90 us causal
    (against 89 / 150 us through Triton's JIT binding in the same run; H200, 2026-11-30 16:35
    UTC, results/probe_launch_host_s12.json), under the GPU's 195 / 155 us, so 1k calls are
    GPU-bound and the persistent TMA-store kernels take them at hdim 128 (1.13x / ~1.1x the tl
    kernel on the GPU alone, session 11). Head dim 256 kept 4k (its 64-key kernel ran 0.93x the
    tl kernel at 1k) until session 20: the 128-key kernel runs 1.06x it there (causal 1.22x
    since session 22, with the TMA store). Non-causal
    calls run persistent CTAs, causal calls too from two 128-row query blocks a head (up to
    8k keys until session 17), one CTA per query block otherwise (the variants below, with
    the timings that chose them). Causal (session 7, one
    CTA per block): 1.07x / 1.11x / 1.09x the tl kernel at 4k / 8k / 16k keys (H200,
    2026-11-30 11:02 UTC, two timings each, 1.03-1.16x at 16k:
    results/probe_causal_order_s7.jsonl). Two Q terms: 1.45-1.53x the tl kernel's two-term
    path at 4k-16k keys non-causal, 1.27-1.43x causal (11:28 UTC, bench_attention_s7d_q2.md).
Head dim 256 (64-key tiles, no unrolling): 0.93x / 1.09x / 1.14x the tl kernel at 1k / 4k /
16k keys (H200, 2026-11-30 11:12 UTC, results/gluon_check_d256_s7.json); with the P @ V parts
pipelined 0.93x / 1.08x / 1.23x (13:41 UTC, results/gluon_check_d256_pipe_s9.json). Causal:
1.03x / 1.15x top-left at 4k / 16k, 1.05x / 1.20x bottom-right (0.89x top-left at 1k, not
dispatched; 17:45 UTC, results/gluon_check_d256_{top_left,bottom_right}_s13.json). Session 19:
64-key tiles with Q in registers and, causal, no turns (VARIANT_D256_N64*): 1.10x / 1.36x the
tl kernel at 4k / 16k, causal 1.10x / 1.20x (0.76x / 0.84x and 0.68x / 0.76x FA3 FP8); then
128-key tiles (VARIANT_D256*): 1.23x / 1.29x the tl kernel non-causal (0.78x / 0.84x FA3 FP8,
which read 1170 / 1156 in that run). Session 21 (2026-12-01 03:12 UTC bench,
results/bench_attention_s21.md), non-causal without ping-pong turns: 1.31x / 1.35x the tl kernel
at 4k / 16k (0.88x / 0.91x FA3 FP8), causal (eighths, no turns) 1.29x / 1.52x (0.82x / 0.95x).
Session 22: the output through shared memory and TMA (tma_store=2), VARIANT_D256 below.
Session 23: causal calls on persistent CTAs (VARIANT_D256_CAUSAL), +11% / +8% at 1k / 4k keys.
Session 24: non-causal calls up to 1.5k keys on persistent CTAs with two Q buffers
(VARIANT_D256_SHORT), +13% / +5% at 512 / 1k keys. Session 25: causal calls from 512 keys
(VARIANT_D256_CAUSAL), 1.17x / 1.27x the tl kernel at 512 / 768.
Head dim 64 on three consumer warpgroups (session 14): 0.81x / 1.01x / 1.11x the tl kernel at
1k / 4k / 16k keys, non-causal (0.84x / 0.90x FA3 FP8 at 4k / 16k; H200, 2026-11-30 19:02 UTC,
results/gluon_check_d64_tri_s14.json); causal 0.35-0.38x / 0.76-0.80x / 1.07-1.09x
(MIN_SEQLEN_K_D64_CAUSAL). Session 15 (H200, 2026-11-30 20:23-20:29 UTC, top-left, results/
gluon_check_d64_{tri,wgb}_top_left_s15.json): with each warpgroup computing only its own rows'
causal tiles and persistent CTAs (gluon_fwd VARIANTS "tri_ovl_s3_persist_wgb") 0.70x / 0.99x /
1.17x the tl kernel (0.77x / 0.83x / 0.91x FA3 FP8), against 0.39x / 0.80x / 1.09x for
the one-CTA-a-block kernel in the same session: causal calls from MIN_SEQLEN_K_D64_CAUSAL run
it (with two Q buffers and the TMA store since sessions 18 / 22; VARIANT_D64, which non-causal
calls run too since session 28). Session 16 (21:03 UTC, results/gluon_check_d64c_{top_left,
bottom_right}_s16.json), at 4k / 8k / 16k: 0.98x / 1.10x / 1.15x the tl kernel top-left, 0.95x
/ 1.05x / 1.12x bottom-right, so the threshold moved from 16k to 8k keys (to 4k in session 22,
with the TMA store; to 2k in session 28).
Left to the tl kernel although gluon_fwd.py has the code, because it ran slower there on the
H200 (2026-11-30): head dim 64 on two consumer warpgroups (0.77x / 0.88x / 0.90x the tl
kernel at 1k / 4k / 16k, probe_causal_order_s7.jsonl; persistent CTAs 0.86x / 0.95x / 0.96x,
non-causal, results/gluon_check_d64_persist_s8.json; without the ping-pong turns 0.86-0.88x /
0.95x / 0.95-0.96x, results/gluon_check_d64_dual_s10.json), which is what a causal call at head
dim 64 would run.
Everything else runs the tl kernel. On by default; FP8ATTN_GLUON=0 turns it off. If a launch
raises (a compiler or driver the kernel was not checked with), try_launch warns once and the
process goes on with the tl kernel, which gives the same results.

The kernel reads V^T with the keys of every 16-key group permuted (the "mma" key order,
quant/key_order.py), so that P goes from the S accumulator to the P @ V wgmma without moving
between lanes. v_key_order_for tells the callers that quantise V which order to write (the
quantiser does it in the same pass); a call with a natural-order V^T goes to the tl kernel (a
permuting copy first costs more than the Gluon kernel gains), and an "mma"-order one that ends
up on the tl kernel is put back in natural order first.
"""
from __future__ import annotations

import functools
import os
import warnings
from typing import NamedTuple

import torch
import triton

# the variants the package launches (gluon_fwd.VARIANTS). Head dim 128 non-causal:
# "pingpong_ovl_u2_s3_persist" (persistent CTAs, one per SM looping over (query block, head)
# items; the loop unrolled by two): 1.26x / 1.21x the tl kernel at 4k / 16k keys, 0.95x /
# 0.96x FA3 FP8 (H200, 2026-11-30 12:10 UTC, results/gluon_check_persist_s8.json). Causal:
# "pingpong_ovl_s3" (one CTA per query block, loop not unrolled), which ran 667 / 845 TFLOP/s
# top-left at 4k / 16k keys where the unrolled loop ran 642 / 831 and the persistent CTAs
# (longest blocks first) 623 / 743 (12:27 UTC, results/gluon_check_causal_persist_s8.json).
# Head dim 256: "pingpong_n64_s3_pipe" (P @ V in four head-dim quarters, each issued before the
# previous one is added): 605 / 790 / 832 TFLOP/s at 1k / 4k / 16k keys against 593 / 782 / 819
# with the quarters one after the other (same bits; H200, 2026-11-30 13:41 UTC,
# results/gluon_check_d256_pipe_s9.json).
# Session 9: causal persistent CTAs taking their items from a host-built greedy table
# (gluon_fwd._causal_schedule) ran 682 / 768 / 819 TFLOP/s top-left at 4k / 8k / 16k keys
# against pingpong_ovl_s3's 662 / 759 / 845 (bottom-right 677 / - / 801 against 661 / - / 826;
# H200, 2026-11-30 13:22 and 13:36 UTC, results/gluon_check_{top_left,bottom_right,8k}_s9.json):
# causal calls up to 8k keys ran them (all lengths since session 17, below).
# Session 11: the persistent kernels store the output through shared memory with TMA
# (gluon_fwd tma_store): per work item the plain stores and what waited on them took ~2.7
# tile-times, the TMA store ~0.8 (SM clock stamps, benchmarks/experiments/gluon_trace.py).
# But the tile loop then ran ~4% more cycles a tile, for a reason not found (its SASS is the
# same code), so the long non-causal calls keep the plain stores. H200, 2026-11-30 15:38-15:41
# UTC (results/gluon_check_ts2_s11.json): non-causal 617 / 732 / 796 / 852 TFLOP/s at 1k / 2k /
# 4k / 16k keys with plain stores, 688 / 789 / 828 / 842 with one TMA store, 650 / 779 / 817 /
# 834 with two half-width ones (tma_store=2, 16 KB less shared memory); causal top-left 403 /
# 685 / 767 at 1k / 4k / 8k, 474 / 715 / 772 with two half-width stores (15:43 UTC,
# gluon_check_ts2_c_s11.json).
# Session 17: the persistent kernels' item loop lost LLVM's loop-invariant code motion
# (gluon_fwd._consumer_persistent); the non-causal ones, whose unrolled loop had kept part of
# its softmax / P @ V overlap, moved both ways: TMA store 723 / 828 / 832 TFLOP/s at 1k / 4k /
# 16k against 692 / 842 / 876 before, plain stores 618 / 815 / 862 (H200, 2026-11-30 22:25 UTC,
# results/gluon_check_licm_nc_s17.json; plain stores 815 / 877 against 808 / 868 before at 4k
# / 16k, 22:31 UTC). Kept as they are: within a few percent either way.
VARIANT = dict(mode="pingpong", stages=3, overlap=True, unroll2=True, persistent=True,
               tma_store=1)
VARIANT_LONG = dict(VARIANT, tma_store=0)
# varlen batches (session 35): the persistent forms, items over every sequence's query tiles
# (gluon_fwd._varlen_item); a warpgroup's output rows through the TMA store where all of them
# are in the sequence, plain stores for a sequence's last rows (a TMA store there would write
# into the next sequence's rows). Since sessions 36 / 37 the items are handed out as CTAs come
# free (dynamic: gluon_fwd._take_item; causal: each sequence's tiles longest first) instead of
# items pid, pid + grid, ...; causal 392 / 436 TFLOP/s against 372 / 436 static on 8 x 2048 /
# probe_varlen.py's mixed lengths, non-causal with two Q buffers 570 / 584 against 578 / 557
# (H200, GPU time, results/probe_varlen_s36c.json; one Q buffer: 558 / 578)
VARIANT_VARLEN = dict(VARIANT, dynamic=True, q_bufs=2)
TMA_STORE_MAX_SEQLEN_K = 8192       # non-causal: VARIANT up to here, VARIANT_LONG beyond
CAUSAL_VARIANT = dict(mode="pingpong", stages=3, overlap=True)
CAUSAL_PERSISTENT_VARIANT = dict(CAUSAL_VARIANT, persistent=True, tma_store=1, q_bufs=2)
VARIANT_VARLEN_CAUSAL = dict(CAUSAL_PERSISTENT_VARIANT, dynamic=True)
# Session 17: with the item loop compiled without LLVM's loop-invariant code motion
# (gluon_fwd._consumer_persistent) the persistent causal kernel keeps its softmax under P @ V
# and runs 484 / 741 / 842 TFLOP/s bottom-right at 1k / 4k / 16k keys, against 439 / 679 / 779
# as before and 380 / 642 / 805 for one CTA per block (H200, 2026-11-30 22:13 UTC,
# results/gluon_check_licm_c_s17.json): causal calls run it at every length (up to 8k before).
# Session 18: one full-width TMA store of the output (tma_store=1; the second of two
# half-width stores waited for the first to leave shared memory, ~0.8 tile-times a work item,
# session 11) and two Q buffers (the next item's Q loads under this item's last tiles): top-left
# 509 / 775 / 842 TFLOP/s at 1k / 4k / 16k keys against 483 / 739 / 820 with tma_store=2 and
# one Q buffer, as dispatched in session 17 (489 / 772 / 843 one full store, one Q buffer; 498 /
# 746 / 820 two half stores, two Q buffers; FA3 FP8 514 / 783 / 882; H200, 2026-11-30 23:13 UTC,
# results/gluon_check_store_c_s18.json). Offline it compiles with no spills (24 B before).
# Query rows per CTA of the causal kernels. Up to this many queries a head is one work item,
# all items are equally long and the persistent kernel's balanced schedule has nothing to
# balance: CAUSAL_VARIANT runs those calls (same bits) and no schedule table is built, which
# would be one more per new seqlen_k (e.g. a few query rows verified against a growing cache).
CAUSAL_BLOCK_M = 128
# Head dim 256, 64-key tiles (session 19; calls whose K / V descale blocks split a 128-key
# tile): Q loaded once into registers as the A operand of Q K^T, so that the 64-key S GEMM
# reads only K from shared memory (with both operands there it read 128 B a clock, all the SM
# has). Bit-identical; H200, 2026-12-01 00:35 UTC, TFLOP/s at 1k / 4k / 16k
# keys (results/gluon_check_d256t_s19.json): 626 / 830 / 898 against 608 / 803 / 842 for
# session 9's form (Q read from shared memory), FA3 FP8 990 / 1097 / 1066; 00:23 UTC: 844 /
# 875 against 800 / 840 at 4k / 16k. Causal: also without the ping-pong turns (the two
# consumers issue their GEMMs as they get to them) and the tree row max, 694 / 847 at 4k / 16k
# against 665 / 828 with turns and 650 / 802 for session 9's form (FA3 FP8 1024 / 1114;
# results/gluon_check_d256t_c_s19.json). Non-causal, the turn-free form timed as the one with
# turns (821 / 871 vs 821 / 868). The tree row max alone changed nothing (per-tile trace:
# softmax 717 against 714 cycles; results/trace256t_s19.json).
VARIANT_D256_N64 = dict(mode="pingpong", stages=3, pv_pipe=True, q_regs=True)
VARIANT_D256_N64_CAUSAL = dict(VARIANT_D256_N64, tree_max=True, turns=False)
# 128-key tiles at head dim 256 (session 19, 00:54 UTC, results/gluon_check_d256n128_s19.json):
# 916 / 974 TFLOP/s at 4k / 16k non-causal against 842 / 874 for VARIANT_D256_N64 in the same
# run (FA3 FP8 1170 / 1156), although ptxas spills ~14 registers around the P @ V quarters
# (380-436 B): the per-tile work outside the GEMMs (turns, row reductions, the adds of the fresh
# accumulators) comes half as often per key. Q stays in shared memory (in registers as well
# the 128-key kernel would spill more). Calls whose K / V descale blocks do not cover whole
# 128-key tiles keep the 64-key kernels (tile_keys).
# Causal, session 20 (H200, 2026-12-01 01:59 UTC, top-left, results/gluon_check_d256e_c_s20
# .json): each P @ V quarter as two eighth-width GEMMs (pv_eighths: ptxas spills 60-100 B
# instead of ~900 B around the causal quarters) and no ping-pong turns, 833 / 1021 TFLOP/s at
# 4k / 16k keys against 769 / 924 for the non-causal form and 694 / 847 for
# VARIANT_D256_N64_CAUSAL (FA3 FP8 1088 / 1110, the tl kernel 631 / 696). Non-causal the
# eighths lost (864 / 913 against 903 / 967 with quarters, 01:50 UTC,
# results/gluon_check_d256e_s20.json; turn-free 893 / 948).
# Non-causal, session 21 (H200, 2026-12-01): the pipelined quarters without the ping-pong turns
# (same bits), 941 / 1011 TFLOP/s at 4k / 16k keys against 918 / 972 with turns at 02:50 UTC
# (results/gluon_check_d256ep_s21.json; 697 / 694 at 1k) and 1008 / 1012 against 938 / 965 in a
# second run, order swapped (03:06 UTC, results/gluon_check_d256nt_s21.json). The pipelined
# eighths lost there (934 / 979 turn-free) and causal (819 / 1004 against 838 / 1023 for
# VARIANT_D256_CAUSAL; results/gluon_check_d256ep_c_s21.json).
# Session 22 (H200, 2026-12-01 03:49-03:57 UTC, results/gluon_check_d256ts{,_c}_s22.json): the
# output quarters through shared memory and one TMA store each (tma_store=2: two (64, 64) tiles
# a warpgroup used in turn; same bits). Non-causal 840 / 1093 / 1035 TFLOP/s at 1k / 4k / 16k
# keys against 692 / 944 / 1018 with plain stores (one tile, tma_store=1: 828 / 1088 / 1033; FA3
# FP8 1006 / 1136 / 1075). Per-CTA stamps at 1k (results/trace256_ts_s22.json): the store 2.2k
# cycles against 4.9k (session 21). Causal top-left 577 / 903 / 1063 (the tl kernel 471 / 638 /
# 706, FA3 FP8 1025 / 1045 at 4k / 16k); the plain-store form's child timed out in that run,
# session 21 read 838 / 1023 at 4k / 16k.
VARIANT_D256 = dict(mode="pingpong", stages=2, pv_pipe=True, turns=False, tma_store=2)
# Non-causal up to D256_SHORT_MAX_SEQLEN_K keys, session 24 (H200, 2026-12-01 06:30 UTC,
# results/gluon_check_d256q2short_s24.json): on persistent CTAs with the next item's Q loaded
# into a second buffer under this item's tiles (q_bufs=2), 711 / 872 / 877 TFLOP/s at 512 /
# 1024 / 1536 keys against 627 / 830 / 877 for VARIANT_D256 and 533 / 652 / 673 for the tl
# kernel (FA3 FP8 799 / 984 / 1005); at 2k / 4k it lost (925 / 960 against 941 / 984, 06:26
# UTC, gluon_check_d256q2nc_s24.json), as the one-buffer persistent form did in session 23.
# Same bits as the tl kernel on five non-causal shapes (q2nc_bits_s24.jsonl) and the GPU tests.
# Its shared memory (229,752 B) leaves no room for fp32 output tiles: those keep VARIANT_D256.
# ptxas miscompiles its items without an unmasked KV tile (gluon_fwd._launch_plan refuses them:
# fewer than 128 keys); from MIN_SEQLEN_K_D256_N128 keys every item has 4+.
VARIANT_D256_SHORT = dict(VARIANT_D256, persistent=True, item_licm=True, q_bufs=2)
D256_SHORT_MAX_SEQLEN_K = 1536
# Causal, session 23 (H200, 2026-12-01 05:15-05:21 UTC, top-left, results/gluon_check_d256persist_c
# _s23.json): on persistent CTAs (one per SM over _causal_schedule's longest-first table, each
# item's TMA stores draining under the next item's tiles) with LLVM's loop-invariant code motion
# in the item loop (item_licm), 640 / 954 / 1046 TFLOP/s at 1k / 4k / 16k keys against 578 / 885
# / 1051 for one CTA per block (without item_licm 576 / 874 / 981; FA3 FP8 1013 / 1007 at 4k /
# 16k, 314 at 1k an outlier). Same bits as the tl kernel (results/pytest_d256persist_s23.log);
# with two Q buffers (q_bufs=2) the causal bits differed (results/q2diag_s23.jsonl): a ptxas
# miscompile (session 24, RESULTS.md "The cause"), worked around in session 25 (below).
# One query block a head (seqlen_q <= 128) keeps one CTA per block, as CAUSAL_VARIANT at head
# dim 128 (the persistent form is not timed there).
VARIANT_D256_CAUSAL_ONE_BLOCK = dict(mode="pingpong", stages=2, pv_eighths=True, turns=False,
                                     tma_store=2)
VARIANT_D256_CAUSAL = dict(VARIANT_D256_CAUSAL_ONE_BLOCK, persistent=True, item_licm=True)
# Causal from 512 keys since session 25 (H200, 2026-12-01 09:04 UTC, top-left,
# results/gluon_check_d256cshort_s25.json): 418 / 539 TFLOP/s at 512 / 768 keys against the tl
# kernel's 359 / 426; with two Q buffers (the miscompile of session 24 worked around in
# gluon_fwd._consumer_split) 410 / 538, and 617 / 627 against 634 at 1k (08:36 and 08:56; the
# one-buffer child of 08:56 was cut by its timeout): not dispatched.
# Head dim 64 (session 14): three turn-free consumer warpgroups of 64 rows (192-row
# blocks, FA3's hdim-64 shape: a third warp per scheduler to issue softmax work while another
# waits on the exp2 unit or a wgmma), loop not unrolled (unrolled, the 160-register consumers
# spill in it): 368 / 515 / 590 TFLOP/s at 1k / 4k / 16k keys against the tl kernel's 456 / 512
# / 529 and FA3 FP8's 442 / 612 / 653 (H200, 2026-11-30 19:02 UTC,
# results/gluon_check_d64_tri_s14.json, non-causal); two consumers, persistent: 394 / 482 / 510.
# Three consumers, persistent ("tri_ovl_s3_persist", session 15): 393 / 486 / 546 against 366 /
# 515 / 590 for this one (20:11 UTC, results/gluon_check_d64_tri_persist_s15.json).
# Causal calls: MIN_SEQLEN_K_D64_CAUSAL.
_D64_BASE = dict(mode="pingpong", stages=3, overlap=True, turns=False, consumers=3,
                 block_m=192, consumer_regs=160)
# Session 27: the last query block in a second launch, beside the full blocks' last wave, where
# that saves a wave: 529 against 519 TFLOP/s at 4k keys (0.87x / 0.85x FA3 FP8's 611), same
# bits; 8k / 16k keys were not split (H200, 2026-12-02 01:05 UTC,
# results/gluon_check_tail64_s27.json). Superseded by the persistent form below in session 28
# and removed (the code: commit 65080c8, gluon_fwd's tail_split).
# Causal hdim 64 (session 15): each warpgroup computes only its own rows' tiles (wg_bounds), on
# persistent CTAs with the greedy table; a head of at most one 192-row block is one item, so
# it runs without the table (same bits either way).
# Two Q buffers (gluon_fwd VARIANTS "*_q2", session 16) ran 0.7-2.7% faster on the causal
# persistent kernels and 4-5% slower on the unrolled non-causal one (results/gluon_check_q2_*
# _s16.json); again at hdim 64 in session 18, top-left: 448 / 528 TFLOP/s at 4k / 8k keys
# against 437 / 501 with one (the tl kernel 444 / 470; H200, 2026-11-30 23:16 UTC,
# results/gluon_check_store_d64c_s18.json): the causal persistent variants take them (at 4k
# the tl kernel stays: level within 1% in both sessions, and bottom-right calls with fewer
# queries than keys ran 0.95x it in session 16).
# Session 22 (H200, 2026-12-01 04:09 UTC, top-left, results/gluon_check_d64ts_c_s22.json): the
# output through one shared (64, 64) tile a warpgroup and TMA, 474 / 542 / 565 TFLOP/s at 4k /
# 8k / 16k keys against 450 / 525 / 564 with plain stores (the tl kernel 444 / 465 / 481, FA3
# FP8 530 / 603 / 627), so causal calls take it from 4k keys (MIN_SEQLEN_K_D64_CAUSAL).
# Non-causal the same store lost at 16k on one CTA a block (554 against 590 for the plain
# stores; 509 / 518 at 4k, results/gluon_check_d64ts_s22.json), as at hdim 128 in session 11.
# Session 28: non-causal calls too take this persistent form (wg_bounds acts on causal calls
# only), which no session had timed non-causal. Its CTAs pull (block, head) items, so no launch
# ends on a part-empty wave, and each item's TMA store and next Q load run under the next
# item's tiles. Non-causal 454 / 523 / 521 / 544 / 591 / 600 TFLOP/s at 1k / 1.5k / 2k / 4k /
# 8k / 16k keys against the tl kernel's 457 / 472 / 489-493 / 513 (1k-4k) and the one-CTA-a-
# block kernel's 452 / 467 / 530 (tail split) / 571 / 589 (1.5k-16k; FA3 FP8 447 / 554 / 573-576
# / 609 / 660 / 674). Causal top-left 280 / 409 / 474 at 1k / 2k / 3k against the tl kernel's
# 328 / 399 / 426 (FA3 FP8 299 / 449 / 524). Same bits as the tl kernel (five shapes a run).
# (H200, 2026-12-02 02:45-02:54 UTC, results/gluon_check_d64{short,mid_nc,mid_c}_s28.json.)
VARIANT_D64 = dict(_D64_BASE, persistent=True, wg_bounds=True, q_bufs=2, tma_store=1)
VARIANT_D64_CAUSAL_ONE_BLOCK = dict(_D64_BASE, wg_bounds=True)
TILE_KEYS = {64: 128, 128: 128, 256: 128}    # head dim -> keys per KV tile (block_n)
# head dim -> the smaller tile taken when the descale blocks split a TILE_KEYS tile
SMALL_TILE_KEYS = {256: 64}


def kernel_head_dim(head_dim: int) -> int | None:
    """The head dim the Gluon kernel is built for to run head_dim: head_dim itself where
    TILE_KEYS has it; 128 for the multiples of 16 between 64 and 128 (80 / 96 / 112, e.g.
    Phi-3's 96; session 29), else None. On the 128 form TMA zero-fills the columns of Q and K
    past head_dim (their products are exact), the output's TMA store drops them, and P @ V's
    columns past head_dim, computed from the next rows of V^T, are thrown away, so the bits are
    the tl kernel's, which pads to 128 too (GPU tests). Phi-3-mini's shape (32 heads, head dim
    96, 16k tokens a call): 565 / 625 TFLOP/s causal / not at 4k keys, 637 / 620 at 16k, against
    the tl kernel's 464 / 528 / 505 / 548 (0.82-0.86x FA3 FP8, from 0.68-0.71x); Phi-2's (head
    dim 80) at 4k: 474 / 519 against 363 / 425 (H200, 2026-12-02 05:01 UTC, GPU time,
    results/probe_d96{,_tl}_s29.json)."""
    if head_dim in TILE_KEYS:
        return head_dim
    return 128 if 64 < head_dim < 128 and head_dim % 16 == 0 else None


MIN_SEQLEN_K = 1024     # head dim 128, causal or not (see the module docstring)
MIN_SEQLEN_K_D256 = 4096    # head dim 256 on 64-key tiles
# head dim 256 on 128-key tiles: non-causal 688 TFLOP/s at 1k keys against the tl kernel's 648
# (H200, 2026-12-01 01:53 UTC, results/gluon_check_d256p_s20.json; 64-key kernel 626 against
# 654, session 19); causal since session 22 (the TMA store), 577 against 471 top-left
# (results/gluon_check_d256ts_c_s22.json; 452 against 471 with plain stores, session 20)
# (1k keys then). From 512 keys: non-causal since session 24 (VARIANT_D256_SHORT, 1.33x the tl
# kernel there; the one-CTA-per-block form 1.18x), causal since session 25
# (VARIANT_D256_CAUSAL, 1.17x); shorter calls are not measured
MIN_SEQLEN_K_D256_N128 = 512
# head dim 64 non-causal (VARIANT_D64, session 28): 0.99x / 1.11x / 1.07x the tl kernel at 1k
# / 1.5k / 2k keys (4k until session 28: one CTA a block ran 0.81x it at 1k, 0.96x at 1.5k / 2k)
MIN_SEQLEN_K_D64 = 1536
# causal, head dim 64 (VARIANT_D64): 0.85x / 1.02x / 1.11x the tl kernel at 1k / 2k / 3k keys
# top-left (session 28); before: 0.98x / 1.10x / 1.15x at 4k / 8k / 16k top-left, 0.95x / 1.05x
# / 1.12x bottom-right (H200, 2026-11-30 21:03 UTC, results/gluon_check_d64c_{top_left,
# bottom_right}_s16.json), hence 8k until session 22, 4k (the TMA store: 1.07x there) until
# session 28
MIN_SEQLEN_K_D64_CAUSAL = 2048
OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
TRITON_SERIES = "3.6."
_failed: list = []      # the first launch error, if any: the path stays off for the process


def enabled() -> bool:
    return os.environ.get("FP8ATTN_GLUON", "").strip() != "0"


def _vt_layout_ok(vt8: torch.Tensor) -> bool:
    B, H, D, _ = vt8.shape
    rs = vt8.stride(-2)
    return (vt8.stride(-1) == 1 and rs % 16 == 0 and vt8.stride(1) == D * rs
            and vt8.stride(0) == H * D * rs)


class VarlenTables(NamedTuple):
    """A varlen launch's device tables (B = 1, sequences packed): cu_q / cu_k int32 (nseq + 1,)
    offsets, kv_starts int32 (nseq,) each sequence's first row in K / V^T's padded rows
    (quant/padded_rows.py), q_tiles int32 (n_t, 2) the 128-row query tiles of Q's padded layout
    ([first packed row, count]; count 0: no rows) and q_tile_seq (n_t,) their sequences."""
    cu_q: torch.Tensor
    cu_k: torch.Tensor
    kv_starts: torch.Tensor
    q_tiles: torch.Tensor
    q_tile_seq: torch.Tensor


def varlen_tables(cu_q: torch.Tensor, cu_k: torch.Tensor, kv_starts: torch.Tensor,
                  total_q: int, q_layout=None) -> VarlenTables:
    """The tables of a varlen launch: the query tiles from one launch of padded_rows' layout
    kernel over cu_q (offsets not read on the host, so the call stays capturable), or from
    q_layout where the caller has that layout already (ops.varlen_layouts: K's, when the
    queries' offsets are the keys' tensor)."""
    from ..quant.padded_rows import padded_rows
    layout = q_layout
    if layout is None or layout.align != CAUSAL_BLOCK_M or layout.total != total_q:
        layout = padded_rows(cu_q, total_q, CAUSAL_BLOCK_M, sequences=True)
    return VarlenTables(cu_q, cu_k, kv_starts, layout.tiles(CAUSAL_BLOCK_M),
                        layout.tile_sequences())


def why_not(q8, k8, vt8, *, k_block: int, v_block: int, causal, varlen: bool, q_lo,
            out_dtype, acc_mode: str, config, v_key_order: str = "natural",
            lse: bool = False, kv_align: int = 0) -> str | None:
    """None if the call can go to the Gluon kernel, else the first reason it cannot
    (v_key_order: vt8's, quant/key_order.py; lse: whether the call returns the LSE;
    kv_align: varlen K / V rows padded so that each sequence starts at a multiple of it, 0
    packed as given)."""
    off = _off(q8)
    if off is not None:
        return off
    return reason(
        capability=_capability(q8.device.index), triton_version=triton.__version__,
        dtype=q8.dtype, head_dim=q8.shape[-1], seqlen_q=q8.shape[2], seqlen_k=k8.shape[2],
        k_block=k_block, v_block=v_block, causal=causal, varlen=varlen,
        two_terms=q_lo is not None, out_dtype=out_dtype, acc_mode=acc_mode, lse=lse,
        forced_config=config is not None,
        contiguous=(q8.is_contiguous() and k8.is_contiguous()
                    and (q_lo is None or q_lo.is_contiguous())),
        aligned=all(t.data_ptr() % 16 == 0 for t in (q8, k8, q_lo, vt8) if t is not None),
        vt_ok=_vt_layout_ok(vt8),
        mma_order=v_key_order == "mma", kv_align=kv_align)


def _off(x: torch.Tensor) -> str | None:
    """Why the path is off for a call on x's device whatever its shapes, or None."""
    if not enabled():
        return "off (FP8ATTN_GLUON=0)"
    if _failed:
        return f"off after a failed launch ({_failed[0]})"
    if os.environ.get("TRITON_INTERPRET") == "1" or not x.is_cuda:
        return "needs CUDA (no interpreter for Gluon)"
    return None


@functools.lru_cache(maxsize=None)
def _capability(index) -> tuple:
    """Cached: the torch query was a tenth of a Gluon launch's host time (cProfile, H200)."""
    return tuple(torch.cuda.get_device_capability(index))


def reason(*, capability, triton_version: str, dtype, head_dim: int, seqlen_q: int, seqlen_k: int,
           k_block: int, v_block: int, causal, varlen: bool, two_terms: bool,
           out_dtype, acc_mode: str, forced_config: bool, contiguous: bool,
           vt_ok: bool, mma_order: bool = True, lse: bool = False,
           aligned: bool = True, kv_align: int = 0) -> str | None:
    """The checks of why_not on plain values (testable without a GPU). Varlen: seqlen_q /
    seqlen_k are the packed rows (the threshold applies to the batch's keys)."""
    hd = kernel_head_dim(head_dim)
    bn = tile_keys(hd or head_dim, k_block, v_block, seqlen_k)
    min_k = {64: MIN_SEQLEN_K_D64 if causal is None else MIN_SEQLEN_K_D64_CAUSAL,
             256: MIN_SEQLEN_K_D256 if bn != 128
             else MIN_SEQLEN_K_D256_N128}.get(hd, MIN_SEQLEN_K)
    # (condition, message): the messages are built only for the failing check (f-strings of
    # dtypes cost microseconds a call, and every launch asks)
    checks = [
        (tuple(capability) == (9, 0),
         lambda: f"needs sm_90, got sm_{capability[0]}{capability[1]}"),
        (triton_version.startswith(TRITON_SERIES),
         lambda: f"written for Triton {TRITON_SERIES}x, got {triton_version}"),
        (dtype == torch.float8_e4m3fn, lambda: f"needs e4m3 inputs, got {dtype}"),
        (hd is not None, lambda: f"head dim {head_dim} (only {tuple(TILE_KEYS)}, and multiples "
                                 "of 16 between them up to 128)"),
        (hd != 256 or not lse, lambda: "head dim 256 with the LSE"),
        (causal != "bottom_right" or seqlen_k >= seqlen_q or varlen,
         lambda: f"bottom-right causal with seqlen_q {seqlen_q} > seqlen_k {seqlen_k}"),
        # varlen (session 35): the persistent head-dim-128 kernel over the query tiles of
        # all sequences, K / V in padded rows (ops._kv_align), every sequence on a KV tile;
        # head dims 80 / 96 / 112 on it since session 37
        (not varlen or (hd == 128 and kv_align > 0 and kv_align % bn == 0 and not two_terms),
         lambda: "varlen batches other than head dims 80-128 with K / V in padded rows and "
                 "one Q term"),
        (not two_terms or hd == 128, lambda: f"two-term Q at head dim {head_dim}"),
        (out_dtype in OUT_DTYPES,
         lambda: f"output {out_dtype} (only {', '.join(map(str, OUT_DTYPES))})"),
        (acc_mode == "tile", lambda: f"acc_mode {acc_mode!r}"),
        (not forced_config, lambda: "a forced tl config"),
        (k_block % bn == 0 or k_block >= seqlen_k,
         lambda: f"k_block {k_block} splits a {bn}-key tile"),
        (v_block % bn == 0 or v_block >= seqlen_k,
         lambda: f"v_block {v_block} splits a {bn}-key tile"),
        (seqlen_k >= min_k, lambda: f"seqlen_k {seqlen_k} < {min_k}"),
        (contiguous, lambda: "q8 / k8 not contiguous"),
        # TMA needs 16-byte aligned bases; a misaligned one would fail the launch, and a failed
        # launch turns the path off for the process
        (aligned, lambda: "q8 / k8 / V^T (or Q's second term) data not 16-byte aligned"),
        (vt_ok, lambda: "V^T rows not 16-byte aligned or heads not packed"),
        # a natural-order V^T would need a permuting copy first: slower than the tl kernel up
        # to 16k keys (H200, 2026-11-30: 431 vs 613 TFLOP/s at 4k, 678 vs 684 at 16k, causal)
        (mma_order, lambda: "V^T in natural key order (quantise it with key_order='mma')"),
    ]
    for ok, why in checks:
        if not ok:
            return why()
    return None


def v_key_order_for(q: torch.Tensor, k: torch.Tensor, *, fmt: str, granularity: str,
                    block_kv: int, causal, varlen: bool, two_terms: bool, out_dtype,
                    contiguous: bool = True, lse: bool = False,
                    kv_align: int = 0) -> str:
    """The key order to write V^T in for a call on q (.., Sq, D) and k (.., Sk, D), decided
    before quantisation: "mma" where why_not will accept the quantised call, else "natural".
    contiguous: whether the FP8 Q and K the kernel gets will be contiguous (the quantiser's
    output is; V^T rows are aligned either way). kv_align: why_not's."""
    from ..formats import fp8_dtype
    from ..quant.reference import group_block_size
    if _off(q) is not None:
        return "natural"
    kv_block = group_block_size(granularity, k.shape[-2], block_kv)
    why = reason(
        capability=_capability(q.device.index), triton_version=triton.__version__,
        dtype=fp8_dtype(fmt), head_dim=q.shape[-1], seqlen_q=q.shape[-2], seqlen_k=k.shape[-2],
        k_block=kv_block, v_block=kv_block, causal=causal, varlen=varlen, two_terms=two_terms,
        out_dtype=out_dtype, acc_mode="tile", forced_config=False, contiguous=contiguous,
        vt_ok=True, lse=lse, kv_align=kv_align)
    return "mma" if why is None else "natural"


def launch(q8, k8, vt8, q_descale, k_descale, v_descale, *, q_block: int, k_block: int,
           v_block: int, softmax_scale: float, out: torch.Tensor,
           lse=None, v_key_order: str = "natural", causal=None, q_lo=None,
           varlen=None) -> torch.Tensor:
    """Run the Gluon kernel into out (B, Hq, Sq, D) of OUT_DTYPES (and lse (B, Hq, Sq) float32, if
    given), any strides; why_not(...) was None. varlen: gluon_fwd.VarlenTables of a varlen
    call (VARIANT_VARLEN / VARIANT_VARLEN_CAUSAL)."""
    from .gluon_fwd import gluon_attention_fwd
    d = kernel_head_dim(q8.shape[-1])
    bn = tile_keys(d, k_block, v_block, k8.shape[-2])
    if varlen is not None:
        variant = VARIANT_VARLEN if causal is None else VARIANT_VARLEN_CAUSAL
        return gluon_attention_fwd(q8, k8, vt8, q_descale, k_descale, v_descale, q_block,
                                   k_block, v_block, softmax_scale, out=out, block_n=bn,
                                   lse=lse, causal=causal, v_key_order=v_key_order,
                                   varlen=varlen, **variant)
    if causal == "bottom_right" and q8.shape[-2] == k8.shape[-2]:
        # the top-left mask when there are as many queries as keys; the kernel's top-left form
        # ran faster there, same bits (H200, 2026-11-30 21:07 UTC, hdim 128, GPU time: 465
        # against 439 TFLOP/s at 1k keys, 612 against 576 at 2k; results/
        # probe_short_causal_s16.json), as the three-consumer kernel's at hdim 64 (436 / 515 /
        # 553 against 416 / 488 / 535 at 4k / 8k / 16k, gluon_check_d64c_*_s16.json)
        causal = "top_left"
    variant = variant_for(d, causal, k8.shape[-2], q8.shape[-2], block_n=bn,
                          out_dtype=out.dtype, padded=d != q8.shape[-1])
    # per head (k_block >= seqlen_k): every tile reads descale[0], as the tl kernel's K_MODE 0
    return gluon_attention_fwd(q8, k8, vt8, q_descale, k_descale, v_descale,
                               q_block, _tile_block(k_block, bn), _tile_block(v_block, bn),
                               softmax_scale, out=out, block_n=bn, lse=lse,
                               causal=causal, v_key_order=v_key_order, q_lo=q_lo, **variant)


def tile_keys(head_dim: int, k_block: int, v_block: int, seqlen_k: int) -> int:
    """Keys per KV tile for a call: TILE_KEYS[head_dim], or SMALL_TILE_KEYS[head_dim] where the
    K or V descale blocks would split such a tile (one descale per tile; a block covering all
    seqlen_k keys is one per head and splits nothing). 1 for head dims without a kernel."""
    bn = TILE_KEYS.get(head_dim, 1)
    small = SMALL_TILE_KEYS.get(head_dim)
    if small and any(b % bn and b < seqlen_k for b in (k_block, v_block)):
        return small
    return bn


def variant_for(head_dim: int, causal, seqlen_k: int, seqlen_q: int | None = None,
                block_n: int | None = None, out_dtype=torch.bfloat16,
                padded: bool = False) -> dict:
    """The gluon_fwd variant launch runs for a call why_not accepted (seqlen_q: None for any
    length above one causal block: CAUSAL_BLOCK_M, 192 at head dim 64; block_n: tile_keys's,
    None for TILE_KEYS[head_dim]; out_dtype: the output's, one of OUT_DTYPES; padded: a head
    dim below 128 run on the 128 kernel (kernel_head_dim), whose non-causal calls keep the TMA
    store at every length: plain stores would go through a 128-wide buffer,
    gluon_fwd.gluon_attention_fwd)."""
    if head_dim == 256:
        if block_n == SMALL_TILE_KEYS[256]:
            return VARIANT_D256_N64 if causal is None else VARIANT_D256_N64_CAUSAL
        if causal is None:
            short = seqlen_k <= D256_SHORT_MAX_SEQLEN_K and out_dtype != torch.float32
            return VARIANT_D256_SHORT if short else VARIANT_D256
        if seqlen_q is not None and seqlen_q <= CAUSAL_BLOCK_M:
            return VARIANT_D256_CAUSAL_ONE_BLOCK
        return VARIANT_D256_CAUSAL
    if head_dim == 64:
        if causal is not None and seqlen_q is not None and seqlen_q <= VARIANT_D64["block_m"]:
            return VARIANT_D64_CAUSAL_ONE_BLOCK
        return VARIANT_D64
    if causal is None:
        return VARIANT if padded or seqlen_k <= TMA_STORE_MAX_SEQLEN_K else VARIANT_LONG
    one_block = seqlen_q is not None and seqlen_q <= CAUSAL_BLOCK_M
    return CAUSAL_VARIANT if one_block else CAUSAL_PERSISTENT_VARIANT


def try_launch(*args, **kwargs) -> bool:
    """launch(...); False (with a warning, once) if it raised: the caller runs the tl kernel."""
    try:
        launch(*args, **kwargs)
        return True
    except Exception as e:  # noqa: BLE001 - any compile / launch error: fall back, say so
        _failed.append(f"{type(e).__name__}: {str(e)[:300]}")
        from .. import call_plan
        call_plan.clear()       # plans recorded with Gluon launches: the tl kernel from now on
        warnings.warn(f"fp8attn: the Gluon attention kernel failed ({_failed[0]}); using the "
                      "Triton kernel from now on (same results). FP8ATTN_GLUON=0 skips it.",
                      RuntimeWarning, stacklevel=3)
        return False


def _tile_block(block: int, block_n: int) -> int:
    """gluon_attention_fwd wants multiples of block_n; a per-head block (>= seqlen_k) indexes
    descale[start_n // block] == 0 for every tile either way, as does any multiple of block_n
    at least as large."""
    return block if block % block_n == 0 else -(-block // block_n) * block_n
