"""device_tables.built_off_pool: the build runs in another thread; its result and its errors
come back to the caller."""
import threading

import pytest

from fp8attn.device_tables import built_off_pool


def test_built_off_pool_runs_in_another_thread_and_returns_the_result():
    got = built_off_pool(lambda a, b: (a + b, threading.get_ident()), 2, 3)
    assert got[0] == 5
    assert got[1] != threading.get_ident()


def test_built_off_pool_reraises_in_the_caller():
    def bad():
        raise ValueError("no table")
    with pytest.raises(ValueError, match="no table"):
        built_off_pool(bad)
