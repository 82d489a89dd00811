"""The Gluon fast path (attention/gluon_dispatch.py): which calls it takes, and on an sm_90 GPU
with Triton 3.6, the tl kernel's bits (with 128-key tiles) for the calls it takes. The kernel's
causal code on short shapes and its two-consumer head-dim-64 code (not dispatched: slower
there) are held to the tl kernel too.
"""
import dataclasses

import pytest
import torch
import triton

import fp8attn
from fp8attn import Recipe
from fp8attn.attention import gluon_dispatch, gluon_fwd, triton_fwd
from fp8attn.quant import quantize_qkv
from fp8attn.quant.key_order import to_natural

GOOD = dict(capability=(9, 0), triton_version="3.6.0", dtype=torch.float8_e4m3fn, head_dim=128,
            seqlen_q=4096, seqlen_k=4096, k_block=128, v_block=128, causal=None, varlen=False,
            two_terms=False, out_dtype=torch.bfloat16, acc_mode="tile",
            forced_config=False, contiguous=True, vt_ok=True, mma_order=True)


def test_reason_accepts_the_covered_call():
    assert gluon_dispatch.reason(**GOOD) is None
    # causal masks (bottom-right ones need at least as many keys as queries)
    for causal in ("top_left", "bottom_right"):
        assert gluon_dispatch.reason(**dict(GOOD, causal=causal)) is None
    assert gluon_dispatch.reason(**dict(GOOD, causal="top_left", seqlen_q=20000)) is None
    # per-head descales (one block for the whole sequence) are per-tile descales too
    assert gluon_dispatch.reason(**dict(GOOD, k_block=4096, v_block=5000)) is None
    assert gluon_dispatch.reason(**dict(GOOD, seqlen_q=100)) is None
    assert gluon_dispatch.reason(**dict(GOOD, seqlen_k=1024, causal="top_left")) is None
    assert gluon_dispatch.reason(**dict(GOOD, lse=True)) is None
    for dtype in (torch.float16, torch.float32):
        assert gluon_dispatch.reason(**dict(GOOD, out_dtype=dtype)) is None
    assert gluon_dispatch.reason(**dict(GOOD, two_terms=True, causal="top_left")) is None
    # head dim 64: three consumer warpgroups, causal or not, LSE or not
    assert gluon_dispatch.reason(**dict(GOOD, head_dim=64)) is None
    for causal in (None, "top_left", "bottom_right"):
        assert gluon_dispatch.reason(**dict(GOOD, head_dim=64, causal=causal, lse=True,
                                            seqlen_k=16384)) is None
    assert gluon_dispatch.reason(**dict(GOOD, head_dim=64, seqlen_q=100, k_block=4096)) is None
    # head dims 80 / 96 / 112 on the 128 kernel (session 29): as head dim 128
    for d in (80, 96, 112):
        assert gluon_dispatch.kernel_head_dim(d) == 128
        for causal in (None, "top_left", "bottom_right"):
            assert gluon_dispatch.reason(**dict(GOOD, head_dim=d, causal=causal, lse=True,
                                                two_terms=True)) is None
    # head dim 256: 128-key tiles, or 64-key ones where a descale block splits a 128-key tile,
    # without the LSE
    assert gluon_dispatch.reason(**dict(GOOD, head_dim=256)) is None
    assert gluon_dispatch.reason(**dict(GOOD, head_dim=256, k_block=64, v_block=192)) is None
    for causal in ("top_left", "bottom_right"):
        assert gluon_dispatch.reason(**dict(GOOD, head_dim=256, k_block=64, v_block=64,
                                            causal=causal)) is None
    # on 128-key tiles from MIN_SEQLEN_K_D256_N128 (512) keys: non-causal since session 24,
    # causal since session 25 (1k keys before)
    assert gluon_dispatch.MIN_SEQLEN_K_D256_N128 == 512
    for causal in (None, "top_left", "bottom_right"):
        assert gluon_dispatch.reason(**dict(
            GOOD, head_dim=256, seqlen_q=512, causal=causal,
            seqlen_k=gluon_dispatch.MIN_SEQLEN_K_D256_N128)) is None


@pytest.mark.parametrize("change,words", [
    (dict(capability=(9, 0 + 1)), "sm_90"),
    (dict(capability=(8, 9)), "sm_90"),
    (dict(triton_version="3.9.0"), "Triton"),
    (dict(dtype=torch.float8_e5m2), "e4m3"),
    (dict(head_dim=32), "head dim"),
    (dict(head_dim=64, two_terms=True), "two-term"),
    (dict(head_dim=64, seqlen_k=gluon_dispatch.MIN_SEQLEN_K_D64 - 1), "seqlen_k"),
    (dict(head_dim=64, causal="top_left", seqlen_k=gluon_dispatch.MIN_SEQLEN_K_D64_CAUSAL - 1),
     "seqlen_k"),
    (dict(head_dim=72), "head dim"),       # not a multiple of 16 (TMA's row alignment)
    (dict(head_dim=48), "head dim"),
    (dict(head_dim=144), "head dim"),
    (dict(head_dim=96, seqlen_k=gluon_dispatch.MIN_SEQLEN_K - 1), "seqlen_k"),
    (dict(head_dim=256, k_block=64, v_block=64, lse=True), "head dim 256"),
    (dict(head_dim=256, k_block=96), "k_block"),
    (dict(causal="bottom_right", seqlen_q=20000), "bottom-right"),
    (dict(causal="top_left", seqlen_k=gluon_dispatch.MIN_SEQLEN_K - 1), "seqlen_k"),
    (dict(varlen=True), "varlen"),
    (dict(two_terms=True, head_dim=256, k_block=64, v_block=64), "two-term"),
    (dict(out_dtype=torch.float8_e4m3fn), "bfloat16"),
    (dict(acc_mode="fp22"), "acc_mode"),
    (dict(forced_config=True), "config"),
    (dict(k_block=64), "k_block"),
    (dict(v_block=1), "v_block"),
    (dict(seqlen_k=1000, k_block=1024, v_block=1024), "seqlen_k"),
    (dict(seqlen_k=gluon_dispatch.MIN_SEQLEN_K - 1), "seqlen_k"),
    (dict(head_dim=256, k_block=64, v_block=64, seqlen_k=gluon_dispatch.MIN_SEQLEN_K_D256 - 1),
     "seqlen_k"),
    (dict(head_dim=256, seqlen_k=gluon_dispatch.MIN_SEQLEN_K_D256_N128 - 1), "seqlen_k"),
    (dict(head_dim=256, causal="bottom_right",
          seqlen_k=gluon_dispatch.MIN_SEQLEN_K_D256_N128 - 1), "seqlen_k"),
    (dict(head_dim=256, causal="top_left", seqlen_k=gluon_dispatch.MIN_SEQLEN_K_D256_N128 - 1),
     "seqlen_k"),
    (dict(head_dim=256, k_block=64, v_block=64, causal="top_left",
          seqlen_k=gluon_dispatch.MIN_SEQLEN_K_D256 - 1), "seqlen_k"),
    (dict(contiguous=False), "contiguous"),
    (dict(aligned=False), "aligned"),
    (dict(vt_ok=False), "V^T"),
    (dict(mma_order=False), "natural key order"),
])
def test_reason_names_what_is_not_covered(change, words):
    why = gluon_dispatch.reason(**dict(GOOD, **change))
    assert why is not None and words in why


def test_on_by_default_off_with_env_and_cuda_only(monkeypatch):
    x = torch.zeros(1, 1, 8, 128).to(torch.float8_e4m3fn)
    vt = torch.zeros(1, 1, 128, 16).to(torch.float8_e4m3fn)
    kw = dict(k_block=128, v_block=128, causal=None, varlen=False, q_lo=None,
              out_dtype=torch.bfloat16, acc_mode="tile", config=None)
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    assert "CUDA" in gluon_dispatch.why_not(x, x, vt, **kw)
    monkeypatch.setenv("FP8ATTN_GLUON", "0")
    assert "off" in gluon_dispatch.why_not(x, x, vt, **kw)


def test_kernel_config_rejects_split_options_outside_the_split_consumer():
    """pv_pipe, q_regs, tree_max and pv_eighths only change the head-dim > 128 consumer (mode
    pingpong without overlap): elsewhere they are an error, not a silently ignored option.
    They reach the kernel as the bits of SPLIT."""
    from fp8attn.attention.gluon_fwd import VARIANTS, kernel_config
    assert kernel_config(**VARIANTS["pingpong_n64_s3_pipe"])["SPLIT"] == 1
    assert kernel_config(**VARIANTS["pingpong_n64_s3_qreg"])["SPLIT"] == 3
    assert kernel_config(**VARIANTS["pingpong_n64_s3_qreg_tree"])["SPLIT"] == 7
    assert kernel_config(**VARIANTS["pingpong_n128_s2_eighths"])["SPLIT"] == 8
    assert kernel_config(**VARIANTS["pingpong_n128_s2_eighths_qreg"])["SPLIT"] == 10
    with pytest.raises(ValueError, match="one or the other"):   # pipelined eighths: removed
        kernel_config(mode="pingpong", pv_pipe=True, pv_eighths=True)
    for option in (dict(pv_pipe=True), dict(tree_max=True), dict(pv_pipe=True, q_regs=True),
                   dict(pv_eighths=True)):
        for bad in (dict(mode="pingpong", overlap=True), dict(mode="ws")):
            with pytest.raises(ValueError, match="pv_eighths need mode"):
                kernel_config(**option, **bad)
    with pytest.raises(ValueError, match="q_regs needs pv_pipe"):
        kernel_config(mode="pingpong", q_regs=True)


def test_kernel_config_tma_store_needs_persistent_ctas_or_the_split_consumer():
    """The TMA store of the output lives in the persistent consumer and in the head-dim > 128
    one (mode pingpong without overlap); elsewhere, or with a value other than 0 / 1 / 2,
    kernel_config says so instead of ignoring it."""
    from fp8attn.attention.gluon_fwd import VARIANTS, kernel_config
    assert kernel_config(**gluon_dispatch.VARIANT)["TMA_STORE"] == 1
    assert kernel_config(**gluon_dispatch.CAUSAL_PERSISTENT_VARIANT)["TMA_STORE"] == 1
    assert kernel_config(**VARIANTS["pingpong_ovl_s3_persist_ts2"])["TMA_STORE"] == 2
    assert kernel_config(**gluon_dispatch.VARIANT_LONG)["TMA_STORE"] == 0
    assert kernel_config(**VARIANTS["pingpong_n128_s2_pipe_noturn_ts2"])["TMA_STORE"] == 2
    assert kernel_config(**dict(gluon_dispatch.VARIANT_D256, tma_store=1))["TMA_STORE"] == 1
    # three consumers, persistent or not: one full-width tile a warpgroup (session 22)
    assert kernel_config(**VARIANTS["tri_ovl_s3_ts"])["TMA_STORE"] == 1
    assert kernel_config(**VARIANTS["tri_ovl_s3_persist_wgb_q2_ts"])["TMA_STORE"] == 1
    with pytest.raises(ValueError, match="tma_store 0 / 1"):
        kernel_config(**dict(VARIANTS["tri_ovl_s3_ts"], tma_store=2))
    for bad in (dict(gluon_dispatch.CAUSAL_VARIANT, tma_store=1),
                dict(gluon_dispatch.VARIANT, tma_store=3),
                dict(mode="ws", tma_store=1), dict(gluon_dispatch.VARIANT_D256, tma_store=3)):
        with pytest.raises(ValueError, match="tma_store"):
            kernel_config(**bad)


def test_kernel_config_two_q_buffers_need_persistent_ctas():
    """Two Q buffers serve persistent CTAs only (one CTA, one item: one Q); kernel_config
    refuses them elsewhere, and values other than 1 / 2."""
    from fp8attn.attention.gluon_fwd import VARIANTS, kernel_config
    assert kernel_config(**VARIANTS["tri_ovl_s3_persist_wgb_q2"])["Q_BUFS"] == 2
    assert kernel_config(**gluon_dispatch.VARIANT)["Q_BUFS"] == 1
    for bad in (dict(gluon_dispatch.CAUSAL_VARIANT, q_bufs=2),
                dict(gluon_dispatch.VARIANT, q_bufs=3)):
        with pytest.raises(ValueError, match="q_bufs"):
            kernel_config(**bad)


