#!/usr/bin/env bash
# One device call for the two-term Q mode (Recipe.q_terms=2): timing of q_terms 1 vs 2 beside FA3
# FP8 (kernel only and end to end; hdim 128 / 256, seqlen 4096 / 16384, causal and not), the GPU
# RMSE of both on FA3's outlier case, then the GPU tests of the attention and quant modules.
#   PYTHONPATH=$PWD OUT=DIR bash benchmarks/twoterm_gpu.sh
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/results}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
date -u +"%Y-%m-%d %H:%M:%S UTC"
timeout ${BENCH_S:-200} ${PYTHON:-python3} benchmarks/bench_attention.py --out "$OUT" --hdims 128,256 \
    --seqlens 4096,16384 --q-terms 1,2 --no-cpu-emulation 2>&1 | tee "$OUT/bench.log"
date -u +"%Y-%m-%d %H:%M:%S UTC"
timeout ${TEST_S:-170} ${PYTHON:-python3} -m pytest -q -x -n 12 tests/test_two_term_q.py \
    tests/test_attention_gpu.py tests/test_attention_triton.py tests/test_quant.py 2>&1 \
    | tee "$OUT/pytest.log"
date -u +"%Y-%m-%d %H:%M:%S UTC"
