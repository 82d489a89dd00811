"""The examples that run in seconds, held to what they claim (examples/)."""
import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_varlen_fp8_cache_example(device):
    """An FP8 cache with one scale per (sequence, head) loses to the large Q / K channels
    (measured on the CPU, seed 0: 1.67e-1 against 3.8e-2); rotating Q and K before quantising
    them brings it to the bf16 path's error, which the library's own recipe reaches."""
    res = _load("varlen_fp8_cache").run(str(device), seed=0)
    plain, rotated, bf16 = (res[k]["batch"] for k in ("FP8 cache", "rotated cache", "bf16 in"))
    assert bf16 < 6e-2 and rotated < 1.2 * bf16
    assert rotated < 0.4 * plain
    assert all(len(r["per_sequence"]) == 5 for r in res.values())