def test_tma_strides_follow_tma_alignment_rules():
    """Outputs a TMA descriptor can address (16-byte aligned base and strides, unit last
    stride, no overlapping rows) get the TMA store; others the plain stores (same bits). A
    size-1 dim's stride is never used, so an odd one there does not matter."""
    from fp8attn.attention.gluon_fwd import _tma_strides
    bf16 = torch.bfloat16
    out = torch.empty(2, 3, 100, 128, dtype=bf16)
    assert _tma_strides(out) == list(out.stride())
    bshd = torch.empty(2, 100, 3, 128, dtype=bf16).transpose(1, 2)      # flash_attn_func's
    assert _tma_strides(bshd) == [100 * 3 * 128, 128, 3 * 128, 1]
    assert _tma_strides(torch.empty(2, 3, 100, 128, dtype=torch.float32)) is not None
    assert _tma_strides(out.transpose(2, 3)) is None                    # last stride != 1
    assert _tma_strides(torch.empty(2, 3, 100, 130, dtype=bf16)[..., :128]) is None
    assert _tma_strides(torch.empty(2 * 3 * 100 * 128 + 1, dtype=bf16)[1:]
                        .view(2, 3, 100, 128)) is None                  # base not aligned
    assert _tma_strides(torch.empty(1, 3, 100, 128, dtype=bf16).expand(2, 3, 100, 128)) is None
    one = torch.empty(1, 1, 100, 130, dtype=bf16)[..., :128]            # odd stride, size-1 dims
    assert _tma_strides(one) is None                                    # rows still misaligned
    one = torch.as_strided(torch.empty(100 * 128 + 8, dtype=bf16), (1, 1, 100, 128),
                           (7, 5, 128, 1))
    assert _tma_strides(one) == [100 * 128, 100 * 128, 128, 1]
    one = torch.empty(1, 100, 1, 128, dtype=bf16).transpose(1, 2)      # usable strides kept
    assert _tma_strides(one) == list(one.stride())


@pytest.fixture
def launches(monkeypatch):
    """gluon_fwd's kernel launches recorded, (grid, args, kwargs) each, instead of run; the SM
    count of an H100 / H200 for the persistent grids (CPU tests of the host side)."""
    from fp8attn.attention import gluon_fwd
    recorded = []

    class Record:
        def __getitem__(self, grid):
            return lambda *args, **kw: recorded.append((grid, args, kw))
    monkeypatch.setattr(gluon_fwd, "_attn_fwd_gluon", Record())
    monkeypatch.setattr(gluon_fwd, "_sm_count", lambda device: 132)
    return recorded


