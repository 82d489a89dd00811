"""benchmarks/experiments/sass_issue_model.py's loop finder and opcode counts on hand-written
SASS (no Triton 3.6 needed): gluon_compile.softmax_under_pv and sass_vs_fa3.py read the tile loops
through them."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks", "experiments"))
from sass_issue_model import innermost_wgmma_loops, opcode_counts  # noqa: E402

# an item loop (0x10 .. 0xb0) around a tile loop (0x30 .. 0x80) with two wgmmas, and an
# mbarrier wait stub (0xd0) that branches back unconditionally into the tile loop
NESTED = """
        /*0000*/                   S2R R0, SR_TID.X ;
        /*0010*/                   QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR4], R24 ;
        /*0020*/                   IADD3 R1, R1, 0x1, RZ ;
        /*0030*/                   QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR8], R24 ;
        /*0040*/                   MUFU.EX2 R2, R3 ;
        /*0050*/                   FFMA R4, R2, R5, R6 ;
        /*0060*/              @!P0 MUFU.EX2 R7, R8 ;
        /*0070*/                   QGMMA.64x128x32.F32.E4M3.E4M3 R40, R152, gdesc[UR12], R40 ;
        /*0080*/               @P1 BRA 0x30 ;
        /*0090*/                   FMUL R9, R9, 0.25 ;
        /*00a0*/                   NOP ;
        /*00b0*/               @P2 BRA 0x10 ;
        /*00c0*/                   EXIT ;
        /*00d0*/                   BRA 0x40 ;
"""


def test_only_the_innermost_loop_with_enough_wgmmas():
    loops = innermost_wgmma_loops(NESTED, min_wgmmas=2)
    assert len(loops) == 1
    assert loops[0][0].startswith("QGMMA") and loops[0][-1] == "@P1 BRA 0x30"
    assert len(loops[0]) == 6


def test_the_item_loop_counts_when_the_tile_loop_has_too_few_wgmmas():
    loops = innermost_wgmma_loops(NESTED, min_wgmmas=3)
    assert [len(b) for b in loops] == [11]      # 0x10 .. 0xb0, three QGMMAs


def test_no_loop_past_max_len():
    assert innermost_wgmma_loops(NESTED, min_wgmmas=2, max_len=5) == []


def test_opcode_counts_strip_modifiers_and_guards():
    counts = opcode_counts(innermost_wgmma_loops(NESTED, min_wgmmas=2)[0])
    assert counts == {"QGMMA": 2, "MUFU": 2, "FFMA": 1, "BRA": 1}
    assert list(counts)[:2] == ["QGMMA", "MUFU"]
