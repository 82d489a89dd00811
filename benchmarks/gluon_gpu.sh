#!/usr/bin/env bash
# Device calls for the Gluon fast path (fp8attn/attention/gluon_dispatch.py, on by default),
# in stages that each fit one 10-minute call:
#   s41     session 41: the call-plan / FP8-input / API GPU tests against session 40's
#           final host-side code (run as `s41 infmode`)                         (~2 min)
#   s41b    call plans under torch.inference_mode: the call-plan, varlen-offset and API GPU
#           tests (run as `s41b infmode`)                                       (~2 min)
#   s40     session 40: varlen call plans (ops._varlen_on_device): the call-plan tests, every
#           varlen test, the dense GPU tests against the final call-plan code, then host time
#           with plans and without                                              (~8 min)
#   s40b    one workspace for a plan's intermediates, FP8 varlen plans (row_descales): the
#           planned calls' GPU tests, then host time with plans                (~6 min)
#   s40c    by_head as a Triton launch: the FP8-input and call-plan GPU tests, its GPU time
#           beside torch's word copy, host time with plans                      (~4 min)
#   infmode varlen host time under torch.inference_mode (cu_seqlens are inference tensors: no
#           version counter, so every call checks them and waits for the copy) beside no_grad,
#           with plans (not run yet)                                            (~3 min)
#   s40bench bench_attention.py's whole sweep (as benchfull) with call plans on      (~4-5 min)
#   s35     session 35: varlen calls on the Gluon kernel (gluon_fwd._varlen_item): its GPU
#           tests beside the tl kernel's bits, the varlen / padded-rows / API tests, then
#           probe_varlen.py (ours on the Gluon kernel, ours_tl on the Triton kernel, FA3)
#                                                                               (~5 min)
#   s36     session 36: varlen items handed out as CTAs come free: the varlen GPU tests, then
#           probe_varlen.py with the static order beside, host time           (~6 min)
#   s37     session 37: non-causal varlen items handed out on two Q buffers (the dispatch):
#           the varlen GPU tests, then probe_varlen.py                        (~4 min)
#   s37d96  session 37: varlen head dims 80 / 96 on the 128 kernel: the varlen GPU tests, then
#           probe_varlen.py --head-dim 96                                     (~4 min)
#   s37split session 37: probe_varlen_split.py (the quantiser and the attention launch of a
#           varlen call timed apart beside the dense call's), hdim 128 and 96    (~2 min)
#   s38rowmap (branch s37-quant-row-map) varlen K at head dims 80 / 96 / 112 / 256 quantised
#           into padded rows by _quant_kernel's ROW_MAP instead of from a copy: the
#           quantiser's GPU tests, the varlen tests, then the split and speed probes at 96
#                                                                               (~6 min)
#   s38fields (branch s37-varlen-item-fields) the handed-out varlen items' table lookups
#           done by the producer and published with the item (one slot read a consumer
#           instead of a chain of dependent loads): the varlen tests, then probe_varlen.py and
#           probe_varlen_split.py (hdim 128)                                     (~5 min)
#   s38quant where the dense quantiser's time goes (probe_quant_split.py), default configs and
#           FP8ATTN_TUNE=all                                                    (~2 min)
#   s39plan call plans (fp8attn/call_plan.py): dense / FP8-input / dispatch / device-table
#           GPU tests with plans on, then host time with and without plans        (~9 min)
#   s39plan2 call plans with torch copies replayed: plan / FP8-input / API GPU tests, then
#           host time with and without plans                                    (~4-5 min)
#   s39host host time of session 38's quantiser launch changes against out/old_s38 (carried;
#           `git archive 991f52d fp8attn | tar -x -C out/old_s38`), hdim 128 / 96, after the
#           quantiser's GPU tests                                               (~9 min)
#   s38direct branch s38-quant-direct: the quantiser's GPU tests                (~1-2 min)
#   s38triple V in Q's and K's quantiser launch: quantiser / API / attention GPU tests, the
#           quantiser's and varlen call's steps, host time against out/old_s38 (~6-7 min)
#   s38a    varlen + padded-rows tests, probe_varlen_split at 128, host time with cProfile
#           (probe_host_time.py --profile)                                      (~4 min)
#   s38configs the quantiser's launches under other configs, the layout launch under other
#           block sizes (probe_quant_configs.py)                                (~2 min)
#   s38pending (branch s37-pending: s37-quant-row-map + s37-varlen-item-fields +
#           s37-shared-layout) all three in one call: test_padded_rows.py, the varlen tests,
#           then probe_varlen.py at hdim 128 and 96 and probe_varlen_split.py at both
#           (session 37's readings to compare with: results/probe_varlen_s37.json,
#           probe_varlen_d96_s37.json, probe_varlen_split_d{128,96}_s37.json)  (~7-8 min)
#   s36final session 36's final code: the varlen GPU tests, then probe_varlen.py (~4 min)
#   s35final session 35's final code: the varlen GPU tests, then probe_varlen.py (~3 min)
#   s34 / s34host / s34final  session 34: direct launches of the quantiser, tl and layout
#           kernels (kernel_launch.launch_call), varlen offsets checked once per tensor: GPU
#           tests, then host time of the tree beside .old_s33 (session 33's) and FA3
#           (benchmarks/experiments/probe_host_time.py)                        (~4-8 min)
#   tests   the GPU tests of the attention kernels, the API, the quantiser, the rotation and the
#           device tables (CUDA-graph captures), with the Gluon path on
#           (tests/test_gluon_dispatch.py holds it to the tl kernel bit for bit), and the
#           hdim-256 kernels' SASS against session 24's ptxas miscompile (in one process
#           after the rest); 300 s cut it at 94% in session 23, 420 s just before its
#           summary line in session 37 (425 s with the 870 tests)             (~8-9 min)
#   check   gluon_gpu_check.py, each variant timed beside the tl kernel and FA3 FP8: causal
#           calls on persistent CTAs with the host-built greedy schedule (dispatched up to 8k
#           keys since session 9; with two half-width TMA stores of the output since session
#           11: _ts2) against one CTA per block (pingpong_ovl_s3, beyond 8k), top-left and
#           bottom-right                                                        (~5-8 min)
#   persist gluon_gpu_check.py: the persistent variant (one CTA per SM looping over (query
#           block, head) items; dispatched non-causal since session 8) with plain stores and
#           with the TMA store of session 11, hdim 128 non-causal, 1k-16k keys; each variant
#           in a child process with a timeout, so a barrier bug shows as "timeout" instead of
#           a hung call                                                         (~3 min)
#   d64     gluon_gpu_check.py --head-dim 64: the three-consumer kernel the dispatch runs from
#           4k keys (tri_ovl_s3, session 14: 1.01x / 1.11x the tl kernel at 4k / 16k) beside
#           its persistent form (session 15: 0.95x / 1.02x) and persistent CTAs on two
#           consumers (session 10: 0.86-0.96x of the tl kernel)                 (~3 min)
#   q2      two Q buffers in the persistent kernels (session 16): their bit tests, then timed
#           beside the one-buffer forms (hdim 64 causal, hdim 128 causal and not)   (~7 min)
#   licm    session 17: the persistent hdim-128 kernels with the item loop compiled without
#           LLVM's loop-invariant code motion (now the default) beside the same kernels with
#           it (the "_licm" variants, as dispatched before), non-causal and causal   (~5 min)
#   licm64  the same at head dim 64 (three consumers): causal with per-warpgroup bounds, and
#           non-causal persistent beside the dispatched non-persistent kernel  (~4 min)
#   longc   the dispatch GPU tests of causal hdim 128 (persistent CTAs at every length since
#           session 17), with a 9k-key case                                    (~1-2 min)
#   ovl64   session 17's follow-up at hdim 64: two consumer warpgroups, persistent, loop not
#           unrolled (the whole softmax under P @ V offline) beside the three-consumer kernels,
#           causal and not                                                      (~5 min)
#   ovl128  hdim 128 non-causal not unrolled beside unrolled; traces of the causal kernel in
#           both alignments                                                     (~4 min)
#   store   causal hdim 128: one full-width TMA store of the output against two half-width
#           ones, one and two Q buffers; hdim 64 causal with two Q buffers   (~6 min)
#   nc128   non-causal hdim 128: the dispatched variants beside the non-unrolled TMA-store
#           loop with one and two Q buffers                                     (~4 min)
#   trace256 per-tile clock stamps of the hdim-256 kernel (gluon_trace_tiles.py), causal
#           and not                                                             (~2 min)
#   d256q   hdim 256, Q as the register operand of Q K^T beside the dispatched kernel
#           (session 18's branch; bits, timings, traces)                        (~4 min)
#   d256t   hdim 256: dispatched, Q in registers, + tree row max, + no turns; 1k-16k, causal
#           and not, traces                                                     (~8 min)
#   d256n128 / d256n128c  session 19: hdim 256 on 128-key tiles beside the 64-key kernel,
#           non-causal (with a per-tile trace) / causal after the bit tests      (~3 min each)
#   d256e / d256ec  session 20: the P @ V quarters as eighth-width GEMMs (pv_eighths; the
#           causal dispatch since, without turns): bits and non-causal timings (three stages
#           too) / causal top-left beside the 64-key causal kernel             (~3 / ~5 min)
#   (d256ep / d256epc, session 21: the eighths pipelined, pv_pipe + pv_eighths; slower causal
#           and not, removed with their variants in session 23)
#   d256nt  hdim 256 non-causal: the pipelined quarters with and without turns, a second
#           reading after d256ep                                                (~2 min)
#   d256ts  hdim 256, the output quarters through shared memory and TMA (tma_store 1 / 2; run
#           in session 22, dispatched since): bits, then non-causal and causal 1k-16k
#           timings beside the dispatched forms                                 (~8 min)
#   trace256ts  per-CTA stamps of those forms at 1k / 4k keys (run in session 22) (~1 min)
#   d64ts   hdim 64 (three consumers), the output through one shared tile a warpgroup and TMA:
#           bits, then non-causal 1k-16k and causal top-left 4k-16k timings beside the
#           dispatched forms                                                    (~5 min)
#   d64path the GPU tests of the hdim-64 dispatch and the three-consumer kernels  (~4-6 min)
#   d256persist  hdim 256 on persistent CTAs with the TMA store (run in session 23): bits,
#           non-causal 1k-16k timings beside the dispatched form (with and without LICM in
#           the item loop), per-tile stamps at 1k / 16k                           (~5 min)
#   d256persistc the causal forms, top-left 1k-16k (run in session 23; the LICM form is
#           VARIANT_D256_CAUSAL since)                                          (~6 min)
#   q2diag  where two Q buffers gave wrong causal bits at hdim 256 (run in session 23; since
#           session 25's workaround it checks the fixed form)                   (~1 min)
#   q2nc    session 24 (run then): two Q buffers at hdim 256, non-causal (bits on five shapes, then
#           timed beside VARIANT_D256 at 1k / 2k / 4k keys), and q2diag's causal probes
#           (plain stores, the LICM form; what the wrong rows are)             (~3 min)
#   q2kv    (run in session 24) q2diag's two-Q-buffer form only, testing whether the wrong rows used a K / V
#           tile of the previous item                                           (~1 min)
#   q2san   compute-sanitizer memcheck / racecheck on the two-Q-buffer causal form (run in
#           session 24: it found the ptxas miscompile; memcheck's first errors are cut by
#           tail -60, raise it to see all)                                       (~1 min)
#   q2short (run in session 24, dispatched since) the same non-causal forms at 512 / 1024 / 1536 keys (where the dispatch switches
#           to two Q buffers; the tl kernel's row is "ours" below 1k)           (~2 min)
#   s25     (run in session 25) hdim 64 non-causal with rowless warpgroups skipping (backed
#           out), and hdim 256 causal with two Q buffers (the miscompile worked around): bits,
#           then timings beside the dispatched forms                            (~6 min)
#   gap256  GPU-wide timer stamps of the hdim-256 CTAs, plain stores against TMA: an SM's
#           idle time between CTAs (not run yet)                                (~1-2 min)
#   trace1k per-tile and per-CTA clock stamps of the dispatched hdim-256 kernels at 1k / 4k /
#           16k keys, causal and not (why 1k runs 0.73x the 4k speed; run in session 21)  (~3 min)
#   n256    hdim 128 non-causal on 256-key tiles (256-key descale blocks), beside the
#           dispatched kernel (run in session 21: +2-3% on the plain consumer, not
#           dispatched; RESULTS.md "Head dim 128 on 256-key tiles")               (~4 min)
#   d64c    head dim 64 causal, both alignments: VARIANT_D64 beside the persistent form with
#           per-warpgroup causal bounds (tri_ovl_s3_persist_wgb, session 15 top-left: 0.99x /
#           1.17x the tl kernel at 4k / 16k), at 4k / 8k / 16k keys            (~5 min)
#   tsloop  session 11's open question: with the TMA store the unrolled non-causal tile loop
#           ran ~4% more cycles a tile (not the non-unrolled causal one). Clock-stamp traces
#           (gluon_trace.py) and timings of the unrolled and non-unrolled persistent variants,
#           plain stores and TMA store, non-causal (session 12: the non-unrolled loop is not
#           faster with the TMA store either; the icache idea does not hold)    (~6 min)
#   d256c   head dim 256 causal on the Gluon kernel: its bit-identity tests, then timings beside
#           the tl kernel and FA3 FP8, top-left and bottom-right (session 13: 1.03-1.20x the tl
#           kernel from 4k keys, 0.89x at 1k)                                   (~4 min)
#   launch  probe_launch_host.py: host vs GPU time of a kernel-only call at 1k / 4k keys with the
#           cached launch plan and direct compiled-kernel launch (fp8attn.kernel_launch) on and
#           off, FA3 FP8's call beside it; MIN_SEQLEN_K lowered to 1024 in the probe   (~2 min)
#   overhead bench_overhead.py: host vs GPU time a call (session 9, Q and K quantised in one
#           launch: 520 us host vs 501 us GPU at (4, 4096, 16, 128) causal)      (~1 min)
#   bench   bench_attention.py --quick --tl: ours (the default path: Gluon where the dispatch
#           takes the call), ours through the tl kernel there, FA3 FP8 / BF16, SDPA in the
#           same run                                                            (~3 min)
#   d256c512 causal hdim 256 at 512 / 1k keys: the persistent Gluon forms beside the tl
#           kernel the dispatch runs below 1k                                   (~3 min)
#   d256cshort the causal hdim-256 dispatch from 512 keys: GPU tests, then the one- and
#           two-Q-buffer forms timed at 512 / 768 keys                          (~7 min)
#   rmsedraws the default recipe's RMSE over twenty CUDA draws of FA3's outlier data, FA3 FP8
#           + the same rotation beside it per draw (run in session 26)          (~1 min)
#   sass    tests/test_sass_loop_skip.py in one process                        (~2 min)
#   bars    the cells at the 0.85x bar (hdim 64 from 1k, every 1k cell), five alternating readings
#           of ours and FA3 FP8 each (experiments/bar_repeats.py)                  (~3 min)
#   d64stages hdim 64, three consumers: the K / V ring two / three / four tiles deep,
#           non-causal 2k-16k, causal top-left 4k / 16k                          (~6 min)
#   (tail64 / tail64d, session 27's tail split, went with it in session 28: commit 65080c8)
#   d64short hdim 64 non-causal 1k-4k: the three-consumer kernel, split and persistent forms,
#           beside the Triton kernel the dispatch runs at 1k / 2k (run in session 28)  (~4 min)
#   d64mid  after d64short (session 28): the persistent two-Q-buffer TMA-store form beside the
#           one-CTA-a-block kernel non-causal 1.5k-16k, and causal top-left at 1k / 2k beside
#           the Triton kernel the dispatch runs there                           (~5 min)
#   d64disp after VARIANT_D64 took the persistent form (session 28): the hdim-64 GPU tests, then
#           the hdim-64 cells from 1.5k keys, five readings each beside FA3 FP8     (~9 min)
#   nt128   hdim 128 non-causal, the dispatched persistent kernels (TMA store up to 8k keys,
#           plain stores beyond) beside the same without the ping-pong turns, 2k-16k  (~5 min)
#   benchfull bench_attention.py without --quick: seqlen 512 to 16k, no tl columns  (~4 min)
#   benchq2 the same with --q-terms 1,2: two-term Q rows (the accurate recipe) beside them
#   quant96 session 29: the 12 / 20-factor rotations in LAYOUT 1 (in-thread): the quantiser's
#           GPU tests, then probe_quant_dims.py on the default and with FP8ATTN_QUANT_LAYOUT=0
#           (the tl.dot layout of before), then Phi-3's / Phi-2's shapes end to end  (~3 min)
#   shapes  experiments/probe_model_shapes.py: real models' shapes (GQA, head dims 96 / 80 /
#           32), kernel-only and end to end beside FA3 FP8 / BF16 (session 29)      (~3 min)
#   d96     head dims 80 / 96 / 112 on the 128 kernel (session 29): the GPU tests (the padded
#           calls, captures, output types), then Phi-3's and Phi-2's
#           shapes on the dispatch and on the tl kernel (FP8ATTN_GLUON=0)          (~6 min)
#   s30verify session 30: the GPU tests session 29 left unrun (two-term Q, attention, API, Q
#           search), Phi-3 / Phi-2 / Llama-3 shapes with FA3, two bar_repeats cells  (~3 min)
#   s30quant session 30: the quantiser's 12 / 20-factor rotation with a shared sum, the Q search
#           in the kernel at 80 / 96: GPU tests, timings against OLD_PKG (a copy of the
#           previous fp8attn/), the search's cost, Phi-3 / Phi-2 end to end       (~5 min)
#   varlen  session 30: the varlen GPU tests, then flash_attn_varlen_func (padded K / V starts,
#           and packed with FP8ATTN_VARLEN_ALIGN=0) beside FA3's varlen calls (FP8, BF16) and
#           the same tokens as one dense call (experiments/probe_varlen.py); since session 32
#           also the quantiser's GPU tests and the call's profile              (~4 min)
#   s32final session 32's final code: the attention, API, padded-rows and device-table GPU
#           tests, then probe_varlen.py and probe_varlen_host.py                (~6 min)
#   s33     session 33: FP8 varlen inputs packed by one kernel: tests, profile, speed (~4 min)
#   s33b    session 33: GPU tests under the device guard, FP8 (B, S, H, D) inputs' layout
#           copies beside FA3's FP8 call (probe_fp8_inputs.py)                  (~6 min)
#   s33final session 33's last changes: tests, varlen host time and speed    (~6 min)
#   s33last  session 33's last call: quantiser tests, the varlen FP8-cache example on
#           the GPU, varlen host time                                           (~5 min)
#   multigpu session 33, on two GPUs: inputs on a GPU that is not the current one, then the
#           GPU tests of the entry points guarded for it                        (~5 min)
#   fp8varlen session 32's pre-quantised FP8 varlen inputs: their GPU tests, then
#           probe_varlen.py (its ours_fp8 row beside FA3's FP8 varlen call)    (~3 min)
# Usage (on the device machine, wheels carried in .whl):
#   pip install --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:$PWD OUT=$OUT bash benchmarks/gluon_gpu.sh tests check
#   PYTHONPATH=/tmp/site:$PWD OUT=$OUT bash benchmarks/gluon_gpu.sh bench
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/results}
PY=${PYTHON:-python3}
s34host() {   # $1 rounds of (old tree, new tree) host-time probes, alternating
    for round in $(seq "$1"); do
        if [ -d .old_s33 ]; then
            timeout 120 $PY benchmarks/experiments/probe_host_time.py --package .old_s33 \
                --tag old --no-peers 2>&1 | grep -v "^ *warn" | tee -a "$OUT/probe_host_time.jsonl"
        fi
        timeout 200 $PY benchmarks/experiments/probe_host_time.py --tag new --jit \
            $([ "$round" = 1 ] && echo --profile) 2>&1 | grep -v "^ *warn" \
            | tee -a "$OUT/probe_host_time.jsonl" | grep -v "^ .*[0-9] "
    done
}

