"""Integer helpers for launch code on the host.

`triton.cdiv` and `triton.next_power_of_2` are constexpr functions: called from Python each
goes through Triton's argument unwrapping, several microseconds a call, and the launch paths
call them a few times per attention call (cProfile, CPU, session 34)."""


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for integers, b > 0."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The least power of two >= n (n >= 1), as triton.next_power_of_2."""
    return 1 << (n - 1).bit_length()