def _zero_fp8_inputs(b, h, s, d):
    """q8, k8 (B, H, S, D), vt8 (a view of a 16-key padded V^T) and one descale per 128 rows."""
    q8, k8 = (torch.zeros(b, h, s, d, dtype=torch.float8_e4m3fn) for _ in range(2))
    vt8 = torch.zeros(b, h, d, -(-s // 16) * 16, dtype=torch.float8_e4m3fn)[..., :s]
    return q8, k8, vt8, torch.ones(b, h, 8)


def test_launch_host_path_picks_the_store_and_checks_the_trace(launches):
    """gluon_attention_fwd's host side, the kernel launch recorded instead of run (CPU): the
    TMA store and its descriptor for an addressable output, plain stores for one TMA cannot
    address (same kernel otherwise), and a trace buffer of the wrong shape refused."""
    b, h, s, d = 2, 3, 1000, 128
    q8, k8, vt8, ds = _zero_fp8_inputs(b, h, s, d)

    def call(out, **kw):
        launches.clear()
        gluon_fwd.gluon_attention_fwd(q8, k8, vt8, ds, ds, ds, 128, 128, 128, 0.1, out=out,
                                      v_key_order="mma", **dict(gluon_dispatch.VARIANT, **kw))
        (grid, args, kwargs), = launches
        return grid, args, kwargs
    grid, args, kw = call(torch.empty(b, h, s, d, dtype=torch.bfloat16))
    assert grid == (min(8 * b * h, 132),) and kw["TMA_STORE"] == 1 and not kw["TRACE"]
    o_desc = kw["o_desc"]
    assert o_desc.shape == [b, h, s, d] and o_desc.block_shape == [1, 1, 64, d]
    _, _, kw = call(torch.empty(b, s, h, d, dtype=torch.float32).transpose(1, 2),
                       tma_store=2)
    assert kw["TMA_STORE"] == 2 and kw["o_desc"].block_shape == [1, 1, 64, d // 2]
    _, _, kw = call(torch.empty(b, h, s, d + 2, dtype=torch.bfloat16)[..., :d])
    assert kw["TMA_STORE"] == 0                 # row stride not 16-byte aligned: plain stores
    out = torch.empty(b, h, s, d, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="trace"):
        call(out, trace=torch.zeros(1, 3, 32, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="persistent"):
        call(out, persistent=False, unroll2=False, tma_store=0,
             trace=torch.zeros(48, 3, 32, 8, dtype=torch.int64))


def test_launch_host_path_runs_head_dim_96_on_the_128_kernel(launches):
    """Head dim 96 (as 80 / 112) runs the 128 kernel (CPU, launch recorded): TMA boxes 128
    columns wide over the 96 columns of Q and K (zero-filled past them) and 128 rows of V^T
    from each head's first row (V_ROWS: 96 a head), the output's TMA store clipped at column
    96; with plain stores (VARIANT_LONG's) the kernel writes a 128-wide buffer whose first 96
    columns go into out; head dims the kernel cannot run and outputs of another shape are
    refused."""
    b, h, s, d = 2, 3, 1000, 96
    q8, k8, vt8, ds = _zero_fp8_inputs(b, h, s, d)

    def call(out, variant, q=q8, k=k8, vt=vt8):
        launches.clear()
        got = gluon_fwd.gluon_attention_fwd(q, k, vt, ds, ds, ds, 128, 128, 128, 0.1, out=out,
                                            v_key_order="mma", **variant)
        (grid, args, kwargs), = launches
        return got, kwargs
    out = torch.empty(b, h, s, d, dtype=torch.bfloat16)
    got, kw = call(out, gluon_dispatch.VARIANT)
    assert got is out and kw["HEAD_DIM"] == 128 and kw["V_ROWS"] == d and kw["TMA_STORE"] == 1
    assert kw["q_desc"].shape == [b * h * s, d] and kw["q_desc"].block_shape == [128, 128]
    assert kw["k_desc"].shape == [b * h * s, d] and kw["k_desc"].block_shape == [128, 128]
    assert kw["v_desc"].shape == [b * h * d, 1008] and kw["v_desc"].block_shape == [128, 128]
    assert kw["o_desc"].shape == [b, h, s, d] and kw["o_desc"].block_shape == [1, 1, 64, 128]
    got, kw = call(out, gluon_dispatch.VARIANT_LONG)
    assert got is out and kw["TMA_STORE"] == 0 and kw["O"].shape == (b, h, s, 128)
    assert kw["stride_om"] == 128 and kw["O"] is not out
    # the dispatch keeps padded non-causal calls on the TMA store at every length
    assert gluon_dispatch.variant_for(128, None, 16384, padded=True) == gluon_dispatch.VARIANT
    assert gluon_dispatch.variant_for(128, None, 16384) == gluon_dispatch.VARIANT_LONG
    # head dim 128 keeps V_ROWS 0 (the kernels compiled before session 29)
    q128, k128, vt128, _ = _zero_fp8_inputs(b, h, s, 128)
    _, kw = call(torch.empty(b, h, s, 128, dtype=torch.bfloat16), gluon_dispatch.VARIANT,
                 q128, k128, vt128)
    assert kw["V_ROWS"] == 0 and kw["HEAD_DIM"] == 128
    with pytest.raises(ValueError, match="out shape"):
        call(torch.empty(b, h, s, 64, dtype=torch.bfloat16), gluon_dispatch.VARIANT)
    q72, k72, vt72, _ = _zero_fp8_inputs(b, h, s, 72)
    for variant in (gluon_dispatch.VARIANT, gluon_dispatch.VARIANT_LONG):   # TMA, plain stores
        with pytest.raises(ValueError, match="head dim 72"):
            call(torch.empty(b, h, s, 72, dtype=torch.bfloat16), variant, q72, k72, vt72)


def test_launch_host_path_hdim256_tma_store_takes_quarter_tiles(launches):
    """Head dim 256 with tma_store (not persistent): one (64, 64) output tile a TMA store, the
    P @ V quarter's; plain stores for an output TMA cannot address; head dim 128 without
    persistent CTAs refuses tma_store instead of ignoring it (CPU, launch recorded)."""
    b, h, s = 1, 2, 1000
    q8, k8, vt8, ds = _zero_fp8_inputs(b, h, s, 256)

    def call(out, **kw):
        launches.clear()
        gluon_fwd.gluon_attention_fwd(q8, k8, vt8, ds, ds, ds, 128, 128, 128, 0.1, out=out,
                                      v_key_order="mma", **kw)
        (grid, _, kwargs), = launches
        return grid, kwargs
    for name, n in (("pingpong_n128_s2_pipe_noturn_ts", 1),
                    ("pingpong_n128_s2_eighths_noturn_ts2", 2)):
        grid, kw = call(torch.empty(b, h, s, 256, dtype=torch.bfloat16),
                        **gluon_fwd.VARIANTS[name])
        assert grid == (8, b * h) and kw["TMA_STORE"] == n and not kw["PERSISTENT"]
        assert kw["o_desc"].shape == [b, h, s, 256]
        assert kw["o_desc"].block_shape == [1, 1, 64, 64]
    _, kw = call(torch.empty(b, h, s, 258, dtype=torch.bfloat16)[..., :256],
                 **gluon_fwd.VARIANTS["pingpong_n128_s2_pipe_noturn_ts2"])
    assert kw["TMA_STORE"] == 0                 # row stride not 16-byte aligned: plain stores
    q8, k8, vt8, ds = _zero_fp8_inputs(b, h, s, 128)
    with pytest.raises(ValueError, match="tma_store needs persistent"):
        call(torch.empty(b, h, s, 128, dtype=torch.bfloat16), mode="pingpong", tma_store=1)


def test_launch_host_path_hdim256_persistent(launches):
    """Head dim 256 on persistent CTAs (session 22; CPU, launch recorded): a 1-D grid of at most
    one CTA per SM, the quarter-width TMA store blocks, a causal call's schedule table, a trace
    buffer with one slot per CTA; persistent without the split options is refused."""
    b, h, s = 1, 2, 1000
    q8, k8, vt8, ds = _zero_fp8_inputs(b, h, s, 256)
    out = torch.empty(b, h, s, 256, dtype=torch.bfloat16)
    n_work = -(-s // 128) * b * h

    def call(causal=None, trace=None, **variant):
        launches.clear()
        gluon_fwd.gluon_attention_fwd(q8, k8, vt8, ds, ds, ds, 128, 128, 128, 0.1, out=out,
                                      causal=causal, v_key_order="mma", trace=trace, **variant)
        (grid, _, kw), = launches
        return grid, kw
    for name in ("pingpong_n128_s2_pipe_noturn_ts2_persist",
                 "pingpong_n128_s2_eighths_noturn_ts2_persist_licm"):
        grid, kw = call(**gluon_fwd.VARIANTS[name])
        assert grid == (min(n_work, gluon_fwd._sm_count(q8.device)),)
        assert kw["PERSISTENT"] and kw["TMA_STORE"] == 2
        assert kw["o_desc"].block_shape == [1, 1, 64, 64]
    grid, kw = call("top_left", **gluon_fwd.VARIANTS["pingpong_n128_s2_eighths_noturn_ts2_persist"])
    assert kw["SCHED"] is not ds                # the causal schedule table
    grid, kw = call(trace=torch.zeros(grid[0], 3, gluon_fwd.TRACE_ITEMS.value, 8,
                                      dtype=torch.int64),
                    **gluon_fwd.VARIANTS["pingpong_n128_s2_pipe_noturn_ts2_persist"])
    assert kw["TRACE"]
    from fp8attn.attention.gluon_fwd import kernel_config
    assert kernel_config(**gluon_fwd.VARIANTS["pingpong_n128_s2_pipe_noturn_ts2_persist"])[
        "PERSISTENT"]
    with pytest.raises(ValueError, match="persistent needs"):
        kernel_config(mode="pingpong", persistent=True)
    # two Q buffers at head dim 256: ptxas miscompiles work items without an unmasked KV
    # tile (session 24). Causal calls run since session 25's masked-tile Q view
    # (gluon_fwd._consumer_split's Q_BUFS; tests/test_sass_loop_skip.py); calls with fewer
    # keys than a tile stay refused (miscompiled non-causal, not GPU-tested causal)
    two = dict(gluon_fwd.VARIANTS["pingpong_n128_s2_eighths_noturn_ts2_persist"], q_bufs=2)
    for causal in (None, "top_left", "bottom_right"):
        grid, kw = call(causal, **two)
        assert kw["Q_BUFS"] == 2 and kw["PERSISTENT"]
    q_short, k_short, vt_short, ds_short = _zero_fp8_inputs(b, h, 100, 256)
    for causal in (None, "top_left"):
        with pytest.raises(ValueError, match="seqlen_k 100 < 128"):
            gluon_fwd.gluon_attention_fwd(q_short, k_short, vt_short, ds_short, ds_short,
                                          ds_short, 128, 128, 128, 0.1, causal=causal,
                                          v_key_order="mma",
                                          out=torch.empty(b, h, 100, 256,
                                                          dtype=torch.bfloat16), **two)


def test_launch_host_path_traces_the_hdim256_kernel_per_cta(launches):
    """The head-dim > 128 kernel (one CTA per query block and head) takes a trace buffer with a
    slot per CTA of its 2-D grid (per-KV-tile stamps, gluon_trace_tiles.py); a buffer sized
    for the first grid dimension alone is refused."""
    b, h, s, d = 1, 2, 300, 256
    q8, k8, vt8, ds = _zero_fp8_inputs(b, h, s, d)
    out = torch.empty(b, h, s, d, dtype=torch.bfloat16)
    items = gluon_fwd.TRACE_ITEMS.value

    def call(n_ctas):
        launches.clear()
        gluon_fwd.gluon_attention_fwd(
            q8, k8, vt8, ds, ds, ds, 64, 64, 64, 0.1, out=out, v_key_order="mma", block_n=64,
            trace=torch.zeros(n_ctas, 3, items, 8, dtype=torch.int64),
            **gluon_dispatch.VARIANT_D256)
        (grid, _, kw), = launches
        return grid, kw
    grid, kw = call(3 * b * h)
    assert grid == (3, b * h) and kw["TRACE"]
    with pytest.raises(ValueError, match="trace must be"):
        call(3)


def test_variant_for_keeps_plain_stores_beyond_tma_store_max_seqlen_k():
    """Non-causal calls store through TMA up to TMA_STORE_MAX_SEQLEN_K keys, where the measured
    gain was; beyond it the loop ran ~4% more cycles a tile with it (session 11)."""
    limit = gluon_dispatch.TMA_STORE_MAX_SEQLEN_K
    assert gluon_dispatch.variant_for(128, None, limit) is gluon_dispatch.VARIANT
    assert gluon_dispatch.variant_for(128, None, limit + 1) is gluon_dispatch.VARIANT_LONG
    assert gluon_dispatch.variant_for(128, "top_left", 4096) is \
        gluon_dispatch.CAUSAL_PERSISTENT_VARIANT


def test_tile_keys_hdim256_falls_back_to_64_key_tiles():
    """Head dim 256 runs 128-key tiles unless a K or V descale block would split one (then 64:
    one descale per tile); a per-head block (>= seqlen_k) splits nothing. Other head dims
    have one tile size."""
    tk = gluon_dispatch.tile_keys
    assert tk(256, 128, 128, 4096) == 128
    assert tk(256, 256, 4096, 4096) == 128
    assert tk(256, 5000, 5000, 4096) == 128
    assert tk(256, 64, 128, 4096) == 64
    assert tk(256, 128, 192, 4096) == 64
    assert tk(128, 128, 128, 4096) == 128
    assert tk(96, 128, 128, 4096) == 1


def test_variant_for_hdim256_by_tile_size():
    """Head dim 256: 128-key tiles by default; 64-key tiles take Q in registers, and causal
    calls on them drop the ping-pong turns (session 19, same bits, the faster forms)."""
    for causal in (None, "top_left", "bottom_right"):
        v = gluon_dispatch.variant_for(256, causal, 4096)
        assert v is (gluon_dispatch.VARIANT_D256 if causal is None
                     else gluon_dispatch.VARIANT_D256_CAUSAL)
        assert gluon_dispatch.variant_for(256, causal, 4096, block_n=128) is v
        assert not v.get("q_regs") and "block_n" not in v
    # causal 128-key tiles: P @ V quarters in eighths, no turns (session 20); not non-causal
    assert gluon_dispatch.VARIANT_D256_CAUSAL["pv_eighths"]
    assert not gluon_dispatch.VARIANT_D256_CAUSAL["turns"]
    assert not gluon_dispatch.VARIANT_D256.get("pv_eighths")
    # non-causal: pipelined quarters, no turns (session 21)
    assert gluon_dispatch.VARIANT_D256["pv_pipe"] and not gluon_dispatch.VARIANT_D256["turns"]
    # both: the output quarters through two shared tiles a warpgroup and TMA (session 22)
    assert gluon_dispatch.VARIANT_D256["tma_store"] == 2
    assert gluon_dispatch.VARIANT_D256_CAUSAL["tma_store"] == 2
    # causal: persistent CTAs with the item loop's LICM (session 23), but not for one block
    c = gluon_dispatch.VARIANT_D256_CAUSAL
    assert c["persistent"] and c["item_licm"] and c.get("q_bufs", 1) == 1
    assert not gluon_dispatch.VARIANT_D256.get("persistent")
    for causal in ("top_left", "bottom_right"):
        assert gluon_dispatch.variant_for(256, causal, 4096, seqlen_q=129) is c
        one = gluon_dispatch.variant_for(256, causal, 4096, seqlen_q=128)
        assert one is gluon_dispatch.VARIANT_D256_CAUSAL_ONE_BLOCK
        assert one == {k: v for k, v in c.items() if k not in ("persistent", "item_licm")}
    v = gluon_dispatch.variant_for(256, None, 4096, block_n=64)
    assert v is gluon_dispatch.VARIANT_D256_N64 and v["q_regs"] and v.get("turns", True)
    for causal in ("top_left", "bottom_right"):
        c = gluon_dispatch.variant_for(256, causal, 4096, block_n=64)
        assert c is gluon_dispatch.VARIANT_D256_N64_CAUSAL and c["q_regs"] and not c["turns"]


def test_variant_for_hdim256_short_non_causal_calls_take_two_q_buffers():
    """Non-causal head dim 256 up to D256_SHORT_MAX_SEQLEN_K keys (session 24): VARIANT_D256 on
    persistent CTAs with two Q buffers and the item loop's LICM, except into fp32 outputs
    (their shared output tiles would not fit beside the second Q buffer); causal calls and
    64-key tiles are unchanged."""
    short = gluon_dispatch.VARIANT_D256_SHORT
    assert short == dict(gluon_dispatch.VARIANT_D256, persistent=True, item_licm=True,
                         q_bufs=2)
    limit = gluon_dispatch.D256_SHORT_MAX_SEQLEN_K
    for s in (512, 1024, limit):
        for dt in (torch.bfloat16, torch.float16):
            assert gluon_dispatch.variant_for(256, None, s, out_dtype=dt) is short
        assert gluon_dispatch.variant_for(256, None, s, out_dtype=torch.float32) is \
            gluon_dispatch.VARIANT_D256
        assert gluon_dispatch.variant_for(256, None, s, block_n=64) is \
            gluon_dispatch.VARIANT_D256_N64
    assert gluon_dispatch.variant_for(256, None, limit + 1) is gluon_dispatch.VARIANT_D256


def test_hdim256_causal_from_512_keys_on_one_q_buffer():
    """Causal head dim 256 from 512 keys (session 25; 1k before; the threshold through
    reason, the variant through variant_for): VARIANT_D256_CAUSAL into every output type (its
    two-Q-buffer form ran no faster below 1k), one query block VARIANT_D256_CAUSAL_ONE_BLOCK."""
    for causal in ("top_left", "bottom_right"):
        assert gluon_dispatch.reason(**dict(GOOD, head_dim=256, seqlen_q=512, seqlen_k=512,
                                            causal=causal)) is None
        assert "seqlen_k" in gluon_dispatch.reason(**dict(GOOD, head_dim=256, seqlen_q=511,
                                                          seqlen_k=511, causal=causal))
        for s in (512, 1000, 4096):
            for dt in gluon_dispatch.OUT_DTYPES:
                assert gluon_dispatch.variant_for(256, causal, s, out_dtype=dt) is \
                    gluon_dispatch.VARIANT_D256_CAUSAL
            assert gluon_dispatch.variant_for(256, causal, s, seqlen_q=128) is \
                gluon_dispatch.VARIANT_D256_CAUSAL_ONE_BLOCK


def test_variant_for_causal_hdim128_is_persistent_at_every_length():
    """Causal head dim 128 runs the persistent kernel from 1k keys up, long calls included
    (session 17: 1.05x one CTA per block at 16k keys once the item loop kept its overlap; up to
    8k keys before)."""
    from fp8attn.attention.gluon_fwd import kernel_config
    for causal in ("top_left", "bottom_right"):
        for sk in (1024, 8192, 8193, 16384, 65536):
            assert gluon_dispatch.variant_for(128, causal, sk) is \
                gluon_dispatch.CAUSAL_PERSISTENT_VARIANT
            assert gluon_dispatch.variant_for(128, causal, sk, sk) is \
                gluon_dispatch.CAUSAL_PERSISTENT_VARIANT
    assert kernel_config(**gluon_dispatch.CAUSAL_PERSISTENT_VARIANT)["ITEM_LICM"] is False


def test_variant_for_one_query_block_causal_runs_without_a_schedule():
    """A causal head of at most CAUSAL_BLOCK_M queries is one work item: the non-persistent
    variant (no schedule table per seqlen_k); from one row more, the persistent one."""
    from fp8attn.attention.gluon_fwd import kernel_config
    rows = gluon_dispatch.CAUSAL_BLOCK_M
    for variant in (gluon_dispatch.CAUSAL_VARIANT, gluon_dispatch.CAUSAL_PERSISTENT_VARIANT):
        assert kernel_config(**variant)["BLOCK_M"] == rows
    for causal in ("top_left", "bottom_right"):
        for sq in (1, 7, rows):
            assert gluon_dispatch.variant_for(128, causal, 4096, sq) is \
                gluon_dispatch.CAUSAL_VARIANT
        assert gluon_dispatch.variant_for(128, causal, 4096, rows + 1) is \
            gluon_dispatch.CAUSAL_PERSISTENT_VARIANT
    assert gluon_dispatch.variant_for(128, None, 4096, 1) is gluon_dispatch.VARIANT


@pytest.mark.parametrize("block_m,masked_max", [(128, 2), (192, 3)])
def test_causal_blocks_need_at_most_masked_max_masked_steps(block_m, masked_max):
    """gluon_fwd._ovl_work runs tile 0 in its prologue, the full tiles in its loop, then at most
    MASKED_MAX written-out masked steps from max(n_full, 1): enough for every query block of
    block_m rows and 128-key tiles (_causal_bounds, mirrored here), both alignments, tails."""
    bn = 128
    worst = 0
    for sq, sk in [(4096, 4096), (1000, 4200), (4500, 4100), (3000, 16400), (777, 777),
                   (1, 5000), (300, 301)]:
        for mode in (1, 2):
            if mode == 2 and sk < sq:
                continue
            off = sk - sq if mode == 2 else 0
            for start_m in range(0, sq, block_m):
                last_row = min(start_m + block_m, sq) - 1
                kv_end = max(min(sk, last_row + off + 1), 0)
                full_end = max(min(sk, start_m + off + 1), 0)
                n_tiles, n_full = -(-kv_end // bn), full_end // bn
                assert n_tiles <= max(n_full, 1) + masked_max
                worst = max(worst, n_tiles - max(n_full, 1))
    assert worst == masked_max      # the bound is reached: one step fewer would miss tiles


def test_variant_for_hdim64_is_the_persistent_three_consumer_kernel():
    """Non-causal hdim 64 (session 28): three consumer warpgroups on persistent CTAs with two Q
    buffers and the TMA store, at any number of queries."""
    from fp8attn.attention.gluon_fwd import kernel_config
    for sq in (None, 1, 192, 16384):
        v = gluon_dispatch.variant_for(64, None, 16384, sq)
        assert v is gluon_dispatch.VARIANT_D64
    cfg = kernel_config(**v)
    assert (cfg["CONSUMERS"], cfg["BLOCK_M"], cfg["TURNS"], cfg["PERSISTENT"]) == (3, 192, False,
                                                                                 True)
    assert cfg["Q_BUFS"] == 2 and cfg["TMA_STORE"] == 1


def test_variant_for_hdim64_causal_is_persistent_with_warpgroup_bounds():
    """Causal hdim 64: the same kernel as non-causal, whose per-warpgroup causal bounds act on
    causal calls, beyond one 192-row block of queries (a single block needs no schedule
    table)."""
    from fp8attn.attention.gluon_fwd import kernel_config
    for causal in ("top_left", "bottom_right"):
        for sq in (None, 193, 16384):
            v = gluon_dispatch.variant_for(64, causal, 16384, sq)
            assert v is gluon_dispatch.VARIANT_D64
            cfg = kernel_config(**v)
            assert (cfg["CONSUMERS"], cfg["PERSISTENT"], cfg["WG_BOUNDS"]) == (3, True, True)
            assert cfg["TMA_STORE"] == 1        # session 22: +5% at 4k keys
        for sq in (1, 192):
            v = gluon_dispatch.variant_for(64, causal, 16384, sq)
            assert v is gluon_dispatch.VARIANT_D64_CAUSAL_ONE_BLOCK
            assert not kernel_config(**v)["PERSISTENT"] and kernel_config(**v)["WG_BOUNDS"]


def test_launch_host_path_three_consumers(launches):
    """The three-consumer launch (CPU, launch recorded): 192-row blocks in the grid, Q's TMA
    block one consumer's 64 rows; a trace buffer refused (its slots are for two consumers)."""
    b, h, s, d = 2, 3, 1000, 64
    q8, k8, vt8, ds = _zero_fp8_inputs(b, h, s, d)
    out = torch.empty(b, h, s, d, dtype=torch.bfloat16)
    gluon_fwd.gluon_attention_fwd(q8, k8, vt8, ds, ds, ds, 128, 128, 128, 0.1, out=out,
                                  v_key_order="mma", **gluon_fwd.VARIANTS["tri_ovl_s3"])
    (grid, _, kw), = launches
    assert grid == (-(-s // 192), b * h) and kw["CONSUMERS"] == 3
    assert kw["q_desc"].block_shape == [64, d]
    assert not kw["TMA_STORE"]
    for name in ("tri_ovl_s3_ts", "tri_ovl_s3_persist_wgb_q2_ts"):      # a warpgroup's rows
        launches.clear()
        gluon_fwd.gluon_attention_fwd(q8, k8, vt8, ds, ds, ds, 128, 128, 128, 0.1, out=out,
                                      v_key_order="mma", **gluon_fwd.VARIANTS[name])
        (_, _, kw), = launches
        assert kw["TMA_STORE"] == 1 and kw["o_desc"].block_shape == [1, 1, 64, d]
    with pytest.raises(ValueError, match="two consumer"):      # trace slots for two only
        gluon_fwd.gluon_attention_fwd(
            q8, k8, vt8, ds, ds, ds, 128, 128, 128, 0.1, out=out, v_key_order="mma",
            trace=torch.zeros(12, 3, gluon_fwd.TRACE_ITEMS.value, 8, dtype=torch.int64),
            **gluon_fwd.VARIANTS["tri_ovl_s3_persist"])


@pytest.mark.parametrize("name", sorted(gluon_fwd.VARIANTS))
def test_launch_host_path_takes_every_variant(name, launches):
    """Every VARIANTS entry goes through gluon_attention_fwd's host side to the kernel's
    constexprs (CPU, launch recorded): an option kernel_config has and gluon_attention_fwd
    lacks fails here rather than on the GPU (session 15's wg_bounds did)."""
    variant = gluon_fwd.VARIANTS[name]
    cfg = gluon_fwd.kernel_config(**variant)
    d = 64 if cfg["CONSUMERS"] == 3 else 256 if cfg["SPLIT"] else 128
    q8, k8, vt8, ds = _zero_fp8_inputs(1, 2, 1000, d)
    kv = max(128, cfg["BLOCK_N"])       # one K / V descale per tile
    gluon_fwd.gluon_attention_fwd(q8, k8, vt8, ds, ds, ds, 128, kv, kv, 0.1,
                                  v_key_order="mma", **variant)
    (_, _, kw), = launches
    assert {k: kw[k] for k in cfg if k != "num_warps"} == \
        {k: v for k, v in cfg.items() if k != "num_warps"}


@pytest.mark.parametrize("d", [64, 128])
def test_launch_bottom_right_with_as_many_queries_as_keys_runs_top_left(d, launches):
    """Bottom-right causal with seqlen_q == seqlen_k is the top-left mask: the dispatch launches
    the kernel's top-left form there (faster on the GPU, same bits: probe_short_causal_s16),
    and keeps bottom-right with fewer queries than keys (CPU, launch recorded)."""
    sk = 8192 if d == 64 else 1000
    for sq, mode in ((sk, 1), (sk - 300, 2)):
        launches.clear()
        q8 = _zero_fp8_inputs(1, 2, sq, d)[0]
        _, k8, vt8, ds = _zero_fp8_inputs(1, 2, sk, d)
        gluon_dispatch.launch(q8, k8, vt8, ds, ds, ds, q_block=128, k_block=128, v_block=128,
                              softmax_scale=0.1, out=torch.empty(1, 2, sq, d,
                                                                 dtype=torch.bfloat16),
                              v_key_order="mma", causal="bottom_right")
        (_, _, kw), = launches
        assert kw["CAUSAL"] == mode


def test_launch_hdim256_short_call_by_output_dtype(launches):
    """A non-causal head-dim-256 call of 1k keys (CPU, launch recorded): persistent CTAs with two
    Q buffers into a bf16 / fp16 output, one CTA a block into fp32 (the launch passes the
    output's dtype to variant_for)."""
    q8, k8, vt8, ds = _zero_fp8_inputs(2, 2, 1024, 256)
    n_blocks = 8 * 2 * 2            # 128-row query blocks x batch x heads
    for dt, persistent in ((torch.bfloat16, True), (torch.float16, True),
                           (torch.float32, False)):
        launches.clear()
        gluon_dispatch.launch(q8, k8, vt8, ds, ds, ds, q_block=128, k_block=128, v_block=128,
                              softmax_scale=0.1, out=torch.empty(2, 2, 1024, 256, dtype=dt),
                              v_key_order="mma")
        (grid, _, kw), = launches
        assert kw["PERSISTENT"] == persistent and kw["Q_BUFS"] == (2 if persistent else 1)
        assert grid == ((min(n_blocks, 132),) if persistent else (8, 2 * 2))


def test_launch_refuses_an_unknown_kernel_option(launches):
    """gluon_attention_fwd's kernel options are kernel_config's keyword arguments: a misspelt one
    is a TypeError naming it, not a silently different kernel (CPU, nothing launched)."""
    q8, k8, vt8, ds = _zero_fp8_inputs(1, 2, 1000, 128)
    with pytest.raises(TypeError, match="tma_stores"):
        gluon_fwd.gluon_attention_fwd(q8, k8, vt8, ds, ds, ds, 128, 128, 128, 0.1,
                                      v_key_order="mma", tma_stores=1,
                                      **gluon_dispatch.VARIANT)
    assert not launches


@pytest.mark.parametrize("d,kernel", [(64, gluon_dispatch.VARIANT_D64),
                                      (128, gluon_dispatch.CAUSAL_PERSISTENT_VARIANT),
                                      (256, gluon_dispatch.VARIANT_D256_CAUSAL)],
                         ids=["VARIANT_D64", "CAUSAL_PERSISTENT_VARIANT",
                              "VARIANT_D256_CAUSAL"])
def test_launch_host_path_causal_persistent_without_its_table(d, kernel, launches,
                                                              monkeypatch):
    """A causal persistent call whose schedule table cannot be made (a CUDA-graph capture, table
    not built yet) launches the same variant without persistent CTAs: one CTA per block, every
    other option kept (the three consumers and wg_bounds included; the TMA store above head
    dim 128, where one CTA per block has it too; CPU, launch recorded)."""
    monkeypatch.setattr(gluon_fwd, "causal_schedule_for", lambda *args: None)
    b, h, s = 2, 3, 1000
    q8, k8, vt8, ds = _zero_fp8_inputs(b, h, s, d)
    out = torch.empty(b, h, s, d, dtype=torch.bfloat16)
    gluon_fwd.gluon_attention_fwd(q8, k8, vt8, ds, ds, ds, 128, 128, 128, 0.1, out=out,
                                  v_key_order="mma", causal="top_left", **kernel)
    (grid, _, kw), = launches
    one_cta = dict(kernel, persistent=False, q_bufs=1, item_licm=False)
    if d <= 128:
        one_cta["tma_store"] = 0
    want = gluon_fwd.kernel_config(**one_cta)
    assert not kw["PERSISTENT"] and grid == (-(-s // want["BLOCK_M"]), b * h)
    assert kw["TMA_STORE"] == (2 if d == 256 else 0)
    assert {k: kw[k] for k in want if k != "num_warps"} == \
        {k: v for k, v in want.items() if k != "num_warps"}


def test_kernel_config_three_consumers_need_their_shape():
    from fp8attn.attention.gluon_fwd import kernel_config
    base = dict(mode="pingpong", overlap=True, turns=False, consumers=3, block_m=192)
    assert kernel_config(**base)["CONSUMERS"] == 3
    assert kernel_config(mode="pingpong", overlap=True)["CONSUMERS"] == 2
    for bad in (dict(turns=True), dict(block_m=128), dict(overlap=False),
                dict(persistent=True, tma_store=2), dict(consumers=4)):
        with pytest.raises(ValueError, match="consumers"):
            kernel_config(**dict(base, **bad))
    assert kernel_config(**base, wg_bounds=True)["WG_BOUNDS"]
    with pytest.raises(ValueError, match="wg_bounds"):      # turns pair every tile
        kernel_config(mode="pingpong", overlap=True, wg_bounds=True)


@pytest.mark.parametrize("n_m,n_hz,seqlen,causal_mode", [
    (32, 64, 4096, 1),      # FA3's setting at 4k: 4 x 16 heads, sections of 16 heads
    (128, 16, 16384, 1),    # 16k: sections of 4 heads
    (8, 40, 1000, 2),       # tails: the last query block is short
    (4, 3, 500, 1),         # fewer items than CTAs
])
def test_causal_schedule_covers_every_item_once_and_balances(n_m, n_hz, seqlen, causal_mode):
    """The persistent causal kernel's CTA table (gluon_fwd._causal_schedule): every item once,
    each CTA's items in increasing order (the L2 sections' order in time), and no CTA with
    more than 2% above the mean work where each CTA gets several items (a plain stride left
    ~15% at 4k-16k)."""
    from fp8attn.attention.gluon_fwd import _causal_schedule, _section_heads
    grid = min(132, n_m * n_hz)
    t = _causal_schedule(n_m, n_hz, _section_heads(seqlen, 128), grid, seqlen, seqlen, 128,
                         128, causal_mode, torch.device("cpu")).tolist()
    offsets, items = t[:grid + 1], t[grid + 1:]
    assert offsets[0] == 0 and offsets[-1] == len(items) == n_m * n_hz
    assert sorted(items) == list(range(n_m * n_hz))
    runs = [items[offsets[c]:offsets[c + 1]] for c in range(grid)]
    assert all(run == sorted(run) and run for run in runs)
    if n_m * n_hz >= 8 * grid:
        per_section = n_m * _section_heads(seqlen, 128)

        def tiles(w):       # square causal: query block i sees tiles 0..i
            return n_m - (w % per_section) // min(_section_heads(seqlen, 128), n_hz) + 1
        loads = [sum(tiles(w) for w in run) for run in runs]
        assert max(loads) <= 1.02 * sum(loads) / grid


def test_failed_launch_warns_once_and_falls_back(monkeypatch):
    """A launch that raises (e.g. a ptxas the kernel was never built with) warns, and the path
    stays off for the process: why_not says so, the caller runs the tl kernel."""
    def broken(*a, **kw):
        raise RuntimeError("PTX .version 8.7 does not support .target sm_90a")
    monkeypatch.setattr(gluon_dispatch, "launch", broken)
    monkeypatch.setattr(gluon_dispatch, "_failed", [])
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    with pytest.warns(RuntimeWarning, match="Gluon attention kernel failed"):
        assert gluon_dispatch.try_launch() is False
    x = torch.zeros(1, 1, 8, 128).to(torch.float8_e4m3fn)
    vt = torch.zeros(1, 1, 128, 16).to(torch.float8_e4m3fn)
    why = gluon_dispatch.why_not(x, x, vt, k_block=128, v_block=128, causal=None, varlen=False,
                                 q_lo=None, out_dtype=torch.bfloat16, acc_mode="tile",
                                 config=None)
    assert "failed launch" in why and "sm_90a" in why


def _gluon_gpu() -> bool:
    return (torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
            and triton.__version__.startswith(gluon_dispatch.TRITON_SERIES))


needs_gluon = pytest.mark.skipif(not _gluon_gpu(), reason="needs sm_90 and Triton 3.6")


@pytest.fixture
def spy(monkeypatch):
    """Counts the calls that went to the Gluon kernel."""
    calls = []
    real = gluon_dispatch.launch

    def counted(*a, **kw):
        calls.append(kw.get("v_key_order", "natural"))      # the order V^T reached it in
        return real(*a, **kw)
    monkeypatch.setattr(gluon_dispatch, "launch", counted)
    return calls


# the tl kernel with the Gluon kernel's 128-key tiles (tests/conftest.py's FP8ATTN_TUNE=minimal
# would pick 64-key tiles, whose two-level accumulation rounds differently)
TL_128 = {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 3}
# the same at head dims above 128: P @ V in four parts (SPLIT 2), the Gluon kernel's key order
TL_D256_N128 = {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 2, "SPLIT": 2,
                "REVERSE": False}


def _run(q8, k8, v8, causal=None, config=None, lse=True, out_dtype=torch.bfloat16):
    """(out, lse) of attention_fwd_fp8, or out if not lse (V^T in v8's key order: an
    "mma"-order one goes back to the natural order for the tl kernel)."""
    return triton_fwd.attention_fwd_fp8(
        q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale, q_block=q8.block_size,
        k_block=k8.block_size, v_block=v8.block_size, softmax_scale=q8.data.shape[-1] ** -0.5,
        causal=causal, return_lse=lse, config=config, v_key_order=v8.key_order,
        q_lo=q8.residual, out_dtype=out_dtype)


def _gluon_direct(q8, k8, v8, **variant):
    """gluon_attention_fwd on QuantizedTensors (the kernel without the dispatch)."""
    from fp8attn.attention.gluon_fwd import gluon_attention_fwd
    return gluon_attention_fwd(q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale,
                               q8.block_size, k8.block_size, v8.block_size,
                               q8.data.shape[-1] ** -0.5, **variant)


def _direct_same_bits(q8, k8, v8, ref, ref_lse=None, **kw):
    """_gluon_direct (kw: the variant and the call's options) gives ref's bits, and ref_lse's
    when given (the kernel then writes the LSE)."""
    lse = None if ref_lse is None else torch.empty_like(ref_lse)
    got = _gluon_direct(q8, k8, v8, lse=lse, **kw)
    assert not got.isnan().any()
    assert torch.equal(got, ref)
    if ref_lse is not None:
        assert torch.equal(lse, ref_lse)


def _quantized(b, hq, hkv, sq, sk, d, recipe, seed, v_key_order="natural"):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(b, hq, sq, d, generator=g, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(b, hkv, sk, d, generator=g, device="cuda", dtype=torch.bfloat16)
            for _ in range(2))
    return quantize_qkv(q, k, v, recipe, v_key_order=v_key_order)


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("b,hq,hkv,sq,sk,recipe,causal", [
    (1, 16, 16, 4096, 4096, Recipe(), None),
    (2, 3, 3, 1000, 4200, Recipe(), None),                  # tails on both sides
    (1, 4, 2, 777, 4500, Recipe(), None),                   # GQA
    (1, 2, 2, 2500, 4103, Recipe(), None),                  # a partial 16-key group at the end
    (1, 2, 2, 2500, 4096, Recipe(granularity="head"), None),  # one descale per head
    (1, 2, 2, 4096, 4096, Recipe(q_search=4), None),        # per-row Q descales
    (1, 3, 3, 1000, 4200, Recipe(q_terms=2), None),         # Q's second FP8 term
    # causal calls (the loop without the unrolling)
    (1, 2, 2, 4096, 4096, Recipe(), "top_left"),
    (1, 2, 2, 3000, 16400, Recipe(), "bottom_right"),  # causal_off 13400, tail, partial group
    (1, 2, 2, 4500, 4100, Recipe(), "top_left"),       # more queries than keys, a tail tile
    (1, 2, 2, 4000, 4100, Recipe(q_terms=2), "bottom_right"),
    # a diagonal that ends a tile before the 128-row block's: the lower warpgroup's last tile
    # must change nothing (before session 12: 1-ulp differences in a few rows)
    (1, 4, 2, 1500, 4200, Recipe(), "bottom_right"),
    (1, 3, 3, 9000, 9100, Recipe(), "top_left"),    # beyond 8k keys: persistent since session 17
    # from MIN_SEQLEN_K (1024 keys since session 12)
    (16, 4, 4, 1024, 1024, Recipe(), None),
    (8, 4, 4, 1024, 1024, Recipe(), "top_left"),
    # as many queries as keys: launched in the kernel's top-left form (the same mask)
    (8, 4, 4, 1024, 1024, Recipe(), "bottom_right"),
    (1, 3, 3, 2000, 2000, Recipe(), "bottom_right"),   # tails
])
def test_gpu_gluon_path_same_bits_as_tl_kernel(b, hq, hkv, sq, sk, recipe, causal, spy,
                                               monkeypatch):
    """V^T in the kernel's "mma" key order (what the package quantises into); the tl kernel,
    forced, gets it back in natural order: the keys of a 16-key group enter the P @ V sums in
    another order, the bits stay the same, LSE included, causal or not (from MIN_SEQLEN_K
    keys). A natural-order V^T stays on the tl kernel."""
    q8, k8, v8 = _quantized(b, hq, hkv, sq, sk, 128, recipe, seed=sq + sk, v_key_order="mma")
    ref, ref_lse = _run(q8, k8, v8, causal, config=TL_128)     # a forced config: the tl kernel
    assert not spy
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)   # on by default
    got, got_lse = _run(q8, k8, v8, causal)
    assert spy == ["mma"]
    assert not got.isnan().any()
    assert torch.equal(got, ref)
    assert torch.equal(got_lse, ref_lse)
    nat = dataclasses.replace(v8, data=to_natural(v8.data), key_order="natural")
    assert torch.equal(_run(q8, k8, nat, causal, config=TL_128)[0], ref)
    _run(q8, k8, nat, causal)
    assert spy == ["mma"]                     # natural order: the tl kernel


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("b,hq,hkv,sq,sk,seed", [(2, 4, 2, 1500, 4200, 1),
                                                 (2, 4, 4, 1500, 4224, 5724),
                                                 (2, 4, 2, 1500, 4200, 3),
                                                 (2, 4, 4, 1500, 4224, 4)])
def test_gpu_gluon_bottom_right_tiles_past_a_warpgroup_same_bits(b, hq, hkv, sq, sk, seed, spy,
                                                                 monkeypatch):
    """Bottom-right diagonals not 128-aligned give the upper warpgroup tiles past all of its
    rows, which the tl kernel's 64-row blocks skip. Such a tile must leave acc exactly as it
    is: until session 13 its factor was alpha * (vs / vs) with an approximate division, one
    bf16 ulp off in 0-4 elements of these inputs (H200)."""
    q8, k8, v8 = _quantized(b, hq, hkv, sq, sk, 128, Recipe(), seed=seed, v_key_order="mma")
    ref, ref_lse = _run(q8, k8, v8, "bottom_right", config=TL_128)
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    got, got_lse = _run(q8, k8, v8, "bottom_right")
    assert spy == ["mma"] and not got.isnan().any()
    assert torch.equal(got, ref)
    assert torch.equal(got_lse, ref_lse)


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("causal", [None, "top_left"])
def test_gpu_gluon_repeated_call_through_the_compiled_kernel_same_bits(causal, spy,
                                                                       monkeypatch):
    """The second call of a kind (same shapes, new data) skips Triton's JIT binding
    (fp8attn.kernel_launch) and still gives the tl kernel's bits; so does the JIT path
    (FP8ATTN_FAST_LAUNCH=0) on a third input."""
    from fp8attn import kernel_launch
    kernel_launch.clear()
    monkeypatch.delenv("FP8ATTN_FAST_LAUNCH", raising=False)
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    for seed in (1, 2, 3):
        if seed == 3:
            monkeypatch.setenv("FP8ATTN_FAST_LAUNCH", "0")
        q8, k8, v8 = _quantized(1, 4, 2, 1500, 4200, 128, Recipe(), seed=seed, v_key_order="mma")
        ref = _run(q8, k8, v8, causal, config=TL_128, lse=False)     # a forced config: tl
        got = _run(q8, k8, v8, causal, lse=False)
        assert len(spy) == seed and torch.equal(got, ref)
    # the first call kept its compiled kernel (the other entries: the quantiser's launches,
    # which go through kernel_launch too since session 34)
    from fp8attn.attention.gluon_fwd import _attn_fwd_gluon
    assert [key[0] for key in kernel_launch._RUNNERS].count(id(_attn_fwd_gluon)) == 1


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("b,h,sq,sk,causal,d", [
    (1, 16, 4096, 4096, "top_left", 128),
    (2, 3, 2100, 2100, "bottom_right", 128),
    (1, 4, 1000, 3000, "bottom_right", 128),   # causal_off 2000: diagonal across two tiles
    (1, 2, 3000, 2200, "top_left", 128),       # more queries than keys
    (1, 8, 4096, 4096, None, 64),
    (1, 8, 3000, 3000, "bottom_right", 64),
])
def test_gpu_gluon_kernel_undispatched_modes_match_tl_kernel(b, h, sq, sk, causal, d):
    """The kernel's causal and two-consumer head-dim-64 code called directly (causal calls
    below MIN_SEQLEN_K keys and hdim 64 on two consumers are not dispatched), with the
    variants the dispatch would use: the tl kernel's bits."""
    q8, k8, v8 = _quantized(b, h, h, sq, sk, d, Recipe(), seed=sq + 7 * sk)
    ref, ref_lse = _run(q8, k8, v8, causal, config=TL_128)
    # hdim 64 on two consumers (not dispatched): the non-persistent unrolled variant, as
    # session 7 timed it
    from fp8attn.attention.gluon_fwd import VARIANTS
    variant = (gluon_dispatch.variant_for(d, causal, sk) if d == 128
               else VARIANTS["pingpong_ovl_u2_s3"])
    _direct_same_bits(q8, k8, v8, ref, ref_lse, causal=causal, **variant)


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("b,hq,hkv,sq,sk,recipe,causal", [
    (1, 8, 8, 4096, 4096, Recipe(), None),
    (2, 3, 3, 1000, 4200, Recipe(), None),                    # tails on both sides
    (1, 4, 2, 777, 4500, Recipe(), None),                     # GQA
    (1, 2, 2, 2500, 4103, Recipe(), None),                    # a partial 16-key group at the end
    (1, 2, 2, 100, 4096, Recipe(), None),                     # one partly filled 192-row block
    (1, 2, 2, 4096, 4096, Recipe(granularity="head"), None),  # one descale per head
    (1, 2, 2, 4096, 4096, Recipe(q_search=4), None),          # per-row Q descales
    (2, 3, 3, 1000, 1536, Recipe(), None),                    # at MIN_SEQLEN_K_D64
    # causal from MIN_SEQLEN_K_D64_CAUSAL keys
    (1, 2, 2, 3000, 16400, Recipe(), "bottom_right"),         # causal_off 13400, tail
    (1, 2, 2, 1000, 4096, Recipe(), "top_left"),
    (1, 4, 4, 2048, 2048, Recipe(), "top_left"),              # at the threshold
    (1, 4, 2, 1000, 4200, Recipe(), "bottom_right"),          # GQA, causal_off 3200
    (1, 2, 2, 8300, 8300, Recipe(), "bottom_right"),          # launched top-left, tails
])
def test_gpu_gluon_path_hdim64_same_bits_as_tl_kernel(b, hq, hkv, sq, sk, recipe, causal, spy,
                                                      monkeypatch):
    """Head dim 64 through the dispatch (three consumer warpgroups, 192-row blocks): the tl
    kernel's bits with the same 128-key tiles (64-row blocks), LSE included."""
    q8, k8, v8 = _quantized(b, hq, hkv, sq, sk, 64, recipe, seed=sq + 5 * sk,
                            v_key_order="mma")
    ref, ref_lse = _run(q8, k8, v8, causal, config=TL_128)
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    got, got_lse = _run(q8, k8, v8, causal)
    assert spy == ["mma"]
    assert not got.isnan().any()
    assert torch.equal(got, ref)
    assert torch.equal(got_lse, ref_lse)
    assert torch.equal(_run(q8, k8, v8, causal, lse=False), ref)
    assert spy == ["mma", "mma"]


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("b,hq,hkv,sq,sk,causal", [
    (1, 4, 4, 2000, 2000, "top_left"),
    (2, 3, 3, 1000, 2000, "bottom_right"),      # causal_off 1000
    (1, 4, 2, 2500, 2000, "top_left"),          # more queries than keys, GQA
    (1, 4, 4, 1500, 2040, "bottom_right"),
])
@pytest.mark.parametrize("variant", ["dispatched", "tri_ovl_s3", "tri_ovl_s3_wgb"])
def test_gpu_gluon_kernel_hdim64_causal_below_its_threshold(b, hq, hkv, sq, sk, causal, variant,
                                                            spy, monkeypatch):
    """Causal hdim-64 calls below MIN_SEQLEN_K_D64_CAUSAL keys stay on the tl kernel; the
    three-consumer kernel called directly on them gives the tl kernel's bits, LSE included:
    the variant the dispatch takes from that threshold (persistent, wg_bounds), session 14's
    (192-row blocks crossing up to three 128-key tiles on the diagonal) and wg_bounds without
    persistence (each warpgroup its own tiles; the last block's warpgroups partly or wholly
    past seqlen_q at 1000 and 4500 queries)."""
    q8, k8, v8 = _quantized(b, hq, hkv, sq, sk, 64, Recipe(), seed=sq + 5 * sk,
                            v_key_order="mma")
    ref, ref_lse = _run(q8, k8, v8, causal, config=TL_128)
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    _run(q8, k8, v8, causal)       # the tl kernel (its own tuned tiles: other bits than TL_128)
    assert not spy
    kernel = (gluon_dispatch.variant_for(64, causal, sk, sq) if variant == "dispatched"
              else gluon_fwd.VARIANTS[variant])
    _direct_same_bits(q8, k8, v8, ref, ref_lse, causal=causal, v_key_order="mma", **kernel)


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("b,hq,hkv,sq,sk,lse,causal", [
    (1, 16, 16, 1024, 4096, False, None),     # 96 items: fewer than SMs, one a CTA
    (4, 40, 40, 1000, 1000, True, None),      # 960 items over the CTAs, tails, the LSE
    (2, 6, 2, 777, 4200, True, None),         # GQA, tails
    (2, 20, 20, 2000, 2000, True, "top_left"),        # longest-first items in head sections
    (1, 6, 6, 2048, 16384, False, "bottom_right"),
    (1, 8, 4, 1000, 3000, True, "bottom_right"),      # GQA, causal_off 2000
    (1, 4, 4, 3000, 2200, True, "top_left"),          # more queries than keys
])
@pytest.mark.parametrize("variant", ["tri_ovl_s3_persist", "tri_ovl_s3_persist_wgb",
                                     "tri_ovl_s3_persist_q2", "tri_ovl_s3_persist_wgb_q2"])
def test_gpu_gluon_kernel_tri_persistent_matches_tl_kernel(b, hq, hkv, sq, sk, lse, causal,
                                                           variant):
    """Persistent CTAs on three consumer warpgroups (hdim 64; with wg_bounds each warpgroup
    computes its own rows' causal tiles; _q2: two Q buffers; the dispatch's form adds the TMA
    store, below): the tl kernel's bits with the same 128-key tiles, LSE included."""
    _tri_same_bits_as_tl_kernel(b, hq, hkv, sq, sk, lse, causal, variant, seed=sq + 7 * sk)


def _tri_same_bits_as_tl_kernel(b, hq, hkv, sq, sk, lse, causal, variant, seed):
    """A three-consumer (hdim 64) variant called directly: the tl kernel's bits with 128-key
    tiles, and its LSE's with lse."""
    q8, k8, v8 = _quantized(b, hq, hkv, sq, sk, 64, Recipe(), seed=seed, v_key_order="mma")
    ref, ref_lse = _run(q8, k8, v8, causal, config=TL_128)
    _direct_same_bits(q8, k8, v8, ref, ref_lse if lse else None, causal=causal,
                      v_key_order="mma", **gluon_fwd.VARIANTS[variant])


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("b,hq,hkv,sq,sk,lse,causal", [
    (1, 8, 8, 4096, 4096, False, None),
    (2, 3, 3, 1000, 4200, True, None),        # tails on both sides, the LSE
    (1, 4, 2, 777, 4500, True, None),         # GQA
    (1, 2, 2, 100, 4096, False, None),        # one partly filled 192-row block
    (2, 20, 20, 2000, 2000, True, "top_left"),
    (1, 8, 4, 1000, 3000, True, "bottom_right"),      # GQA, causal_off 2000
    (1, 4, 4, 3000, 2200, False, "top_left"),         # more queries than keys
])
@pytest.mark.parametrize("variant", ["tri_ovl_s3_ts", "tri_ovl_s3_persist_wgb_q2_ts"])
def test_gpu_gluon_kernel_tri_tma_store_matches_tl_kernel(b, hq, hkv, sq, sk, lse, causal,
                                                          variant):
    """Three consumer warpgroups (hdim 64) storing the output through one shared (64, 64)
    tile each and TMA (session 22), one CTA per block and persistent: the tl kernel's bits
    with the same 128-key tiles, LSE included (rows past seqlen_q clipped by the
    descriptor)."""
    _tri_same_bits_as_tl_kernel(b, hq, hkv, sq, sk, lse, causal, variant, seed=sq + 11 * sk)


@pytest.mark.gpu
@needs_gluon
def test_gpu_gluon_hdim64_call_under_torch_compile_reduce_overhead():
    """The dispatched hdim-64 call at 4k keys (persistent CTAs) inside Inductor's CUDA graphs
    (torch.compile mode="reduce-overhead"): replays give the eager bits on new data."""
    torch._dynamo.reset()
    g = torch.Generator(device="cuda").manual_seed(43)

    def inputs():
        return [torch.randn(4, 4096, 32, 64, generator=g, device="cuda").bfloat16()
                for _ in range(3)]
    fp8attn.flash_attn_func(*inputs())      # the device tables, outside the graph pool
    compiled = torch.compile(lambda a, b, c: fp8attn.flash_attn_func(a, b, c),
                             mode="reduce-overhead", fullgraph=True)
    for _ in range(4):          # the first calls record, later ones replay the graph
        q, k, v = inputs()
        assert torch.equal(compiled(q, k, v).clone(), fp8attn.flash_attn_func(q, k, v))


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32])
def test_gpu_gluon_tri_tma_store_other_output_types_same_bits(out_dtype):
    """The three consumers' TMA store into fp16 / fp32 outputs inside a larger buffer: the tl
    kernel's bits, the rows past seqlen_q left alone."""
    q8, k8, v8 = _quantized(1, 3, 3, 1000, 4200, 64, Recipe(), seed=29, v_key_order="mma")
    ref, _ = _run(q8, k8, v8, None, TL_128, out_dtype=out_dtype)
    b, h, s, d = q8.data.shape
    room = torch.full((b, h, s + 192, d), 7.0, dtype=out_dtype, device="cuda")
    _direct_same_bits(q8, k8, v8, ref, out=room[:, :, :s], v_key_order="mma",
                      **gluon_fwd.VARIANTS["tri_ovl_s3_ts"])
    assert (room[:, :, s:] == 7.0).all()


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("b,hq,hkv,sq,sk,causal", [
    (1, 4, 4, 4096, 4096, None),
    (2, 3, 3, 1000, 4200, None),     # tails on both sides
    (1, 4, 2, 777, 4500, None),      # GQA
    (1, 4, 4, 4096, 4096, "top_left"),
    (2, 3, 3, 1000, 4200, "bottom_right"),   # diagonal not tile-aligned, three masked tiles
    (1, 4, 2, 4500, 4200, "top_left"),       # more queries than keys, GQA, tails
    (1, 2, 2, 3000, 16400, "bottom_right"),
    (1, 2, 2, 4200, 4200, "bottom_right"),   # launched top-left (the same mask), tails
])
@pytest.mark.parametrize("block_kv", [128, 64])
def test_gpu_gluon_path_hdim256_same_bits_as_tl_kernel(b, hq, hkv, sq, sk, causal, block_kv,
                                                       spy, monkeypatch):
    """Head dim 256 (P @ V in four parts, _tile_split) through the dispatch, causal or not,
    without the LSE: 128-key tiles with the default 128-key descale blocks, 64-key tiles with
    64-key ones; the bits of the tl kernel's hdim-256 config with the same tiles. With the LSE
    the call stays on the tl kernel."""
    q8, k8, v8 = _quantized(b, hq, hkv, sq, sk, 256, Recipe(block_kv=block_kv),
                            seed=sq + 3 * sk, v_key_order="mma")
    ref = _run(q8, k8, v8, causal, lse=False,
               config={"BLOCK_M": 64, "BLOCK_N": block_kv, "num_warps": 4,
                       "num_stages": 3 if block_kv == 64 else 2, "SPLIT": 2, "REVERSE": False})
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    got = _run(q8, k8, v8, causal, lse=False)
    assert spy == ["mma"]
    assert not got.isnan().any()
    assert torch.equal(got, ref)
    _run(q8, k8, v8, causal)               # with the LSE: the tl kernel
    assert spy == ["mma"]


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("causal,block_kv,gluon", [
    (None, 128, True),            # from MIN_SEQLEN_K_D256_N128 keys
    ("top_left", 128, True),      # causal too, since session 22
    ("bottom_right", 128, True),
    (None, 64, False),            # 64-key tiles: from MIN_SEQLEN_K_D256
])
def test_gpu_gluon_path_hdim256_at_1k_keys(causal, block_kv, gluon, spy, monkeypatch):
    """Head dim 256 at 1k keys: 128-key calls take the Gluon kernel (non-causal 1.06x the tl
    kernel there, session 20; causal 1.22x with the TMA store, session 22), with the tl
    kernel's bits for the same tiles; 64-key calls keep the tl kernel."""
    q8, k8, v8 = _quantized(8, 4, 4, 1024, 1024, 256, Recipe(block_kv=block_kv), seed=7,
                            v_key_order="mma")
    ref = _run(q8, k8, v8, causal, lse=False,
               config={"BLOCK_M": 64, "BLOCK_N": block_kv, "num_warps": 4,
                       "num_stages": 3 if block_kv == 64 else 2, "SPLIT": 2, "REVERSE": False})
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    got = _run(q8, k8, v8, causal, lse=False)
    assert spy == (["mma"] if gluon else [])
    if gluon:
        assert torch.equal(got, ref)


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("b,hq,hkv,sq,sk,causal", [
    (8, 4, 4, 512, 512, "top_left"),        # from MIN_SEQLEN_K_D256_N128 keys
    (2, 4, 2, 700, 1000, "bottom_right"),   # GQA, causal_off 300, tails
    (2, 6, 6, 1000, 600, "top_left"),       # more queries than keys
    (1, 24, 24, 900, 900, "bottom_right"),  # several items a CTA, launched top-left
])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
def test_gpu_gluon_path_hdim256_short_causal(b, hq, hkv, sq, sk, causal, out_dtype, spy,
                                             monkeypatch):
    """Causal head dim 256 from 512 keys through the dispatch (session 25,
    VARIANT_D256_CAUSAL): the tl kernel's bits with the same 128-key tiles."""
    _d256_path_same_bits_as_tl_kernel(b, hq, hkv, sq, sk, causal, out_dtype, sq + 17 * sk, spy,
                                      monkeypatch)


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("b,hq,hkv,sq,sk", [
    (8, 4, 4, 512, 512),           # from MIN_SEQLEN_K_D256_N128 keys
    (2, 4, 2, 700, 1536),          # up to D256_SHORT_MAX_SEQLEN_K, GQA, a tail
    (1, 3, 3, 1500, 1100),
])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gpu_gluon_path_hdim256_short_non_causal(b, hq, hkv, sq, sk, out_dtype, spy,
                                                 monkeypatch):
    """Non-causal head dim 256 from 512 keys up to D256_SHORT_MAX_SEQLEN_K through the dispatch
    (session 24: persistent CTAs with two Q buffers into bf16 / fp16 outputs, one CTA a block
    into fp32): the tl kernel's bits with the same 128-key tiles."""
    _d256_path_same_bits_as_tl_kernel(b, hq, hkv, sq, sk, None, out_dtype, sq + 7 * sk, spy,
                                      monkeypatch)


def _d256_path_same_bits_as_tl_kernel(b, hq, hkv, sq, sk, causal, out_dtype, seed, spy,
                                      monkeypatch):
    """A head-dim-256 call through the dispatch takes the Gluon kernel and gives the tl
    kernel's bits with the same 128-key tiles."""
    q8, k8, v8 = _quantized(b, hq, hkv, sq, sk, 256, Recipe(), seed=seed, v_key_order="mma")
    ref = _run(q8, k8, v8, causal, TL_D256_N128, lse=False, out_dtype=out_dtype)
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    got = _run(q8, k8, v8, causal, lse=False, out_dtype=out_dtype)
    assert spy == ["mma"]
    assert torch.equal(got, ref)


def _d256_same_bits_as_tl_kernel(b, hq, hkv, sq, sk, causal, variant, seed):
    """A 128-key head-dim-256 variant called directly: the tl kernel's bits with the same
    128-key tiles."""
    q8, k8, v8 = _quantized(b, hq, hkv, sq, sk, 256, Recipe(), seed=seed, v_key_order="mma")
    ref = _run(q8, k8, v8, causal, TL_D256_N128, lse=False)
    _direct_same_bits(q8, k8, v8, ref, causal=causal, v_key_order="mma",
                      **gluon_fwd.VARIANTS[variant])


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("variant", ["pingpong_n128_s2_pipe", "pingpong_n128_s2_pipe_noturn",
                                     "pingpong_n128_s2_eighths",
                                     "pingpong_n128_s2_eighths_noturn",
                                     "pingpong_n128_s2_pipe_noturn_ts",
                                     "pingpong_n128_s2_pipe_noturn_ts2",
                                     "pingpong_n128_s2_eighths_noturn_ts",
                                     "pingpong_n128_s2_eighths_noturn_ts2"])
@pytest.mark.parametrize("b,hq,hkv,sq,sk,causal", [
    (2, 3, 3, 1000, 4200, None),
    (1, 4, 2, 4500, 4200, "top_left"),
    (2, 3, 3, 1000, 4200, "bottom_right"),
])
def test_gpu_gluon_hdim256_128_key_variants_same_bits_as_tl_kernel(variant, b, hq, hkv, sq, sk,
                                                                    causal):
    """The 128-key head-dim-256 variants (P @ V in quarters or eighths, with turns and
    without, the output through TMA or not), called directly: the tl kernel's bits with the
    same 128-key tiles."""
    _d256_same_bits_as_tl_kernel(b, hq, hkv, sq, sk, causal, variant, seed=sq + 5 * sk)


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("variant", [f"pingpong_n128_s2_{p}_noturn_ts2_persist{licm}"
                                     for p in ("pipe", "eighths") for licm in ("", "_licm")]
                         + [f"pingpong_n128_s2_{p}_noturn_ts2_persist_licm_q2"
                            for p in ("pipe", "eighths")])
@pytest.mark.parametrize("b,hq,hkv,sq,sk,causal", [
    (2, 3, 3, 1000, 4200, None),
    (1, 16, 16, 1024, 4096, None),              # 128 items: fewer than SMs, one a CTA
    (4, 16, 8, 2000, 2000, None),               # 1024 items over the CTAs, GQA, tails
    (1, 4, 2, 4500, 4200, "top_left"),          # where two Q buffers failed (sessions 20,
    (2, 24, 24, 1000, 1000, "top_left"),        # 23): several items a CTA, query block 0
    (2, 3, 3, 1000, 4200, "bottom_right"),
    (1, 8, 8, 2048, 2048, "top_left"),          # one item a CTA (session 24: out of bounds)
    (2, 24, 24, 1000, 1000, "bottom_right"),
])
def test_gpu_gluon_hdim256_persistent_same_bits_as_tl_kernel(variant, b, hq, hkv, sq, sk,
                                                             causal):
    """Head dim 256 on persistent CTAs (_consumer_split_persistent, session 22: the output
    through TMA, draining under the next item's tiles; _licm the item loop with loop-invariant
    code motion, causal dispatched since session 23): the tl kernel's bits with the same
    128-key tiles. The non-causal variants on causal shapes are skipped (they would run the
    non-causal mask)."""
    if causal is not None and "eighths" not in variant:
        pytest.skip("the causal forms are the eighths ones (VARIANT_D256_CAUSAL's)")
    _d256_same_bits_as_tl_kernel(b, hq, hkv, sq, sk, causal, variant, seed=sq + 13 * sk)


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("causal", [None, "top_left"])
def test_gpu_gluon_hdim256_tma_store_other_output_types_same_bits(out_dtype, causal):
    """The head-dim-256 output quarters through TMA (two shared tiles a warpgroup) into fp16 /
    fp32 outputs (fp32's tiles take the kernel to 229,696 B of shared memory, offline): the tl
    kernel's bits, tail rows past seqlen_q left alone."""
    q8, k8, v8 = _quantized(1, 3, 3, 1000, 4200, 256, Recipe(), seed=23, v_key_order="mma")
    ref = _run(q8, k8, v8, causal, TL_D256_N128, lse=False, out_dtype=out_dtype)
    b, h, s, d = q8.data.shape
    room = torch.full((b, h, s + 64, d), 7.0, dtype=out_dtype, device="cuda")
    variant = ("pingpong_n128_s2_pipe_noturn_ts2" if causal is None
               else "pingpong_n128_s2_eighths_noturn_ts2")
    _direct_same_bits(q8, k8, v8, ref, out=room[:, :, :s], causal=causal, v_key_order="mma",
                      **gluon_fwd.VARIANTS[variant])
    assert (room[:, :, s:] == 7.0).all()


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("variant", ["pingpong_n256_s2", "pingpong_n256_s3"])
@pytest.mark.parametrize("b,hq,hkv,sq,sk", [(2, 3, 3, 1000, 4200), (1, 4, 2, 777, 4500)])
def test_gpu_gluon_hdim128_256_key_tiles_same_bits_as_tl_kernel(variant, b, hq, hkv, sq, sk):
    """Head dim 128 on 256-key tiles (the plain ping-pong consumer; not dispatched), with
    256-key descale blocks: the tl kernel's bits with the same tiles."""
    q8, k8, v8 = _quantized(b, hq, hkv, sq, sk, 128, Recipe(block_kv=256), seed=sq + 7 * sk,
                            v_key_order="mma")
    ref = _run(q8, k8, v8, None, lse=False,
               config={"BLOCK_M": 64, "BLOCK_N": 256, "num_warps": 4, "num_stages": 2})
    _direct_same_bits(q8, k8, v8, ref, v_key_order="mma", **gluon_fwd.VARIANTS[variant])


@pytest.mark.gpu
@needs_gluon
def test_gpu_gluon_public_api_and_fallbacks(spy, monkeypatch):
    """flash_attn_func (B, S, H, D): the output view's strides reach the Gluon kernel (causal or
    not, with and without the LSE), a call below MIN_SEQLEN_K keys runs the tl kernel; same
    accuracy as with FP8ATTN_GLUON=0 (whose autotuned tl kernel may use other tiles, hence not
    the same bits)."""
    from fp8attn.attention.reference import attention_oracle
    g = torch.Generator(device="cuda").manual_seed(3)
    q, k, v = (torch.randn(1, 4096, 4, 128, generator=g, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))
    oracles = {c: attention_oracle(*(t.transpose(1, 2) for t in (q, k, v)),
                                   causal="top_left" if c else None).transpose(1, 2)
               for c in (False, True)}

    def err(o, causal=False):
        return float((o.double() - oracles[causal]).pow(2).mean().sqrt())

    short = [t[:, :512] for t in (q, k, v)]    # below MIN_SEQLEN_K
    monkeypatch.setenv("FP8ATTN_GLUON", "0")
    ref = fp8attn.flash_attn_func(q, k, v)
    ref_causal = fp8attn.flash_attn_func(q, k, v, causal=True)
    ref_short = fp8attn.flash_attn_func(*short)
    assert not spy
    monkeypatch.delenv("FP8ATTN_GLUON")
    got = fp8attn.flash_attn_func(q, k, v)
    got_lse, lse = fp8attn.flash_attn_func(q, k, v, return_lse=True)
    got_causal = fp8attn.flash_attn_func(q, k, v, causal=True)
    assert spy == ["mma"] * 3        # quantised straight into the kernel's V^T key order
    assert torch.equal(got, got_lse) and lse.shape == (1, 4, 4096) and lse.isfinite().all()
    assert err(got) <= 1.05 * err(ref)
    assert err(got_causal, True) <= 1.05 * err(ref_causal, True)
    assert torch.equal(fp8attn.flash_attn_func(*short), ref_short)
    assert len(spy) == 3


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("causal", [None, "bottom_right"])
@pytest.mark.parametrize("d", [128, 64])
def test_gpu_gluon_path_fp16_fp32_output_same_bits_as_tl_kernel(out_dtype, causal, d, spy,
                                                                monkeypatch):
    """fp16 / fp32 outputs (the store converts as the tl kernel's does; at hdim 64 through the
    three consumers' TMA tiles on persistent CTAs): the tl kernel's bits, LSE included."""
    q8, k8, v8 = _quantized(1, 3, 3, 1000, 4200, d, Recipe(), seed=17, v_key_order="mma")

    ref, ref_lse = _run(q8, k8, v8, causal, TL_128, out_dtype=out_dtype)
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    got, got_lse = _run(q8, k8, v8, causal, out_dtype=out_dtype)
    assert spy == ["mma"]
    assert got.dtype == out_dtype and not got.isnan().any()
    assert torch.equal(got, ref)
    assert torch.equal(got_lse, ref_lse)


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("d,b,hq,hkv,sq,sk,recipe,causal,out_dtype", [
    (96, 1, 4, 4, 4096, 4096, Recipe(), None, torch.bfloat16),
    (96, 2, 3, 3, 1000, 4200, Recipe(), None, torch.float32),     # tails, fp32 TMA tiles
    (96, 1, 4, 2, 777, 9000, Recipe(), None, torch.bfloat16),     # GQA, TMA store past 8k
    (96, 1, 4, 4, 2048, 2048, Recipe(), "bottom_right", torch.bfloat16),
    # one query block: one CTA, plain stores into a 128-wide buffer
    (96, 1, 2, 2, 100, 4096, Recipe(), "bottom_right", torch.bfloat16),
    (80, 1, 2, 2, 2500, 4103, Recipe(), "bottom_right", torch.bfloat16),
    # 112 = 7 * 16: no Hadamard transform of that size, so no rotation
    (112, 1, 3, 3, 1000, 4200, Recipe(q_terms=2, hadamard=False), "top_left", torch.float16),
    (80, 2, 4, 4, 1024, 1024, Recipe(), None, torch.bfloat16),
])
def test_gpu_gluon_path_padded_head_dims_same_bits_as_tl_kernel(d, b, hq, hkv, sq, sk, recipe,
                                                                causal, out_dtype, spy,
                                                                monkeypatch):
    """Head dims 80 / 96 / 112 on the 128 kernel (gluon_dispatch.kernel_head_dim): Q's and K's
    columns past d zero-filled by TMA, P @ V's past d dropped by the store (the TMA store's
    clipping, or a 128-wide buffer for plain stores), the last head's V^T rows past its end
    zero-filled. The tl kernel pads to 128 too: the same bits, LSE included."""
    q8, k8, v8 = _quantized(b, hq, hkv, sq, sk, d, recipe, seed=sq + sk + d, v_key_order="mma")
    ref, ref_lse = _run(q8, k8, v8, causal, config=TL_128, out_dtype=out_dtype)
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    got, got_lse = _run(q8, k8, v8, causal, out_dtype=out_dtype)
    assert spy == ["mma"]
    assert got.shape == ref.shape and not got.isnan().any()
    assert torch.equal(got, ref)
    assert torch.equal(got_lse, ref_lse)


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("b,hq,hkv,sq,sk,q_terms,lse,causal", [
    (1, 16, 16, 1024, 4096, 1, False, None),     # 128 items: fewer than SMs, one a CTA
    (4, 40, 40, 1000, 1000, 1, True, None),      # 1280 items over 132 CTAs, tails, the LSE
    (2, 6, 2, 777, 4200, 2, True, None),         # GQA, two Q terms, tails
    # causal: longest-first items in sections of heads (gluon_fwd._section_heads)
    (2, 20, 20, 2000, 2000, 1, True, "top_left"),      # sections of 32 heads: 32 + 8
    (1, 6, 6, 2048, 16384, 1, False, "bottom_right"),  # sections of 4 heads: 4 + 2
    (1, 8, 4, 1000, 3000, 1, True, "bottom_right"),    # GQA, causal_off 2000 (not a tile multiple)
    (1, 4, 4, 3000, 2200, 2, True, "top_left"),        # more queries than keys, two Q terms
])
@pytest.mark.parametrize("variant", ["pingpong_ovl_u2_s3_persist", "pingpong_ovl_u2_s3_persist_ts",
                                     "pingpong_ovl_s3_persist_ts2",
                                     "pingpong_ovl_u2_s3_persist_ts_q2",
                                     "pingpong_ovl_s3_persist_ts2_q2"])
def test_gpu_gluon_kernel_persistent_matches_tl_kernel(b, hq, hkv, sq, sk, q_terms, lse, causal,
                                                       variant):
    """The persistent variants (one CTA per SM looping over (query block, head) items; the
    output with plain stores, one TMA store or two half-width ones; _q2: two Q buffers): the
    tl kernel's bits, LSE included. Run benchmarks/gluon_gpu.sh persist (or q2) first on a new
    machine: a barrier bug hangs this test (the script times out instead)."""
    q8, k8, v8 = _quantized(b, hq, hkv, sq, sk, 128, Recipe(q_terms=q_terms), seed=sq + sk)
    ref, ref_lse = _run(q8, k8, v8, causal, config=TL_128)
    from fp8attn.attention.gluon_fwd import VARIANTS
    _direct_same_bits(q8, k8, v8, ref, ref_lse if lse else None, q_lo=q8.residual,
                      causal=causal, **VARIANTS[variant])


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("d", [128, 96])
def test_gpu_gluon_path_takes_prequantised_fp8_inputs(d, spy, monkeypatch):
    """flash_attn_func on FP8 (B, S, H, D) inputs with FA3-style descales: Q and K are copied
    contiguous so that the Gluon kernel takes the call (causal or not; head dim 96 on the 128
    kernel), with the tl kernel's bits (128-key tiles) on the same data."""
    g = torch.Generator(device="cuda").manual_seed(11)
    b, s, h = 1, 4096, 4
    q, k, v = ((torch.randn(b, s, h, d, generator=g, device="cuda") * 3).to(torch.float8_e4m3fn)
               for _ in range(3))
    qd, kd, vd = (torch.rand(b, h, generator=g, device="cuda") + 0.5 for _ in range(3))
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    for causal in (False, True):
        got = fp8attn.flash_attn_func(q, k, v, causal=causal, q_descale=qd, k_descale=kd,
                                      v_descale=vd)
        ref = triton_fwd.attention_fwd_fp8(
            q.transpose(1, 2), k.transpose(1, 2), v.permute(0, 2, 3, 1).contiguous(),
            qd.reshape(b, h, 1), kd.reshape(b, h, 1), vd.reshape(b, h, 1), q_block=s,
            k_block=s, v_block=s, softmax_scale=d ** -0.5,
            causal="bottom_right" if causal else None, config=TL_128)
        assert not got.isnan().any()
        assert torch.equal(got, ref.transpose(1, 2))
    assert spy == ["mma", "mma"]


@pytest.mark.gpu
@needs_gluon
def test_gpu_gluon_path_under_cuda_graph_capture(spy):
    """The Gluon launch (host-side TMA descriptors, passed by value) replays from a CUDA graph:
    the README's advice for short host-bound calls. Replays follow new data in the same
    buffers and give the eager call's bits."""
    g = torch.Generator(device="cuda").manual_seed(5)
    q, k, v = (torch.randn(1, 4096, 4, 128, generator=g, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fp8attn.flash_attn_func(q, k, v)           # warm-up: compiles outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fp8attn.flash_attn_func(q, k, v)
    assert len(spy) == 2
    for seed in (6, 7):
        g.manual_seed(seed)
        for t in (q, k, v):
            t.copy_(torch.randn(t.shape, generator=g, device="cuda", dtype=t.dtype))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, fp8attn.flash_attn_func(q, k, v))


@pytest.mark.gpu
@needs_gluon
def test_gpu_gluon_few_query_rows_growing_keys_build_no_schedule(spy, monkeypatch):
    """Bottom-right calls of a few query rows against a growing number of keys (e.g. verifying
    draft tokens against a KV cache): no schedule table per seqlen_k, the tl kernel's bits."""
    from fp8attn.attention import gluon_fwd
    monkeypatch.setattr(gluon_fwd, "_SCHEDULES", {})
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    for sk in (4096, 4097, 4101):
        q8, k8, v8 = _quantized(2, 8, 2, 5, sk, 128, Recipe(), seed=sk, v_key_order="mma")
        ref, ref_lse = _run(q8, k8, v8, "bottom_right", config=TL_128)   # forced: tl kernel
        got, got_lse = _run(q8, k8, v8, "bottom_right")
        assert torch.equal(got, ref) and torch.equal(got_lse, ref_lse)
    assert spy == ["mma"] * 3
    assert not gluon_fwd._SCHEDULES


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("d,s", [(128, 4096), (64, 16384), (256, 2048), (96, 4096)])
def test_gpu_gluon_causal_persistent_under_cuda_graph_capture(d, s, spy, monkeypatch):
    """A causal call whose persistent CTAs need a schedule table not yet on the device, made
    during a CUDA-graph capture: the copy cannot be captured, so the launch runs the
    non-persistent variant (at hdim 64 three consumers with per-warpgroup bounds); the replay
    gives the eager call's bits."""
    from fp8attn.attention import gluon_fwd
    g = torch.Generator(device="cuda").manual_seed(8)
    q, k, v = (torch.randn(1, s, 4, d, generator=g, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))
    assert gluon_dispatch.variant_for(d, "bottom_right", s).get("persistent")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        eager = fp8attn.flash_attn_func(q, k, v, causal=True)     # compiles, builds the table
    torch.cuda.current_stream().wait_stream(stream)
    monkeypatch.setattr(gluon_fwd, "_SCHEDULES", {})
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fp8attn.flash_attn_func(q, k, v, causal=True)
    assert not gluon_fwd._SCHEDULES            # no table built inside the capture
    graph.replay()
    torch.cuda.synchronize()
    assert spy == ["mma", "mma"]
    assert torch.equal(out, eager)


@pytest.mark.gpu
@needs_gluon
def test_gpu_gluon_causal_schedule_under_reduce_overhead(spy):
    """torch.compile(mode="reduce-overhead") on a causal shape whose schedule table is not built
    yet, as the first call of that shape: the table is built outside Inductor's CUDA-graph pool
    (device_tables.built_off_pool; built in the pool, torch raised "tensor(s) in the cudagraph
    pool not tracked as outputs" on the first call: H200, 2026-11-30 13:47 UTC), and every call
    gives the eager bits."""
    from fp8attn.attention import gluon_fwd
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b, c: fp8attn.flash_attn_func(a, b, c, causal=True),
                             mode="reduce-overhead", fullgraph=True)
    g = torch.Generator(device="cuda").manual_seed(9)
    n_tables = len(gluon_fwd._SCHEDULES)
    for _ in range(3):
        q, k, v = (torch.randn(1, 4480, 2, 128, generator=g, device="cuda").bfloat16()
                   for _ in range(3))
        got = compiled(q, k, v).clone()
        assert torch.equal(got, fp8attn.flash_attn_func(q, k, v, causal=True))
    assert len(gluon_fwd._SCHEDULES) == n_tables + 1
    assert spy


def test_bench_markdown_tl_columns():
    """bench_attention.py --tl: the tl kernel's rows beside ours (the default path) and ours / tl,
    '-' where the default path is the tl kernel anyway; the path column says which ran."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    import bench_attention
    rows = [dict(hdim=128, seqlen=4096, causal=False, path="gluon", ours_kernel=747, ours_e2e=630,
                 fa3_fp8=830, fa3_bf16=645, ours_kernel_tl=700, ours_e2e_tl=600),
            dict(hdim=256, seqlen=4096, causal=False, path="tl (head dim 256 (only (128,)))",
                 ours_kernel=700, ours_e2e=600, fa3_fp8=1100, fa3_bf16=645)]
    md = bench_attention.markdown({"device": "X", "date": "d", "torch": "t", "triton": "3.6"},
                                  rows, {}, (1,), tl=True)
    lines = md.splitlines()
    assert "| path |" in lines[4] and "kernel / tl | e2e / tl |" in lines[4]
    assert "ours kernel tl" in lines[4]
    assert lines[6].startswith("| 128 | 4096 | no | gluon | 747 |")
    assert lines[6].endswith("| 0.90 | 0.98 | 1.07 | 1.05 |")
    assert lines[7].startswith("| 256 | 4096 | no | tl |") and lines[7].endswith("| - | - |")
    assert "ours_kernel_tl" not in bench_attention.impls((1,))


def test_bench_markdown_gpu_time_columns():
    """bench_attention.py: the kernel-only and end-to-end views also on the GPU alone (ours and
    its peer replayed from a CUDA graph), each with its own ratio; as many separator cells as
    header cells; a pair no row has gets no columns."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    import bench_attention
    rows = [dict(hdim=128, seqlen=1024, causal=True, path="gluon", ours_kernel=430,
                 ours_e2e=70, fa3_fp8=256, fa3_bf16=276, ours_kernel_gpu=465, fa3_fp8_gpu=514,
                 ours_kernel_tl=439, ours_e2e_tl=74)]
    md = bench_attention.markdown({"device": "X", "date": "d", "torch": "t", "triton": "3.6"},
                                  rows, {}, (1,), tl=True)
    head, sep, row = md.splitlines()[4:7]
    assert "| ours kernel, GPU time | FA3 FP8, GPU time |" in head
    assert "| kernel / FA3 FP8 | e2e / FA3 BF16 | kernel / FA3 FP8, GPU time |" in head
    assert "e2e, GPU time" not in head
    assert head.count("|") == sep.count("|") == row.count("|")
    assert row.endswith("| 465 | 514 | 1.68 | 0.25 | 0.90 | 0.98 | 0.95 |")
    rows[0].update(ours_e2e_gpu=200, fa3_bf16_gpu=400)
    md = bench_attention.markdown({"device": "X", "date": "d", "torch": "t", "triton": "3.6"},
                                  rows, {}, (1,), tl=False)
    head, sep, row = md.splitlines()[4:7]
    assert ("| ours kernel, GPU time | FA3 FP8, GPU time | ours e2e, GPU time "
            "| FA3 BF16, GPU time |") in head
    assert head.endswith("| kernel / FA3 FP8, GPU time | e2e / FA3 BF16, GPU time |")
    assert head.count("|") == sep.count("|") == row.count("|")
    assert row.endswith("| 465 | 514 | 200 | 400 | 1.68 | 0.25 | 0.90 | 0.50 |")


def _varlen_inputs(lens_q, lens_k, hq, hkv, seed, recipe=Recipe(), d=128):
    """Packed bf16 Q / K / V of the sequences (head dim d), quantised as the varlen call does
    (K / V into padded rows, V^T in the "mma" key order), and the attention_fwd_fp8 varlen
    arguments."""
    from fp8attn.quant.padded_rows import padded_rows

    def cu(lens):
        return torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32,
                            device="cuda")
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(sum(lens_q), hq, d, generator=g, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(sum(lens_k), hkv, d, generator=g, device="cuda",
                        dtype=torch.bfloat16) for _ in range(2))
    cu_q, cu_k = cu(lens_q), cu(lens_k)
    rows = padded_rows(cu_k, sum(lens_k), 128)
    q8, k8, v8 = quantize_qkv(*(x.permute(1, 0, 2).unsqueeze(0) for x in (q, k, v)), recipe,
                              kv_rows=rows, v_key_order="mma")
    return q8, k8, v8, dict(cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                            max_seqlen_q=max(max(lens_q), 1), kv_starts=rows.starts,
                            kv_align=128)


def _run_varlen(q8, k8, v8, varlen, causal=None, config=None, out=None):
    out, lse = triton_fwd.attention_fwd_fp8(
        q8.data, k8.data, v8.data, q8.descale, k8.descale, v8.descale, q_block=q8.block_size,
        k_block=k8.block_size, v_block=v8.block_size, softmax_scale=128 ** -0.5, causal=causal,
        return_lse=True, config=config, v_key_order=v8.key_order, out=out, **varlen)
    return out, lse


def test_reason_takes_varlen_at_head_dims_80_to_128_with_padded_kv():
    """Varlen batches (session 35): head dim 128 (80 / 96 / 112 on its kernel since session
    37), K / V in padded rows, one Q term; the packed totals stand for seqlen_q / seqlen_k (a
    bottom-right batch may hold more queries than keys)."""
    vl = dict(GOOD, varlen=True, kv_align=128)
    assert gluon_dispatch.reason(**vl) is None
    assert gluon_dispatch.reason(**dict(vl, causal="bottom_right", seqlen_q=9000, lse=True)) \
        is None
    for change in (dict(kv_align=0), dict(kv_align=64), dict(head_dim=64), dict(head_dim=256),
                   dict(two_terms=True)):
        assert "varlen" in (gluon_dispatch.reason(**dict(vl, **change)) or ""), change
    # head dims 80 / 96 / 112 on the 128 kernel (session 37)
    for d in (80, 96, 112):
        assert gluon_dispatch.reason(**dict(vl, head_dim=d)) is None, d


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("lens_q,lens_k,hq,hkv,causal", [
    # empty sequences, tails, a one-row sequence, GQA
    ([1000, 0, 2100, 129, 1, 640], None, 4, 2, None),
    ([4096] * 4, None, 8, 8, None),
    ([1000, 0, 2100, 129, 1, 640], None, 4, 2, "bottom_right"),
    # keys != queries per sequence: no keys at all (zeros, LSE -inf), rows before their first
    # key (bottom-right with fewer keys than queries), more keys than queries
    ([1000, 300, 2100, 129, 5], [1000, 0, 2300, 64, 700], 4, 2, "bottom_right"),
    ([1000, 300, 2100, 129, 5], [1000, 0, 2300, 64, 700], 4, 4, None),
])
@pytest.mark.parametrize("store", ["tma", "plain", "other_order"])
def test_gpu_gluon_varlen_same_bits_as_tl_kernel(lens_q, lens_k, hq, hkv, causal, store, spy,
                                                 monkeypatch):
    """The Gluon kernel's varlen items (every sequence's 128-row query tiles, K / V from the
    padded rows) give the tl kernel's varlen bits with the same 128-key tiles, output and LSE;
    with the dispatched TMA store of full warpgroup rows, with plain stores only, and with the
    items in the order the dispatch does not use (other_order: dynamic, handed out as CTAs
    come free, where it is static, and the other way round)."""
    for name in ("VARIANT_VARLEN", "VARIANT_VARLEN_CAUSAL"):
        variant = getattr(gluon_dispatch, name)
        change = dict(tma_store=0) if store == "plain" else dict(
            dynamic=not variant.get("dynamic", False)) if store == "other_order" else {}
        monkeypatch.setattr(gluon_dispatch, name, dict(variant, **change))
    q8, k8, v8, varlen = _varlen_inputs(lens_q, lens_k or lens_q, hq, hkv, seed=sum(lens_q))
    ref, ref_lse = _run_varlen(q8, k8, v8, varlen, causal, config=TL_128)
    assert not spy
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    got, got_lse = _run_varlen(q8, k8, v8, varlen, causal)
    assert spy == ["mma"]
    assert not got.isnan().any()
    assert torch.equal(got, ref)
    assert torch.equal(got_lse, ref_lse)
    # a second call of the kind (the compiled kernel straight away) on other sequences of
    # the same sizes: the tables are arguments, not part of the plan
    lens2 = list(reversed(lens_q)) if lens_k is None else lens_q
    q8, k8, v8, varlen = _varlen_inputs(lens2, lens_k or lens2, hq, hkv, seed=7)
    ref, ref_lse = _run_varlen(q8, k8, v8, varlen, causal, config=TL_128)
    got, got_lse = _run_varlen(q8, k8, v8, varlen, causal)
    assert torch.equal(got, ref) and torch.equal(got_lse, ref_lse)


@pytest.mark.gpu
@needs_gluon
@pytest.mark.parametrize("d", [96, 80])
@pytest.mark.parametrize("causal", [None, "bottom_right"])
@pytest.mark.parametrize("store", ["tma", "plain"])
def test_gpu_gluon_varlen_head_dim_below_128_same_bits_as_tl_kernel(d, causal, store, spy,
                                                                    monkeypatch):
    """Head dims 80 / 96 on the 128 kernel (session 37): the tl kernel's bits, output and LSE;
    the output a view of wider rows, whose columns past d (where the kernel's plain stores of
    a sequence's last rows, or of every row with tma_store 0, would put the 128-wide tile's
    rest) keep their sentinel."""
    if store == "plain":
        for name in ("VARIANT_VARLEN", "VARIANT_VARLEN_CAUSAL"):
            monkeypatch.setattr(gluon_dispatch, name,
                                dict(getattr(gluon_dispatch, name), tma_store=0))
    lens = [1000, 0, 2100, 129, 1, 640]
    q8, k8, v8, varlen = _varlen_inputs(lens, lens, 4, 2, seed=d, d=d)
    ref, ref_lse = _run_varlen(q8, k8, v8, varlen, causal, config=TL_128)
    assert not spy
    monkeypatch.delenv("FP8ATTN_GLUON", raising=False)
    wide = torch.full((1, 4, sum(lens), 128), 7.0, device="cuda", dtype=torch.bfloat16)
    got, got_lse = _run_varlen(q8, k8, v8, varlen, causal, out=wide[..., :d])
    assert spy == ["mma"]
    assert torch.equal(got, ref)
    assert torch.equal(got_lse, ref_lse)
    assert bool((wide[..., d:] == 7.0).all())