varlen_tests() {   # $1: the log's tag; every varlen test of the GPU-facing modules
    timeout 200 $PY -m pytest -q -n 12 -rf --tb=short tests/test_gluon_dispatch.py \
        tests/test_attention_gpu.py tests/test_attention_triton.py tests/test_api.py \
        tests/test_padded_rows.py tests/test_fp8_inputs.py -k "varlen" 2>&1 \
        | tail -8 | tee "$OUT/pytest_$1.log"
}

varlen_check() {   # $1: the log's tag, $2: head dim, $3: probe_varlen.py's time limit
    varlen_tests "$1"
    timeout "$3" $PY benchmarks/experiments/probe_varlen.py --head-dim "$2" \
        --json "$OUT/probe_varlen_d$2.json" 2>&1 | grep -v "^ *warn" | tail -6
}

varlen_speed() {   # $1 / $2: time limits of probe_varlen.py (speed) and probe_varlen_host.py
    timeout "$1" $PY benchmarks/experiments/probe_varlen.py --json "$OUT/probe_varlen.json" \
        2>&1 | grep -v "^ *warn" | tail -6
    timeout "$2" $PY benchmarks/experiments/probe_varlen_host.py 2>&1 \
        | grep -v "^ *warn" > "$OUT/probe_varlen_host.log"; grep "^==" "$OUT/probe_varlen_host.log"
}

mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for stage in "$@"; do
    date -u +"%Y-%m-%d %H:%M:%S UTC: $stage"
    case $stage in
    tests)
        timeout 500 $PY -m pytest -q -n 12 -rf tests/test_gluon_dispatch.py tests/test_q_search.py \
            tests/test_attention_gpu.py tests/test_attention_triton.py tests/test_api.py \
            tests/test_two_term_q.py tests/test_quant.py tests/test_key_order.py \
            tests/test_device_tables.py tests/test_hadamard.py tests/test_kernel_launch.py \
            2>&1 | tail -40 | tee "$OUT/pytest_gluon.log"
        # in one process: two of its builds failed in cuobjdump among the 12 workers
        # (session 25), not alone
        timeout 240 $PY -m pytest -q -rf --tb=short tests/test_sass_loop_skip.py 2>&1 \
            | tail -30 | tee "$OUT/pytest_sass.log" ;;
    check)
        timeout 280 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 75 \
            --variants pingpong_ovl_s3,pingpong_ovl_s3_persist,pingpong_ovl_s3_persist_ts2 \
            --causal top_left --seqlens 1024,4096,16384 \
            --json "$OUT/gluon_check_top_left.json" 2>&1 | tail -8
        timeout 200 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 75 \
            --variants pingpong_ovl_s3,pingpong_ovl_s3_persist_ts2 \
            --causal bottom_right --seqlens 1024,4096,16384 \
            --json "$OUT/gluon_check_bottom_right.json" 2>&1 | tail -8 ;;
    persist)
        timeout 300 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 110 \
            --variants pingpong_ovl_u2_s3_persist,pingpong_ovl_u2_s3_persist_ts \
            --seqlens 1024,2048,4096,16384 --json "$OUT/gluon_check_persist.json" 2>&1 \
            | tail -8 ;;
    d64)
        timeout 330 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 --head-dim 64 \
            --variants tri_ovl_s3,tri_ovl_s3_persist,pingpong_ovl_u2_s3_persist \
            --seqlens 1024,4096,16384 --json "$OUT/gluon_check_d64_tri.json" 2>&1 | tail -8 ;;
    d64c)
        for c in top_left bottom_right; do
            timeout 150 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 70 --head-dim 64 \
                --variants tri_ovl_s3,tri_ovl_s3_persist_wgb --causal $c \
                --seqlens 4096,8192,16384 --json "$OUT/gluon_check_d64c_$c.json" 2>&1 | tail -6
        done ;;
    q2)
        timeout 150 $PY -m pytest -q -n 8 -p no:logging tests/test_gluon_dispatch.py \
            -k "persistent_matches" 2>&1 | grep -v DEBUG | tail -6 | tee "$OUT/pytest_q2.log"
        timeout 130 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 60 --head-dim 64 \
            --variants tri_ovl_s3_persist_wgb,tri_ovl_s3_persist_wgb_q2 --causal top_left \
            --seqlens 4096,8192,16384 --json "$OUT/gluon_check_q2_d64c.json" 2>&1 | tail -6
        timeout 110 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 50 \
            --variants pingpong_ovl_s3_persist_ts2,pingpong_ovl_s3_persist_ts2_q2 \
            --causal top_left --seqlens 1024,4096 --json "$OUT/gluon_check_q2_c.json" 2>&1 \
            | tail -6
        timeout 120 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 60 \
            --variants pingpong_ovl_u2_s3_persist_ts,pingpong_ovl_u2_s3_persist_ts_q2 \
            --seqlens 1024,4096,16384 --json "$OUT/gluon_check_q2_nc.json" 2>&1 | tail -6 ;;
    licm)
        v=pingpong_ovl_u2_s3_persist_ts,pingpong_ovl_u2_s3_persist_ts_licm
        timeout 200 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 60 \
            --variants $v,pingpong_ovl_u2_s3_persist \
            --seqlens 1024,4096,16384 --json "$OUT/gluon_check_licm_nc.json" 2>&1 | tail -8
        v=pingpong_ovl_s3_persist_ts2,pingpong_ovl_s3_persist_ts2_licm
        timeout 150 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 60 \
            --variants $v,pingpong_ovl_s3 \
            --causal bottom_right --seqlens 1024,4096,16384 \
            --json "$OUT/gluon_check_licm_c.json" 2>&1 | tail -8 ;;
    licm64)
        timeout 150 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 60 --head-dim 64 \
            --variants tri_ovl_s3_persist_wgb,tri_ovl_s3_persist_wgb_licm --causal top_left \
            --seqlens 4096,8192,16384 --json "$OUT/gluon_check_licm_d64c.json" 2>&1 | tail -6
        timeout 120 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 60 --head-dim 64 \
            --variants tri_ovl_s3,tri_ovl_s3_persist --seqlens 4096,16384 \
            --json "$OUT/gluon_check_licm_d64.json" 2>&1 | tail -6 ;;
    longc)
        # session 17: causal hdim-128 dispatch on persistent CTAs at every length
        timeout 150 $PY -m pytest -q -n 8 -p no:logging tests/test_gluon_dispatch.py \
            -k "gpu_gluon_path_same_bits or causal_persistent_under or causal_schedule_under" \
            2>&1 | grep -v DEBUG | tail -6 | tee "$OUT/pytest_longc.log" ;;
    ovl64)
        # session 17, offline: two consumers at hdim 64, persistent and not unrolled, keep the
        # whole softmax under P @ V (gluon_compile softmax_under_pv); the three-consumer kernels
        # cannot (160 registers). Causal 4k is the open target (tl kernel 0.82x FA3 FP8)
        timeout 200 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 90 --head-dim 64 \
            --variants pingpong_ovl_s3_persist_ts2,tri_ovl_s3_persist_wgb --causal top_left \
            --seqlens 4096,16384 --json "$OUT/gluon_check_ovl64_c.json" 2>&1 | tail -6
        timeout 200 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 90 --head-dim 64 \
            --variants pingpong_ovl_s3_persist_ts,tri_ovl_s3 --seqlens 4096,16384 \
            --json "$OUT/gluon_check_ovl64_nc.json" 2>&1 | tail -6 ;;
    ovl128)
        # session 17: hdim 128 non-causal, the loop not unrolled (full overlap now) beside the
        # dispatched unrolled one; then clock-stamp traces of the causal kernel in both
        # alignments (session 16's 3-6% bottom-right gap, before the LICM fix)
        timeout 200 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 90 \
            --variants pingpong_ovl_s3_persist_ts,pingpong_ovl_u2_s3_persist_ts \
            --seqlens 1024,4096,16384 --json "$OUT/gluon_check_ovl128_nc.json" 2>&1 | tail -6
        for c in top_left bottom_right; do
            timeout 100 $PY benchmarks/experiments/gluon_trace.py \
                --variants pingpong_ovl_s3_persist_ts2 --seqlens 1024,4096 --causal $c \
                --json "$OUT/trace_$c.json" 2>&1 | tail -3
        done ;;
    store)
        # session 18: causal hdim 128 with its output through one full-width TMA store (0 B
        # spilled offline) against the dispatched two half-width ones (24 B; the second waits
        # for the first to leave shared memory: ~0.8 tile-times a work item), each with one
        # and two Q buffers; then hdim 64 causal with two Q buffers
        v=pingpong_ovl_s3_persist_ts2,pingpong_ovl_s3_persist_ts
        timeout 330 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 90 \
            --variants $v,pingpong_ovl_s3_persist_ts2_q2,pingpong_ovl_s3_persist_ts_q2 \
            --causal top_left --seqlens 1024,4096,16384 \
            --json "$OUT/gluon_check_store_c.json" 2>&1 | tail -8
        timeout 200 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 90 --head-dim 64 \
            --variants tri_ovl_s3_persist_wgb,tri_ovl_s3_persist_wgb_q2 --causal top_left \
            --seqlens 4096,8192 --json "$OUT/gluon_check_store_d64c.json" 2>&1 | tail -6 ;;
    nc128)
        # session 18: non-causal hdim 128, the two dispatched variants (TMA store up to 8k
        # keys, plain stores beyond) beside the loop not unrolled with the TMA store, with one
        # and two Q buffers (the causal kernel's session-18 form)
        v=pingpong_ovl_u2_s3_persist_ts,pingpong_ovl_u2_s3_persist
        timeout 380 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 90 \
            --variants $v,pingpong_ovl_s3_persist_ts,pingpong_ovl_s3_persist_ts_q2 \
            --seqlens 1024,4096,16384 --json "$OUT/gluon_check_nc128.json" 2>&1 | tail -8 ;;
    trace256)
        # session 18: where a head-dim-256 KV tile's time goes (per-tile clock stamps of the
        # dispatched kernel: turn waits, S GEMM, softmax), non-causal and causal
        timeout 150 $PY benchmarks/experiments/gluon_trace_tiles.py --seqlens 4096,16384 \
            --json "$OUT/trace256.json" 2>&1 | tail -3
        timeout 150 $PY benchmarks/experiments/gluon_trace_tiles.py --seqlens 4096,16384 \
            --causal top_left --json "$OUT/trace256_c.json" 2>&1 | tail -3 ;;
    d256q)
        # session 18 experiment (branch wip/s18-d256-qreg): hdim 256 with Q as the register
        # operand of Q K^T (pv_pipe 2), beside the dispatched kernel, non-causal and causal;
        # then per-tile traces of both
        v=pingpong_n64_s3_pipe,pingpong_n64_s3_qreg
        timeout 250 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 110 --head-dim 256 \
            --variants $v --seqlens 4096,16384 --json "$OUT/gluon_check_d256q.json" 2>&1 | tail -6
        timeout 250 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 110 --head-dim 256 \
            --variants $v --causal top_left --seqlens 4096,16384 \
            --json "$OUT/gluon_check_d256q_c.json" 2>&1 | tail -6
        timeout 150 $PY benchmarks/experiments/gluon_trace_tiles.py --variants $v \
            --seqlens 16384 --json "$OUT/trace256q.json" 2>&1 | tail -3 ;;
    d256t)
        # session 19: hdim 256, the dispatched kernel beside Q in registers, the tree row max
        # and no turns (bits, timings at 1k-16k, non-causal and causal), then per-tile traces
        v=pingpong_n64_s3_pipe,pingpong_n64_s3_qreg,pingpong_n64_s3_qreg_tree
        timeout 330 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 110 --head-dim 256 \
            --variants $v,pingpong_n64_s3_qreg_tree_noturn --seqlens 1024,4096,16384 \
            --json "$OUT/gluon_check_d256t.json" 2>&1 | tail -8
        timeout 300 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 110 --head-dim 256 \
            --variants $v,pingpong_n64_s3_qreg_tree_noturn --causal top_left \
            --seqlens 4096,16384 --json "$OUT/gluon_check_d256t_c.json" 2>&1 | tail -8
        timeout 120 $PY benchmarks/experiments/gluon_trace_tiles.py \
            --variants pingpong_n64_s3_qreg_tree,pingpong_n64_s3_qreg_tree_noturn \
            --seqlens 16384 --json "$OUT/trace256t.json" 2>&1 | tail -3 ;;
    d256n128)
        # session 19 experiment: hdim 256 with 128-key tiles (spilling offline) beside the
        # dispatched 64-key kernel; not the tl kernel's bits (other tiles)
        v=pingpong_n64_s3_qreg,pingpong_n128_s2_pipe
        timeout 200 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 --head-dim 256 \
            --variants $v --seqlens 4096,16384 --json "$OUT/gluon_check_d256n128.json" 2>&1 | tail -6
        timeout 100 $PY benchmarks/experiments/gluon_trace_tiles.py --variants pingpong_n128_s2_pipe \
            --seqlens 16384 --json "$OUT/trace256n128.json" 2>&1 | tail -3 ;;
    d256n128c)
        # session 19: the hdim-256 bit tests (both tile sizes, the 128-key variants directly),
        # then the 128-key variants causal, with turns and without
        timeout 170 $PY -m pytest -q -n 12 -rf tests/test_gluon_dispatch.py \
            -k "hdim256 or 128_key" 2>&1 | tail -5 | tee "$OUT/pytest_d256.log"
        timeout 190 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 --head-dim 256 \
            --variants pingpong_n128_s2_pipe,pingpong_n128_s2_pipe_noturn --causal top_left \
            --seqlens 4096,16384 --json "$OUT/gluon_check_d256n128_c.json" 2>&1 | tail -6 ;;
    d256e)
        # session 19's eighths (merged in session 20): hdim 256 on 128-key tiles with each P @ V
        # quarter as two eighth-width GEMMs (fewer spills), turns or not, Q in registers;
        # the bit tests first, then non-causal timings beside the dispatched kernel
        timeout 150 $PY -m pytest -q -n 12 -rf tests/test_gluon_dispatch.py -k "128_key" \
            2>&1 | tail -5 | tee "$OUT/pytest_d256e.log"
        v=pingpong_n128_s2_pipe,pingpong_n128_s2_eighths,pingpong_n128_s2_eighths_noturn
        timeout 420 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 --head-dim 256 \
            --variants $v,pingpong_n128_s2_eighths_qreg,pingpong_n128_s3_eighths \
            --seqlens 4096,16384 \
            --json "$OUT/gluon_check_d256e.json" 2>&1 | tail -8 ;;
    d256ec)
        # the same variants causal (top-left), beside the dispatched 64-key causal kernel
        v=pingpong_n128_s2_pipe,pingpong_n128_s2_eighths,pingpong_n128_s2_eighths_noturn
        timeout 330 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 --head-dim 256 \
            --variants $v,pingpong_n64_s3_qreg_tree_noturn --causal top_left \
            --seqlens 4096,16384 --json "$OUT/gluon_check_d256e_c.json" 2>&1 | tail -8 ;;
    d256nt)
        # session 21: the pipelined quarters without turns ran +2.5 / +4% over the dispatched
        # (with turns) at 4k / 16k non-causal in d256ep (removed stage); a second same-run
        # reading, order swapped
        timeout 200 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 --head-dim 256 \
            --variants pingpong_n128_s2_pipe_noturn,pingpong_n128_s2_pipe --seqlens 4096,16384 \
            --json "$OUT/gluon_check_d256nt.json" 2>&1 | tail -6 ;;
    d256ts)
        # session 21 (not run yet): the hdim-256 output quarters through shared memory and one
        # TMA store each (tma_store 1 / 2: one / two (64, 64) tiles a warpgroup), against the
        # plain stores' ~4-5k cycles a CTA (trace1k): bits (both kinds, fp16 / fp32 outputs),
        # then timings beside the dispatched forms, non-causal and causal 1k-16k (causal 1k
        # runs the tl kernel: the "ours" row)
        timeout 200 $PY -m pytest -q -n 12 -rf tests/test_gluon_dispatch.py \
            -k "noturn_ts or tma_store_other" 2>&1 | tail -5 | tee "$OUT/pytest_d256ts.log"
        v=pingpong_n128_s2_pipe_noturn,pingpong_n128_s2_pipe_noturn_ts
        timeout 240 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 --head-dim 256 \
            --variants $v,pingpong_n128_s2_pipe_noturn_ts2 --seqlens 1024,4096,16384 \
            --json "$OUT/gluon_check_d256ts.json" 2>&1 | tail -7
        v=pingpong_n128_s2_eighths_noturn,pingpong_n128_s2_eighths_noturn_ts
        timeout 360 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 --head-dim 256 \
            --variants $v,pingpong_n128_s2_eighths_noturn_ts2 --causal top_left \
            --seqlens 1024,4096,16384 --json "$OUT/gluon_check_d256ts_c.json" 2>&1 | tail -7 ;;
    trace256ts)
        # the per-CTA stamps of the TMA-store forms at 1k / 4k (the store's share, trace1k's)
        timeout 150 $PY benchmarks/experiments/gluon_trace_tiles.py --seqlens 1024,4096 \
            --variants pingpong_n128_s2_pipe_noturn_ts,pingpong_n128_s2_pipe_noturn_ts2 \
            --json "$OUT/trace256_ts.json" 2>&1 | tail -4 ;;
    d64ts)
        # session 22: the three hdim-64 consumers' output through shared memory and TMA (one
        # (64, 64) tile a warpgroup), after the hdim-256 TMA store's 1.2x at 1k: bits (one CTA
        # a block and persistent, fp16 / fp32 outputs), then timings beside the dispatched
        # forms, non-causal 1k-16k and causal top-left 4k-16k
        timeout 150 $PY -m pytest -q -n 12 -rf tests/test_gluon_dispatch.py -k "tri_tma_store" \
            2>&1 | tail -5 | tee "$OUT/pytest_d64ts.log"
        timeout 150 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 70 --head-dim 64 \
            --variants tri_ovl_s3,tri_ovl_s3_ts --seqlens 1024,4096,16384 \
            --json "$OUT/gluon_check_d64ts.json" 2>&1 | tail -6
        timeout 200 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 90 --head-dim 64 \
            --variants tri_ovl_s3_persist_wgb_q2,tri_ovl_s3_persist_wgb_q2_ts --causal top_left \
            --seqlens 4096,8192,16384 --json "$OUT/gluon_check_d64ts_c.json" 2>&1 | tail -6 ;;
    d256persist)
        # session 22 (not run yet): head dim 256 on persistent CTAs with the TMA store (the
        # item's stores drain under the next item's tiles; _q2: the next item's Q loads under
        # this item's tiles), against the 1k keys' fixed cost a CTA (Q wait ~2k cycles, store
        # ~2.2k with TMA, trace256ts): bits, non-causal timings beside the dispatched form, then
        # per-tile stamps (session 20's persistent form ran 9% slower a tile, unexplained)
        timeout 200 $PY -m pytest -q -n 12 -rf tests/test_gluon_dispatch.py \
            -k "hdim256_persistent" 2>&1 | tail -5 | tee "$OUT/pytest_d256persist.log"
        # (_licm: the item loop with loop-invariant code motion: 20 B spilled offline against
        # 428 for the dispatched kernel)
        p=pingpong_n128_s2_pipe_noturn_ts2
        # (session 23 also timed ${p}_persist_q2_licm: two Q buffers, whose causal bits were
        # wrong until session 25)
        v=$p,${p}_persist,${p}_persist_licm
        timeout 330 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 120 --head-dim 256 \
            --variants $v --seqlens 1024,4096,16384 \
            --json "$OUT/gluon_check_d256persist.json" 2>&1 | tail -7
        timeout 150 $PY benchmarks/experiments/gluon_trace_tiles.py --seqlens 1024,16384 \
            --variants $p,${p}_persist,${p}_persist_licm \
            --json "$OUT/trace256_persist.json" 2>&1 | tail -6 ;;
    d256persistc)
        # the causal forms (eighths, no turns, TMA store) on persistent CTAs, top-left
        p=pingpong_n128_s2_eighths_noturn_ts2
        # (the _q2 forms gave wrong causal bits until session 25: q2diag)
        v=$p,${p}_persist,${p}_persist_licm
        timeout 420 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 150 --head-dim 256 \
            --variants $v --causal top_left \
            --seqlens 1024,4096,16384 --json "$OUT/gluon_check_d256persist_c.json" 2>&1 | tail -7 ;;
    q2diag)
        # session 23: where the two-Q-buffer persistent hdim-256 kernel's causal bits differ
        # (work item, CTA, position in the CTA's run, warpgroup half, head-dim quarter)
        timeout 150 $PY benchmarks/experiments/q2_causal_diag.py 2>&1 | tee "$OUT/q2diag.jsonl" \
            | cut -c1-1500 ;;
    q2nc)
        timeout 150 $PY benchmarks/experiments/q2_causal_diag.py --non-causal 2>&1 \
            | tee "$OUT/q2nc_bits.jsonl" | cut -c1-300
        timeout 150 $PY benchmarks/experiments/q2_causal_diag.py 2>&1 | tee "$OUT/q2diag.jsonl" \
            | cut -c1-1800
        p=pingpong_n128_s2_pipe_noturn_ts2
        timeout 240 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 --head-dim 256 \
            --variants $p,${p}_persist_licm,${p}_persist_licm_q2 --seqlens 1024,2048,4096 \
            --json "$OUT/gluon_check_d256q2nc.json" 2>&1 | tail -8 ;;
    q2kv)
        # the two-Q-buffer causal failure again: are the wrong rows made with a K / V tile of
        # the previous item (the ring slot's earlier content)?
        timeout 150 $PY benchmarks/experiments/q2_causal_diag.py --only-q2 2>&1 \
            | tee "$OUT/q2diag_kv.jsonl" | cut -c1-1500 ;;
    q2san)
        # session 24: compute-sanitizer on the two-Q-buffer causal form: memcheck on the shape
        # with one item a CTA (an illegal memory access), racecheck on one with wrong rows
        export TRITON_CACHE_DIR="$OUT/tcache"
        cd benchmarks/experiments
        timeout 200 compute-sanitizer --tool memcheck --print-limit 8 $PY q2_sanitize.py \
            --shape crash 2>&1 | tail -60 | tee "$OUT/q2san_memcheck.log"
        for f in $(find "$OUT/tcache" -name "*.cubin"); do
            cuobjdump -sass "$f" > "$OUT/$(basename "$f").sass" 2>&1; done
        timeout 200 compute-sanitizer --tool racecheck --print-limit 8 $PY q2_sanitize.py \
            --shape rows 2>&1 | tail -40 | tee "$OUT/q2san_racecheck.log"
        rm -rf "$OUT/tcache"; cd ../.. ;;
    q2short)
        p=pingpong_n128_s2_pipe_noturn_ts2
        timeout 240 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 --head-dim 256 \
            --variants $p,${p}_persist_licm,${p}_persist_licm_q2 --seqlens 512,1024,1536 \
            --json "$OUT/gluon_check_d256q2short.json" 2>&1 | tail -8 ;;
    s25)
        # session 25 (run then): (1) hdim 64 non-causal, warpgroups with no rows in the last
        # query block only releasing the tiles (wg_bounds non-causal): bits, then timed
        # beside the dispatched tri_ovl_s3 (3-7% slower: backed out with its test, so
        # tri_ovl_s3_wgb times the plain form now); (2) hdim 256 causal with two Q buffers,
        # the masked tiles reading Q through a view ptxas cannot merge (session 24's
        # miscompile): bits (the shapes that failed), then timed beside VARIANT_D256_CAUSAL,
        # top-left
        timeout 200 $PY -m pytest -q -n 12 --tb=line -rf tests/test_gluon_dispatch.py \
            -k "wgb_non_causal or hdim256_persistent_same_bits or tri_persistent" 2>&1 \
            | tail -25 | tee "$OUT/pytest_s25.log"
        timeout 150 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 70 --head-dim 64 \
            --variants tri_ovl_s3,tri_ovl_s3_wgb --seqlens 2048,4096,8192,16384 \
            --json "$OUT/gluon_check_d64wgb.json" 2>&1 | tail -6
        p=pingpong_n128_s2_eighths_noturn_ts2_persist_licm
        timeout 210 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 --head-dim 256 \
            --variants $p,${p}_q2 --causal top_left --seqlens 1024,2048,4096 \
            --json "$OUT/gluon_check_d256q2c.json" 2>&1 | tail -6 ;;
    d256c512)
        # session 25: causal hdim 256 at 512 keys runs the tl kernel (0.60x FA3 FP8 in the full
        # bench); the persistent Gluon forms (one and two Q buffers) beside it at 512 / 1k (the
        # one-buffer child timed out at 100 s then)
        p=pingpong_n128_s2_eighths_noturn_ts2_persist_licm
        timeout 240 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 --head-dim 256 \
            --variants $p,${p}_q2 --causal top_left --seqlens 512,1024 \
            --json "$OUT/gluon_check_d256c512.json" 2>&1 | tail -6 ;;
    d256cshort)
        # the dispatch from 512 keys causal: its GPU tests (run in session 25 with the
        # two-Q-buffer form dispatched below 1k into bf16 and the one-buffer form into fp32;
        # the one-buffer form everywhere since, as timed), then both forms at 512 / 768 keys
        timeout 120 $PY -m pytest -q -n 12 --tb=line -rf tests/test_gluon_dispatch.py \
            -k "hdim256_short_causal or hdim256_at_1k" 2>&1 | tail -8 \
            | tee "$OUT/pytest_d256cshort.log"
        p=pingpong_n128_s2_eighths_noturn_ts2_persist_licm
        timeout 330 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 150 --head-dim 256 \
            --variants $p,${p}_q2 --causal top_left --seqlens 512,768 \
            --json "$OUT/gluon_check_d256cshort.json" 2>&1 | tail -6 ;;
    gap256)
        # session 22 (not run yet): why the hdim-256 TMA store gained 16-21% where the per-CTA
        # clock stamps shortened a CTA 3-10%: the GPU-wide timer at each CTA's entry and exit
        # and its SM (analyse_gaps: an SM's idle time between CTAs), plain stores against TMA
        v=pingpong_n128_s2_pipe_noturn,pingpong_n128_s2_pipe_noturn_ts2
        timeout 150 $PY benchmarks/experiments/gluon_trace_tiles.py --seqlens 1024,4096 \
            --variants $v --json "$OUT/trace256_gap.json" 2>&1 | tail -4 ;;
    d64path)
        # the GPU tests of the hdim-64 dispatch and the three-consumer kernels (session 22:
        # causal calls through TMA from 4k keys)
        # (session 27: 200 s cut it short of its last tests; each compiles for 10-17 s)
        timeout 420 $PY -m pytest -q -n 12 -rf tests/test_gluon_dispatch.py -k "hdim64 or tri" \
            2>&1 | tail -5 | tee "$OUT/pytest_d64path.log" ;;
    trace1k)
        # session 20 (run in session 21): where the hdim-256 kernel's 1k-key calls lose 27% against
        # 4k: per-CTA stamps (Q wait, to the first tile, the loop, the store) beside the
        # per-tile ones, non-causal (dispatched) and causal (dispatched: eighths, no turns)
        timeout 200 $PY benchmarks/experiments/gluon_trace_tiles.py --seqlens 1024,4096,16384 \
            --json "$OUT/trace256_cta.json" 2>&1 | tail -4
        timeout 150 $PY benchmarks/experiments/gluon_trace_tiles.py --causal top_left \
            --variants pingpong_n128_s2_eighths_noturn --seqlens 1024,4096,16384 \
            --json "$OUT/trace256_cta_c.json" 2>&1 | tail -4 ;;
    n256)
        # session 20 (run in session 21): hdim 128 non-causal on 256-key tiles (plain ping-pong: the
        # overlap kernels spill there), inputs with 256-key descale blocks: bits against the tl
        # kernel on 256-key tiles, then timings beside the dispatched kernel and the plain
        # ping-pong on 128-key tiles (the check rows compare with the tl kernel's 128-key
        # tiles: other bits, both RMSEs against the oracle)
        timeout 150 $PY -m pytest -q -n 12 -rf tests/test_gluon_dispatch.py -k "256_key_tiles" \
            2>&1 | tail -5 | tee "$OUT/pytest_n256.log"
        v=pingpong_ovl_u2_s3_persist_ts,pingpong_s2,pingpong_n256_s2,pingpong_n256_s3
        timeout 400 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 --block-kv 256 \
            --variants $v --seqlens 1024,4096,16384 --json "$OUT/gluon_check_n256.json" \
            2>&1 | tail -8 ;;
    tsloop)
        v=pingpong_ovl_u2_s3_persist,pingpong_ovl_u2_s3_persist_ts
        v=$v,pingpong_ovl_s3_persist,pingpong_ovl_s3_persist_ts
        timeout 150 $PY benchmarks/experiments/gluon_trace.py --variants $v \
            --seqlens 4096,16384 --json "$OUT/gluon_trace_tsloop.json" 2>&1 | tail -8
        timeout 330 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 75 --variants $v \
            --seqlens 1024,4096,16384 --json "$OUT/gluon_check_tsloop.json" 2>&1 | tail -8 ;;
    d256c)
        timeout 200 $PY -m pytest -q -n 8 -p no:logging --tb=short tests/test_gluon_dispatch.py \
            -k hdim256 2>&1 | grep -v DEBUG | tail -15 | tee "$OUT/pytest_d256c.log"
        timeout 180 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 --head-dim 256 \
            --variants pingpong_n64_s3_pipe --causal top_left --seqlens 1024,4096,16384 \
            --json "$OUT/gluon_check_d256_top_left.json" 2>&1 | tail -6
        timeout 150 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 --head-dim 256 \
            --variants pingpong_n64_s3_pipe --causal bottom_right --seqlens 4096,16384 \
            --json "$OUT/gluon_check_d256_bottom_right.json" 2>&1 | tail -6 ;;
    launch)
        timeout 300 $PY benchmarks/experiments/probe_launch_host.py \
            --json "$OUT/probe_launch_host.json" 2>&1 | tail -60 ;;
    overhead)
        timeout 300 $PY benchmarks/bench_overhead.py --profile 4,4096,16,128,causal \
            --out "$OUT" 2>&1 | tail -45 | tee "$OUT/bench_overhead.log" ;;
    bench)
        timeout 420 $PY benchmarks/bench_attention.py --quick --tl --no-cpu-emulation \
            --out "$OUT" 2>&1 | tail -30 | tee "$OUT/bench_gluon.log" ;;
    rmsedraws)
        # session 25 (run in session 26): the default recipe's RMSE over twenty CUDA draws of
        # FA3's outlier data beside FA3 FP8 + the same rotation on each draw (the benchmark's
        # row is draw 0, the highest of the twenty on the GPU too)
        timeout 200 $PY benchmarks/experiments/rmse_draws_gpu.py --seeds 20 \
            --json "$OUT/rmse_draws_gpu.json" 2>&1 | tail -3 ;;
    sass)
        # tests/test_sass_loop_skip.py alone, one process (session 25: two of its builds failed
        # in cuobjdump inside the 12-worker tests stage, not offline)
        timeout 240 $PY -m pytest -q -rf --tb=short tests/test_sass_loop_skip.py 2>&1 \
            | tail -30 | tee "$OUT/pytest_sass.log" ;;
    bars)
        # session 26: the cells the 0.85x bar names (every hdim-64 cell from 1k, every 1k
        # cell), five alternating readings of ours and FA3 FP8 each (experiments/bar_repeats.py)
        cells=64:1024:0,64:2048:0,64:4096:0,64:8192:0,64:16384:0
        cells=$cells,64:1024:1,64:2048:1,64:4096:1,64:8192:1,64:16384:1
        cells=$cells,128:1024:0,128:1024:1,256:1024:0,256:1024:1
        timeout 400 $PY benchmarks/experiments/bar_repeats.py --repeats 5 --cells $cells \
            --json "$OUT/bar_repeats.json" 2>&1 | grep "^#" ;;
    d64stages)
        # session 26: the hdim-64 three-consumer kernels with a two- / four-deep K / V ring
        # beside the dispatched three-deep one, non-causal 2k-16k and causal top-left 4k-16k
        timeout 250 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 110 --head-dim 64 \
            --variants tri_ovl_s3,tri_ovl_s2,tri_ovl_s4 --seqlens 2048,4096,16384 \
            --json "$OUT/gluon_check_d64stages_nc.json" 2>&1 | tail -7
        timeout 250 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 110 --head-dim 64 \
            --variants tri_ovl_s3_persist_wgb_q2_ts,tri_ovl_s4_persist_wgb_q2_ts \
            --causal top_left --seqlens 4096,16384 \
            --json "$OUT/gluon_check_d64stages_c.json" 2>&1 | tail -6 ;;
    d64short)
        # prepared in session 27, run in session 28: hdim 64 non-causal at 1k-4k keys, where the
        # Triton kernel keeps 1k / 2k (2k: 0.854x FA3 FP8). The three-consumer kernel one CTA a
        # block beside its persistent forms, whose CTAs overlap one item's
        # epilogue with the next one's start: plain stores, two Q buffers, and two Q buffers
        # with the TMA store (tri_ovl_s3_persist_wgb_q2_ts: wg_bounds acts on causal calls
        # only, so non-causal it is that form; offline 20 B spilled against 24 for the others).
        # The session-28 run also timed session 27's tail split (tri_ovl_s3_tail2, since removed)
        v=tri_ovl_s3,tri_ovl_s3_persist,tri_ovl_s3_persist_q2
        v=$v,tri_ovl_s3_persist_wgb_q2_ts
        timeout 420 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 110 --head-dim 64 \
            --variants $v --seqlens 1024,2048,4096 --json "$OUT/gluon_check_d64short.json" \
            2>&1 | tail -9 ;;
    d64mid)
        # session 28: d64short found tri_ovl_s3_persist_wgb_q2_ts (VARIANT_D64_CAUSAL's form,
        # non-causal here: wg_bounds acts on causal calls only) 1.07x the Triton kernel at 2k and
        # 1.03x VARIANT_D64 at 4k; where does it stop winning, and does it win causal below 4k?
        timeout 330 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 110 --head-dim 64 \
            --variants tri_ovl_s3_persist_wgb_q2_ts,tri_ovl_s3 \
            --seqlens 1536,2048,8192,16384 --json "$OUT/gluon_check_d64mid_nc.json" 2>&1 | tail -5
        timeout 200 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 110 --head-dim 64 \
            --variants tri_ovl_s3_persist_wgb_q2_ts --causal top_left --seqlens 1024,2048,3072 \
            --json "$OUT/gluon_check_d64mid_c.json" 2>&1 | tail -4 ;;
    d64disp)
        # session 28: VARIANT_D64 (persistent, two Q buffers, TMA store) for non-causal calls
        # from 1.5k keys and causal ones from 2k: the hdim-64 GPU tests, then the cells read five
        # times beside FA3 FP8
        timeout 400 $PY -m pytest -q -n 12 -rf --tb=line tests/test_gluon_dispatch.py \
            -k "hdim64 or tri" 2>&1 | tail -8 | tee "$OUT/pytest_d64disp.log"
        cells=64:1536:0,64:2048:0,64:4096:0,64:8192:0,64:16384:0
        cells=$cells,64:2048:1,64:4096:1,64:16384:1
        timeout 190 $PY benchmarks/experiments/bar_repeats.py --repeats 5 --cells $cells \
            --json "$OUT/bar_repeats_d64disp.json" 2>&1 | grep "^#" ;;
    nt128)
        # session 28: do the hdim-128 non-causal kernels gain from dropping the ping-pong turns,
        # as hdim 256 did in session 21 (+2.5 / +4%)? Bits against the tl kernel first
        timeout 400 $PY benchmarks/experiments/gluon_gpu_check.py --timeout 100 \
            --variants pingpong_ovl_u2_s3_persist_ts,dual_ovl_u2_s3_persist_ts,pingpong_ovl_u2_s3_persist,dual_ovl_u2_s3_persist \
            --seqlens 2048,4096,16384 --json "$OUT/gluon_check_nt128.json" 2>&1 | tail -7 ;;
    benchfull)
        # the whole sweep of the issue (seqlen 512-16k), without the tl columns
        timeout 560 $PY benchmarks/bench_attention.py --no-cpu-emulation \
            --out "$OUT" 2>&1 | tail -50 | tee "$OUT/bench_full.log" ;;
    benchq2)
        # bench with the two-term Q rows beside the default ones (Recipe(q_terms=2): the
        # accurate recipe, timed with the kernels of session 17's LICM fix for the first time)
        timeout 420 $PY benchmarks/bench_attention.py --quick --tl --q-terms 1,2 \
            --no-cpu-emulation --out "$OUT" 2>&1 | tail -40 | tee "$OUT/bench_gluon.log" ;;
    d96)
        timeout 300 $PY -m pytest -q -n 12 -rf --tb=short tests/test_gluon_dispatch.py \
            -k "padded or capture or fp16_fp32 or host_path" 2>&1 \
            | tail -8 | tee "$OUT/pytest_d96.log"
        timeout 150 $PY benchmarks/experiments/probe_model_shapes.py --shapes phi3-mini,phi2 \
            --json "$OUT/probe_d96.json" 2>&1 | grep -v "^ *warn" | tail -7
        FP8ATTN_GLUON=0 timeout 120 $PY benchmarks/experiments/probe_model_shapes.py \
            --shapes phi3-mini,phi2 --json "$OUT/probe_d96_tl.json" 2>&1 | grep -v "^ *warn" \
            | tail -7 ;;
    quant96)
        timeout 150 $PY -m pytest -q -n 12 -rf --tb=short tests/test_quant.py 2>&1 \
            | tail -6 | tee "$OUT/pytest_quant96.log"
        timeout 60 $PY benchmarks/experiments/probe_quant_dims.py --dims 80,96,128 \
            --json "$OUT/probe_quant_dims_l1.json" 2>&1 | grep -v "^ *warn" | tail -9
        FP8ATTN_QUANT_LAYOUT=0 timeout 60 $PY benchmarks/experiments/probe_quant_dims.py \
            --dims 80,96 --json "$OUT/probe_quant_dims_l0.json" 2>&1 | grep -v "^ *warn" | tail -6
        timeout 120 $PY benchmarks/experiments/probe_model_shapes.py --shapes phi3-mini,phi2 \
            --json "$OUT/probe_quant96_shapes.json" 2>&1 | grep -v "^ *warn" | tail -7 ;;
    s30verify)
        # session 30: what session 29 left unrun on the GPU after the 12 / 20-factor quantiser
        # and the padded head dims: the two-term, attention and API GPU tests, then Phi-3's /
        # Phi-2's / Llama-3's shapes with FA3 loaded (same-run end-to-end ratios), then two
        # bar_repeats cells through benchmarks/common.dispatch_quantized
        timeout 300 $PY -m pytest -q -n 12 -rf --tb=line tests/test_two_term_q.py \
            tests/test_attention_gpu.py tests/test_api.py tests/test_q_search.py 2>&1 \
            | tail -12 | tee "$OUT/pytest_s30verify.log"
        timeout 150 $PY benchmarks/experiments/probe_model_shapes.py \
            --shapes phi3-mini,phi2,llama3-8b-mha --json "$OUT/probe_s30verify.json" 2>&1 \
            | grep -v "^ *warn" | tail -12
        timeout 90 $PY benchmarks/experiments/bar_repeats.py --repeats 1 \
            --cells 64:2048:0,128:1024:1 --json "$OUT/bar_s30verify.json" 2>&1 | grep "^#" ;;
    s30quant)
        # session 30: the 12 / 20-factor rotation with the shared sum (fewer adds) and the Q
        # scale search in the kernel at those head dims: the quantiser's GPU tests, then the
        # rotated quantise at 80 / 96 alternating with the package in $OLD_PKG (the previous
        # commit's fp8attn/, if given), the Q search's time at 96 / 128, Phi-3 / Phi-2 end to end
        timeout 240 $PY -m pytest -q -n 12 -rf --tb=line tests/test_quant.py \
            tests/test_q_search.py tests/test_two_term_q.py 2>&1 | tail -8 \
            | tee "$OUT/pytest_s30quant.log"
        for r in 1 2; do
            if [ -n "$OLD_PKG" ]; then
                PYTHONPATH=$OLD_PKG:$PYTHONPATH timeout 60 $PY \
                    benchmarks/experiments/probe_quant_dims.py --dims 80,96 \
                    --json "$OUT/quant_dims_old_$r.json" 2>&1 | grep rotated | sed "s/^/old /"
            fi
            timeout 60 $PY benchmarks/experiments/probe_quant_dims.py --dims 80,96 \
                --json "$OUT/quant_dims_new_$r.json" 2>&1 | grep rotated | sed "s/^/new /"
        done
        timeout 120 $PY benchmarks/experiments/probe_q_search.py --hdims 96,128 --seqlens 4096 \
            --json "$OUT/probe_q_search_s30.json" 2>&1 | grep -v "^ *warn" | tail -8
        timeout 120 $PY benchmarks/experiments/probe_model_shapes.py --shapes phi3-mini,phi2 \
            --json "$OUT/probe_s30quant_shapes.json" 2>&1 | grep -v "^ *warn" | tail -7 ;;
    varlen)
        # session 30: variable-length batches (the Triton kernel) beside FA3's varlen calls and
        # the same tokens as one dense call (experiments/probe_varlen.py), with padded K / V
        # starts (the default since session 31) and packed (FP8ATTN_VARLEN_ALIGN=0); first
        # the varlen GPU tests (both forms, and a CUDA-graph capture)
        timeout 300 $PY -m pytest -q -n 8 -rf --tb=short tests/test_attention_triton.py \
            tests/test_attention_gpu.py tests/test_two_term_q.py -k "varlen or alignment" 2>&1 \
            | tail -6 | tee "$OUT/pytest_varlen.log"
        # session 32: K / V quantised straight into the padded rows (quant/padded_rows.py)
        timeout 300 $PY -m pytest -q -n 8 -rf --tb=short tests/test_padded_rows.py \
            tests/test_quant.py 2>&1 | tail -6 | tee "$OUT/pytest_quant.log"
        timeout 200 $PY -m pytest -q -n 8 -rf --tb=short tests/test_api.py 2>&1 | tail -6 \
            | tee "$OUT/pytest_api.log"
        timeout 240 $PY benchmarks/experiments/probe_varlen.py --json "$OUT/probe_varlen.json" \
            2>&1 | grep -v "^ *warn" | tail -6
        timeout 120 $PY benchmarks/experiments/probe_varlen_profile.py 2>&1 \
            | grep -v "^ *warn" | tee "$OUT/probe_varlen_profile.log" | tail -40
        timeout 120 $PY benchmarks/experiments/probe_varlen_host.py 2>&1 \
            | grep -v "^ *warn" > "$OUT/probe_varlen_host.log"; grep "^==" "$OUT/probe_varlen_host.log" ;;
    s32final)
        # session 32's final code: the GPU tests of what changed last (the tl kernel's varlen
        # clamps, the layout kernel, the device tables; the quantiser's ROW_MAP passed the
        # varlen stage), then the varlen speed and host time
        timeout 330 $PY -m pytest -q -n 12 -rf --tb=short tests/test_attention_gpu.py \
            tests/test_attention_triton.py tests/test_api.py tests/test_two_term_q.py \
            tests/test_padded_rows.py tests/test_device_tables.py 2>&1 | tail -12 \
            | tee "$OUT/pytest_final.log"
        varlen_speed 140 90 ;;
    fp8varlen)
        # session 32 (written, not yet run: no device time left): pre-quantised FP8 varlen
        # inputs on the GPU, then timed beside FA3's FP8 varlen call (probe_varlen's ours_fp8)
        timeout 200 $PY -m pytest -q -n 12 -rf --tb=short tests/test_attention_triton.py \
            tests/test_api.py tests/test_padded_rows.py -k "varlen or padded or layout or fp8" \
            2>&1 | tail -6 | tee "$OUT/pytest_fp8varlen.log"
        timeout 240 $PY benchmarks/experiments/probe_varlen.py --json "$OUT/probe_varlen.json" \
            2>&1 | grep -v "^ *warn" | tail -6 ;;
    s33)
        # session 33: FP8 varlen inputs with K / V packed by one kernel (padded_rows.pack_fp8_kv);
        # the tests (FP8 varlen, padded rows), the call's kernels, then the speed
        timeout 200 $PY -m pytest -q -n 12 -rf --tb=short tests/test_attention_triton.py \
            tests/test_api.py tests/test_padded_rows.py -k "varlen or padded or pack or fp8" \
            2>&1 | tail -8 | tee "$OUT/pytest_s33.log"
        timeout 120 $PY benchmarks/experiments/probe_varlen_profile.py 2>&1 \
            | grep -v "^ *warn" | tee "$OUT/probe_varlen_profile.log" | tail -40
        timeout 240 $PY benchmarks/experiments/probe_varlen.py --json "$OUT/probe_varlen.json" \
            2>&1 | grep -v "^ *warn" | tail -6 ;;
    s33b)
        # session 33: FP8 (B, S, H, D) inputs through flash_attn_func (what the layout copies
        # cost beside FA3's FP8 call), then the GPU tests of the entry points under the device
        # guard (one GPU: the guard is a no-op there, the two-GPU test skips)
        timeout 170 $PY benchmarks/experiments/probe_fp8_inputs.py \
            --json "$OUT/probe_fp8_inputs.json" 2>&1 | grep -v "^ *warn" | tail -12
        timeout 380 $PY -m pytest -q -n 12 -rf --tb=short tests/test_attention_gpu.py \
            tests/test_attention_triton.py tests/test_api.py tests/test_padded_rows.py \
            tests/test_hadamard.py tests/test_gluon_dispatch.py tests/test_quant.py \
            tests/test_multi_gpu.py tests/test_two_term_q.py tests/test_fp8_inputs.py 2>&1 \
            | tail -12 | tee "$OUT/pytest_guarded.log" ;;
    s33final)
        # session 33's last changes: the device guard's mend (hadamard's argument errors), the
        # varlen offsets checked in numpy; then varlen host time and speed
        timeout 240 $PY -m pytest -q -n 12 -rf --tb=short tests/test_hadamard.py \
            tests/test_fp8_inputs.py tests/test_api.py tests/test_attention_triton.py \
            tests/test_attention_gpu.py 2>&1 | tail -8 \
            | tee "$OUT/pytest_s33final.log"
        timeout 90 $PY benchmarks/experiments/probe_varlen_host.py 2>&1 \
            | grep -v "^ *warn" > "$OUT/probe_varlen_host.log"; grep "^==" "$OUT/probe_varlen_host.log"
        timeout 150 $PY benchmarks/experiments/probe_varlen.py --json "$OUT/probe_varlen.json" \
            2>&1 | grep -v "^ *warn" | tail -6 ;;
    s33last)
        # session 33's last GPU call: the quantiser's cached tile constants (every path), the
        # varlen FP8-cache example on the kernels, varlen host time again
        timeout 260 $PY -m pytest -q -n 12 -rf --tb=short tests/test_quant.py \
            tests/test_q_search.py tests/test_fp8_inputs.py tests/test_examples.py \
            tests/test_attention_gpu.py tests/test_api.py tests/test_padded_rows.py 2>&1 \
            | tail -8 | tee "$OUT/pytest_s33last.log"
        timeout 60 $PY examples/varlen_fp8_cache.py --device cuda 2>&1 | grep -v "^ *warn" \
            | tee "$OUT/varlen_fp8_cache_cuda.md"
        timeout 90 $PY benchmarks/experiments/probe_varlen_host.py 2>&1 \
            | grep -v "^ *warn" > "$OUT/probe_varlen_host.log"; grep "^==" "$OUT/probe_varlen_host.log" ;;
    s35)
        timeout 150 $PY -m pytest -q -n 12 -rf --tb=short tests/test_gluon_dispatch.py \
            -k "varlen" 2>&1 | tail -15 | tee "$OUT/pytest_s35_gluon_varlen.log"
        timeout 240 $PY -m pytest -q -n 12 -rf --tb=short tests/test_attention_gpu.py \
            tests/test_attention_triton.py tests/test_padded_rows.py tests/test_api.py \
            tests/test_varlen_offsets.py tests/test_fp8_inputs.py tests/test_examples.py \
            2>&1 | tail -15 | tee "$OUT/pytest_s35.log"
        varlen_speed 200 120 ;;
    s36)
        # session 36: varlen items handed to CTAs as they come free (dynamic=True, causal tiles
        # longest first); the varlen bits tests (dynamic, plain stores, static order), the
        # varlen GPU tests (capture, bad offsets), then the speed (ours_static: the old order)
        varlen_tests s36
        varlen_speed 200 100 ;;
    s37)
        varlen_check s37 128 240 ;;
    s37d96)
        varlen_check s37d96 96 240 ;;
    s38quant)
        # the dense quantiser's steps apart (Q + K launch, V, all three) beside a copy, an
        # empty graph and the varlen layout launch; then with every config autotuned
        for tune in "" all; do
            FP8ATTN_TUNE=$tune timeout 150 $PY benchmarks/experiments/probe_quant_split.py \
                --json "$OUT/probe_quant_split${tune:+_$tune}.json" 2>&1 | grep -v "^ *warn" | tail -3
        done ;;
    s40)
        timeout 330 $PY -m pytest -q -n 14 -rf --tb=short tests/test_call_plan.py tests/test_api.py \
            tests/test_attention_gpu.py tests/test_fp8_inputs.py tests/test_device_tables.py \
            tests/test_gluon_dispatch.py tests/test_varlen_offsets.py tests/test_padded_rows.py \
            tests/test_attention_triton.py 2>&1 | tail -12 | tee "$OUT/pytest_s40.log"
        timeout 110 $PY benchmarks/experiments/probe_host_time.py --tag plan --repeats 2 \
            2>&1 | grep -v "^ *warn" >> "$OUT/probe_host_time.jsonl"
        FP8ATTN_PLAN=0 timeout 60 $PY benchmarks/experiments/probe_host_time.py --tag noplan \
            --no-peers --repeats 2 2>&1 | grep -v "^ *warn" >> "$OUT/probe_host_time.jsonl"
        ;;
    s40b)
        timeout 300 $PY -m pytest -q -n 14 -rf --tb=short tests/test_call_plan.py tests/test_api.py \
            tests/test_attention_gpu.py tests/test_fp8_inputs.py tests/test_gluon_dispatch.py \
            tests/test_padded_rows.py 2>&1 | tail -12 | tee "$OUT/pytest_s40b.log"
        timeout 100 $PY benchmarks/experiments/probe_host_time.py --tag plan --repeats 2 \
            2>&1 | grep -v "^ *warn" >> "$OUT/probe_host_time.jsonl"
        ;;
    s40c)
        timeout 150 $PY -m pytest -q -n 14 -rf --tb=short tests/test_call_plan.py \
            tests/test_fp8_inputs.py tests/test_api.py 2>&1 | tail -6 | tee "$OUT/pytest_s40c.log"
        timeout 60 $PY benchmarks/experiments/probe_by_head.py 2>&1 | grep -v "^ *warn" \
            | tee "$OUT/probe_by_head.log"
        timeout 75 $PY benchmarks/experiments/probe_host_time.py --tag plan --repeats 2 \
            2>&1 | grep -v "^ *warn" >> "$OUT/probe_host_time.jsonl"
        ;;
    s41)
        timeout 150 $PY -m pytest -q -n 14 -rf --tb=short tests/test_call_plan.py \
            tests/test_fp8_inputs.py tests/test_api.py 2>&1 | tail -6 | tee "$OUT/pytest_s41.log" ;;
    s41b)
        # plans under torch.inference_mode (the recorder decomposes composite ops; tables built
        # as ordinary tensors): the call-plan and varlen-offset GPU tests, then infmode
        timeout 150 $PY -m pytest -q -n 14 -rf --tb=short tests/test_call_plan.py \
            tests/test_varlen_offsets.py tests/test_api.py 2>&1 | tail -6 \
            | tee "$OUT/pytest_s41b.log" ;;
    infmode)
        for mode in "--inference-mode" ""; do
            timeout 110 $PY benchmarks/experiments/probe_host_time.py --tag plan $mode --repeats 2 \
                2>&1 | grep -v "^ *warn" >> "$OUT/probe_host_time.jsonl"
        done
        ;;
    s40bench)
        timeout 560 $PY benchmarks/bench_attention.py --no-cpu-emulation \
            --out "$OUT" 2>&1 | tail -50 | tee "$OUT/bench_full.log" ;;
    s39plan)
        # call plans (fp8attn/call_plan.py): the GPU tests of the dense calls with plans on (the
        # third call of a kind in a test replays), then host time with plans and without
        timeout 330 $PY -m pytest -q -n 14 -rf --tb=short tests/test_call_plan.py tests/test_api.py \
            tests/test_attention_gpu.py tests/test_fp8_inputs.py tests/test_device_tables.py \
            tests/test_gluon_dispatch.py 2>&1 | tail -12 | tee "$OUT/pytest_s39plan.log"
        for round in 1 2; do
            timeout 75 $PY benchmarks/experiments/probe_host_time.py --tag plan --repeats 2 \
                $([ $round = 2 ] && echo --no-peers) 2>&1 | grep -v "^ *warn" >> "$OUT/probe_host_time.jsonl"
            FP8ATTN_PLAN=0 timeout 60 $PY benchmarks/experiments/probe_host_time.py --tag noplan \
                --no-peers --repeats 2 2>&1 | grep -v "^ *warn" >> "$OUT/probe_host_time.jsonl"
        done
        ;;
    s39plan2)
        # call plans replaying torch copies (clone / copy_): FP8 inputs on the Gluon kernel
        timeout 150 $PY -m pytest -q -n 14 -rf --tb=short tests/test_call_plan.py \
            tests/test_fp8_inputs.py tests/test_api.py 2>&1 | tail -6 | tee "$OUT/pytest_s39plan2.log"
        timeout 75 $PY benchmarks/experiments/probe_host_time.py --tag plan --repeats 2 \
            --no-peers 2>&1 | grep -v "^ *warn" >> "$OUT/probe_host_time.jsonl"
        FP8ATTN_PLAN=0 timeout 60 $PY benchmarks/experiments/probe_host_time.py --tag noplan \
            --no-peers --repeats 2 2>&1 | grep -v "^ *warn" >> "$OUT/probe_host_time.jsonl"
        ;;
    s39host)
        # host time of session 38's quantiser launches (Q, K and V in one; _quant_kernel launched
        # directly) against the tree before them: out/old_s38 = `git archive 991f52d fp8attn`
        # (carry it), alternating processes, hdim 128 and 96, two rounds (a first process
        # compiles its tree's kernels: about 60 s); first the quantiser's and the varlen GPU
        # tests (commits after session 38's last GPU run)
        timeout 150 $PY -m pytest -q -n 12 -rf --tb=short tests/test_quant.py \
            tests/test_key_order.py tests/test_padded_rows.py tests/test_api.py 2>&1 | tail -4 \
            | tee "$OUT/pytest_s39host.log"
        varlen_tests s39varlen      # _take_varlen_item (session 38's review): offline PTX only
        for round in 1 2; do
            for d in 128 96; do
                timeout 60 $PY benchmarks/experiments/probe_host_time.py --package out/old_s38 \
                    --tag old --no-peers --repeats 2 --head-dim $d 2>&1 | grep -v "^ *warn" \
                    >> "$OUT/probe_host_time.jsonl"
                timeout 60 $PY benchmarks/experiments/probe_host_time.py --tag new --no-peers \
                    --repeats 2 --head-dim $d 2>&1 | grep -v "^ *warn" >> "$OUT/probe_host_time.jsonl"
            done
        done
        grep -c '^{' "$OUT/probe_host_time.jsonl" ;;
    s38direct)
        # branch s38-quant-direct: _quant_kernel's chosen config launched straight through
        # kernel_launch after the autotuner's first call; the quantiser's GPU tests
        timeout 150 $PY -m pytest -q -n 12 -rf --tb=short tests/test_quant.py \
            tests/test_two_term_q.py tests/test_q_search.py tests/test_padded_rows.py 2>&1 \
            | tail -6 | tee "$OUT/pytest_s38direct.log" ;;
    s38triple)
        # V in Q's and K's quantiser launch: the quantiser / key-order / padded-rows / API /
        # attention GPU tests, the quantiser's and the varlen call's steps, then host time of
        # the tree before (out/old_s38, carried) and this one in alternating processes
        timeout 240 $PY -m pytest -q -n 12 -rf --tb=short tests/test_quant.py \
            tests/test_key_order.py tests/test_padded_rows.py tests/test_api.py \
            tests/test_attention_gpu.py tests/test_fp8_inputs.py 2>&1 | tail -8 \
            | tee "$OUT/pytest_s38triple.log"
        timeout 60 $PY benchmarks/experiments/probe_quant_split.py \
            --json "$OUT/probe_quant_split.json" 2>&1 | grep -v "^ *warn" | tail -2
        timeout 60 $PY benchmarks/experiments/probe_varlen_split.py --head-dim 128 \
            --json "$OUT/probe_varlen_split_d128.json" 2>&1 | grep -v "^ *warn" | tail -2
        for round in 1 2; do
            timeout 70 $PY benchmarks/experiments/probe_host_time.py --package out/old_s38 \
                --tag old --no-peers --repeats 2 2>&1 | grep -v "^ *warn" \
                >> "$OUT/probe_host_time.jsonl"
            timeout 70 $PY benchmarks/experiments/probe_host_time.py --tag new --no-peers \
                --repeats 2 2>&1 | grep -v "^ *warn" >> "$OUT/probe_host_time.jsonl"
        done
        grep -c '^{' "$OUT/probe_host_time.jsonl" ;;
    s38a)
        # the layout launch's 128-sequence steps: the varlen and padded-rows tests, the split
        # probe at hdim 128; then host time of the public calls with a cProfile of each
        timeout 60 $PY -m pytest -q -n 12 -rf --tb=short tests/test_padded_rows.py 2>&1 \
            | tail -3 | tee "$OUT/pytest_padded_rows.log"
        varlen_tests s38a
        timeout 60 $PY benchmarks/experiments/probe_varlen_split.py --head-dim 128 \
            --json "$OUT/probe_varlen_split_d128.json" 2>&1 | grep -v "^ *warn" | tail -2
        timeout 200 $PY benchmarks/experiments/probe_host_time.py --tag s38 --repeats 3 \
            --profile 2>&1 | grep -v "^ *warn" > "$OUT/probe_host_time.log"
        grep '^{' "$OUT/probe_host_time.log" | cut -c1-200 ;;
    s38configs)
        timeout 300 $PY benchmarks/experiments/probe_quant_configs.py \
            --json "$OUT/probe_quant_configs.json" 2>&1 | grep -v "^ *warn" | tail -40 ;;
    s37split)
        for d in 128 96; do
            timeout 100 $PY benchmarks/experiments/probe_varlen_split.py --head-dim $d \
                --json "$OUT/probe_varlen_split_d$d.json" 2>&1 | grep -v "^ *warn" | tail -3
        done ;;
    s38rowmap)
        timeout 200 $PY -m pytest -q -n 12 -rf --tb=short tests/test_padded_rows.py \
            tests/test_quant.py 2>&1 | tail -8 | tee "$OUT/pytest_rowmap.log"
        varlen_tests s38rowmap
        timeout 100 $PY benchmarks/experiments/probe_varlen_split.py --head-dim 96 \
            --json "$OUT/probe_varlen_split_d96.json" 2>&1 | grep -v "^ *warn" | tail -3
        timeout 150 $PY benchmarks/experiments/probe_varlen.py --head-dim 96 \
            --json "$OUT/probe_varlen_d96.json" 2>&1 | grep -v "^ *warn" | tail -6 ;;
    s38fields)
        varlen_tests s38fields
        timeout 200 $PY benchmarks/experiments/probe_varlen.py --json "$OUT/probe_varlen.json" \
            2>&1 | grep -v "^ *warn" | tail -6
        timeout 100 $PY benchmarks/experiments/probe_varlen_split.py \
            --json "$OUT/probe_varlen_split_d128.json" 2>&1 | grep -v "^ *warn" | tail -3 ;;
    s38pending)
        timeout 120 $PY -m pytest -q -n 12 -rf --tb=short tests/test_padded_rows.py 2>&1 \
            | tail -6 | tee "$OUT/pytest_padded_rows.log"
        varlen_tests s38pending
        for d in 128 96; do
            timeout 45 $PY benchmarks/experiments/probe_varlen_split.py --head-dim $d \
                --json "$OUT/probe_varlen_split_d$d.json" 2>&1 | grep -v "^ *warn" | tail -2
            timeout 130 $PY benchmarks/experiments/probe_varlen.py --head-dim $d \
                --json "$OUT/probe_varlen_d$d.json" 2>&1 | grep -v "^ *warn" | tail -4
        done ;;
    s36final)
        # session 36's final code: the varlen tests, then the speed (its untested non-causal
        # form, two Q buffers handed out, is the dispatch since session 37)
        varlen_check s36final 128 200 ;;
    s35final)
        # session 35's final code: causal varlen items heads minor; the varlen bits tests,
        # the varlen GPU tests (capture, bad offsets), then the speed
        timeout 150 $PY -m pytest -q -n 12 -rf --tb=short tests/test_gluon_dispatch.py \
            tests/test_attention_gpu.py tests/test_attention_triton.py -k "varlen" 2>&1 \
            | tail -8 | tee "$OUT/pytest_s35final.log"
        timeout 150 $PY benchmarks/experiments/probe_varlen.py --json "$OUT/probe_varlen.json" \
            2>&1 | grep -v "^ *warn" | tail -6 ;;
    s34)
        # session 34: repeated calls straight to the compiled kernels (kernel_launch.launch_call:
        # the quantiser, the tl attention kernel, the layout kernels), varlen offsets checked
        # once per tensor; the GPU tests of those paths, then host time against the tree in
        # .old_s33 (git archive of session 33's last commit, carried) and FA3, alternating
        timeout 330 $PY -m pytest -q -n 12 -rf --tb=short tests/test_varlen_offsets.py \
            tests/test_kernel_launch.py tests/test_fp8_inputs.py tests/test_padded_rows.py \
            tests/test_quant.py tests/test_attention_gpu.py tests/test_attention_triton.py \
            tests/test_api.py 2>&1 | tail -12 | tee "$OUT/pytest_s34.log"
        s34host 1 ;;
    s34host)
        s34host 1 ;;
    s34final)
        # session 34's final code: the GPU tests of the launch paths (the tl kernel is the
        # Gluon dispatch tests' reference), then host time of the old and new trees in
        # alternating processes, two rounds
        timeout 300 $PY -m pytest -q -n 12 -rf --tb=short tests/test_varlen_offsets.py \
            tests/test_kernel_launch.py tests/test_fp8_inputs.py tests/test_padded_rows.py \
            tests/test_quant.py tests/test_attention_gpu.py tests/test_attention_triton.py \
            tests/test_api.py tests/test_two_term_q.py tests/test_gluon_dispatch.py 2>&1 \
            | tail -12 | tee "$OUT/pytest_s34final.log"
        for round in 1 2; do
            timeout 70 $PY benchmarks/experiments/probe_host_time.py --package .old_s33 \
                --tag old --no-peers --repeats 2 2>&1 | grep -v "^ *warn" \
                >> "$OUT/probe_host_time.jsonl"
            timeout 90 $PY benchmarks/experiments/probe_host_time.py --tag new --repeats 2 \
                2>&1 | grep -v "^ *warn" >> "$OUT/probe_host_time.jsonl"
        done
        grep -c '^{' "$OUT/probe_host_time.jsonl" ;;
    multigpu)
        # session 33 (two GPUs): calls with inputs on a GPU other than the current one
        # (fp8attn/device_guard.py), then the GPU tests of the guarded entry points
        timeout 200 $PY -m pytest -q -rf --tb=short tests/test_multi_gpu.py 2>&1 | tail -12 \
            | tee "$OUT/pytest_multi_gpu.log"
        timeout 330 $PY -m pytest -q -n 12 -rf --tb=short tests/test_attention_gpu.py \
            tests/test_attention_triton.py tests/test_api.py tests/test_padded_rows.py \
            tests/test_hadamard.py tests/test_gluon_dispatch.py 2>&1 | tail -12 \
            | tee "$OUT/pytest_guarded.log" ;;
    shapes)
        timeout 420 $PY benchmarks/experiments/probe_model_shapes.py \
            --json "$OUT/probe_model_shapes.json" 2>&1 | grep -v "^ *warn" | tail -20 ;;
    *)
        echo "unknown stage $stage (tests, check, persist, d64, d64c, q2, licm, licm64, longc," \
             "ovl64, ovl128, store, nc128, trace256, d256t, tsloop, d256c, launch, overhead, bench," \
             "benchq2, d256ts, trace256ts, d64ts, ...: see the list above)" >&2
        exit 2 ;;
    esac
done
date -u +"%Y-%m-%d %H:%M:%S UTC: done"
