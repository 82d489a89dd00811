"""benchmarks/experiments/sass_loop_skip_check.py on hand-written SASS (no Triton 3.6 needed):
it must flag the pattern of session 24's ptxas miscompile, so that
tests/test_sass_loop_skip.py's "no stale read" on the real kernels can fail."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks", "experiments"))
import sass_loop_skip_check as check  # noqa: E402

# an item loop (0x10 .. 0xa0) whose full-tile loop (0x40 .. 0x60) may be skipped (0x20); the
# preheader (0x30) computes UR20, the descriptor the masked tile at 0x90 reads
MISCOMPILED = """
        /*0000*/                   S2R R0, SR_TID.X ;
        /*0010*/                   ISETP.GE.AND P0, PT, R0, 0x1, PT ;
        /*0020*/              @!P2 BRA 0x90 ;
        /*0030*/                   UIADD3 UR20, UR4, 0x2, URZ ;
        /*0040*/                   QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR20], R24 ;
        /*0050*/                   IADD3 R1, R1, 0x1, RZ ;
        /*0060*/               @P1 BRA 0x40 ;
        /*0070*/                   NOP ;
        /*0080*/                   NOP ;
        /*0090*/                   QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR20], R24 ;
        /*00a0*/               @P3 BRA 0x10 ;
        /*00b0*/                   EXIT ;
"""


def _kinds(text):
    return [(f["reg"], f["kind"], f["qgmma"]) for f in check.check(check.parse(text))]


def test_flags_a_descriptor_only_the_skipped_preheader_writes():
    found = _kinds(MISCOMPILED)
    assert ("UR20", "stale", True) in found


def test_a_descriptor_recomputed_after_the_skip_is_clean():
    # the skip lands on a recomputation of UR20 before the masked tile reads it
    fixed = MISCOMPILED.replace("@!P2 BRA 0x90", "@!P2 BRA 0x80").replace(
        "        /*0080*/                   NOP ;",
        "        /*0080*/                   UIADD3 UR20, UR6, 0x2, URZ ;")
    assert _kinds(fixed) == []


def test_a_value_carried_into_the_item_is_a_merge_not_stale():
    carried = MISCOMPILED.replace(
        "        /*0010*/                   ISETP.GE.AND P0, PT, R0, 0x1, PT ;",
        "        /*0010*/                   UIADD3 UR20, UR4, 0x2, URZ ;")
    assert [k for _, k, _ in _kinds(carried)] and \
        all(k == "merge" for _, k, _ in _kinds(carried))
