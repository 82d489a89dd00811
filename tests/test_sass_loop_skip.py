"""The dispatched head-dim-256 Gluon kernels against session 24's ptxas miscompile.

Triton 3.6's ptxas computed the two-Q-buffer kernels' Q K^T descriptors in the full-tile loop's
preheader only, and the masked tiles after the loop read them: items without a full tile got
the previous item's descriptors (benchmarks/RESULTS.md "Session 24", "The cause"). This builds
the kernels offline (sm_90a, no GPU needed) and reads their SASS with
benchmarks/experiments/sass_loop_skip_check.py. It needs Triton 3.6 (the version the GPU machines
run, whose ptxas made the SASS) without the interpreter; elsewhere it is skipped. Offline:
TRITON_INTERPRET=0 PYTHONPATH=<Triton 3.6>:. python -m pytest tests/test_sass_loop_skip.py
"""
from __future__ import annotations

import os
import sys

import pytest
import triton

pytestmark = [
    pytest.mark.skipif(not triton.__version__.startswith("3.6."),
                       reason=f"builds with Triton 3.6's ptxas (the GPU machines' version), "
                              f"got {triton.__version__}"),
    # conftest.py turns the interpreter on without a GPU; it replaces the kernels' functions
    # (run offline with TRITON_INTERPRET=0)
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                       reason="needs compiled kernels, not the interpreter"),
]

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "benchmarks", "experiments")


def _stale_reads(tag: str, **build_args) -> list:
    sys.path.insert(0, EXPERIMENTS)
    import sass_loop_skip_check as check
    sass = check.kernel_sass("skiptest_" + tag, **build_args)
    return [f for f in check.check(check.parse(sass)) if f["kind"] == "stale"]


def test_the_causal_two_q_buffer_form_reads_no_stale_registers():
    """VARIANT_D256_CAUSAL with two Q buffers (not dispatched; gluon_fwd runs it on request):
    in session 24 its masked tile read the full-tile loop's preheader UR20, clean since
    gluon_fwd._consumer_split's masked-tile Q view (session 25)."""
    from fp8attn.attention import gluon_dispatch as gd
    for causal in (1, 2):
        assert _stale_reads(f"causal_q2_{causal}", head_dim=256, causal=causal,
                            **dict(gd.VARIANT_D256_CAUSAL, q_bufs=2)) == []


@pytest.mark.parametrize("name,causal", [("VARIANT_D256_CAUSAL", 1), ("VARIANT_D256_CAUSAL", 2),
                                         ("VARIANT_D256_CAUSAL_ONE_BLOCK", 1),
                                         ("VARIANT_D256", 0)])
def test_dispatched_hdim256_kernels_read_no_stale_registers(name, causal):
    """What the dispatch launches at head dim 256 (causal in both alignments): no uniform
    register read after a loop skip that only the skipped loop writes (the check itself is
    tested on hand-written SASS: test_sass_loop_skip_check.py). (VARIANT_D256_SHORT has
    one on its items without a full tile, which its calls, from 512 keys, never have;
    gluon_fwd._launch_plan refuses calls with fewer keys than a tile.)"""
    from fp8attn.attention import gluon_dispatch as gd
    assert _stale_reads(f"{name}_{causal}", head_dim=256, causal=causal,
                        **getattr(gd, name)) == []
