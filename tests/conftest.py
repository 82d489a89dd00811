"""Test setup: Triton kernels run through the interpreter when no GPU is present.

TRITON_INTERPRET must be set before triton is imported, hence at conftest import time.
FP8ATTN_TUNE=minimal asks the kernels' autotuners for a single config (fast tests, as attention-gym does).
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("FP8ATTN_TUNE", "minimal")

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture
def device():
    return torch.device("cuda" if HAS_CUDA else "cpu")


@pytest.fixture(autouse=True)
def _fresh_call_plans():
    """Each test starts without recorded call plans (fp8attn.call_plan): a test that
    monkeypatches a module between calls must see its patch take effect, not a plan recorded
    before it."""
    from fp8attn import call_plan
    call_plan.clear()
    yield
    call_plan.clear()
