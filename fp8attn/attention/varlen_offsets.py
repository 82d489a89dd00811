"""cu_seqlens of a varlen call: checked on the host, without stalling the call where it can be
helped, and remembered once checked.

Bad offsets must raise (they index the buffers), so the call reads them on the host. On the
GPU they travel to the host while the launches are queued and are checked after them: the
kernels clamp every offset into the buffers, so bad ones cannot reach outside before the check
raises. Checked first, every call would wait for the GPU to finish the work queued before it
(H200, session 32: 1.65 ms a call for 0.6 ms of GPU work at 8 x 2048 tokens). Checked after,
the call still waits at its end for the copy, so the host cannot run ahead of the GPU.

Offsets that passed are remembered by tensor (its identity and version counter) with the
lengths they were checked against: a model's layers share one cu_seqlens per forward, so only
the first layer's call copies and waits. A tensor changed in place by a torch op gets a new
version and is checked again. Inference tensors (made under torch.inference_mode) have no
version counter and are checked every call; offsets made under torch.inference_mode(False)
are ordinary tensors, remembered even when the calls run under inference mode. Writes that bypass torch's version counter (a custom
kernel filling a persistent buffer) are not seen: such offsets are not checked again, and the
kernels' clamping is then all that stands between bad offsets and the buffers (no reads or
writes outside them; the results of bad offsets are garbage either way).
"""
from __future__ import annotations

import weakref
from typing import NamedTuple

import numpy
import torch

from ..device_tables import capturing

MAX_REMEMBERED = 64        # checked (cu_q, cu_k) pairs kept; all are dropped beyond
_CHECKED: dict = {}


def varlen_offsets(q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, emulate: bool):
    """(host, pending) for a varlen call: host = (cu_q, cu_k) on the host, checked, where the
    call reads them first (the CPU paths; the emulation needs them), else None; pending = what
    offsets_checked checks after the launches (eager GPU calls of offsets not checked
    before), else None."""
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError(f"cu_seqlens_q has {cu_seqlens_q.numel()} entries, cu_seqlens_k "
                         f"{cu_seqlens_k.numel()}")
    if capturing(q.device):
        # a CUDA-graph capture cannot read the offsets: it trusts cu_seqlens and max_seqlen_q,
        # as FA3's call does (the kernels clamp every offset into the buffers)
        if emulate:
            raise RuntimeError("flash_attn_varlen_func: the emulation (FP8ATTN_BACKEND=emulation) "
                               "reads cu_seqlens on the host, which a CUDA-graph capture cannot")
        return None, None
    if emulate or not q.is_cuda:
        cu_q, cu_k = torch.cat([cu_seqlens_q, cu_seqlens_k]).cpu().chunk(2)
        check_offsets(cu_q, cu_k, q.shape[0], k.shape[0], max_seqlen_q)
        return (cu_q, cu_k), None
    lengths = (q.shape[0], k.shape[0], int(max_seqlen_q))
    if _known_good(cu_seqlens_q, cu_seqlens_k, lengths):
        return None, None
    return None, _Pending(*_offsets_to_host(cu_seqlens_q, cu_seqlens_k), cu_seqlens_q,
                          cu_seqlens_k, lengths)


def offsets_checked(pending) -> None:
    """Wait for pending's copy and check the offsets (ValueError if bad); remember them."""
    if pending is None:
        return
    pending.copied.synchronize()
    check_offsets(*pending.host.chunk(2), *pending.lengths)
    _remember(pending.cu_q, pending.cu_k, pending.lengths)


class _Pending(NamedTuple):
    host: torch.Tensor          # pinned: cu_q then cu_k, once `copied` has completed
    copied: torch.cuda.Event
    cu_q: torch.Tensor
    cu_k: torch.Tensor
    lengths: tuple              # (total_q, total_k, max_seqlen_q) checked against


def _versions(cu_q, cu_k):
    """Both tensors' version counters, or None for inference tensors (which have none)."""
    if cu_q.is_inference() or cu_k.is_inference():
        return None
    return cu_q._version, cu_k._version


def _known_good(cu_q, cu_k, lengths) -> bool:
    hit = _CHECKED.get((id(cu_q), id(cu_k)))
    return (hit is not None and hit[0]() is cu_q and hit[1]() is cu_k
            and hit[2] == _versions(cu_q, cu_k) and hit[3] == lengths)


def _remember(cu_q, cu_k, lengths) -> None:
    versions = _versions(cu_q, cu_k)
    if versions is None:
        return
    if len(_CHECKED) >= MAX_REMEMBERED:
        _CHECKED.clear()
    _CHECKED[id(cu_q), id(cu_k)] = (weakref.ref(cu_q), weakref.ref(cu_k), versions, lengths)


def forget() -> None:
    """Drop every remembered check (the next call of each pair checks again)."""
    _CHECKED.clear()


def _offsets_to_host(cu_q: torch.Tensor, cu_k: torch.Tensor):
    """(a pinned host buffer, an event): cu_q then cu_k copied into the buffer once the event
    has completed; nothing waits here."""
    both = torch.cat([cu_q, cu_k])
    host = torch.empty(both.shape, dtype=both.dtype, pin_memory=True)
    host.copy_(both, non_blocking=True)          # on the offsets' device's current stream
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(both.device))   # that stream, whichever is current
    return host, copied


def check_offsets(cu_q: torch.Tensor, cu_k: torch.Tensor, total_q: int, total_k: int,
                  max_seqlen_q: int) -> None:
    """Raise a ValueError naming the first wrong offset argument (host tensors). In numpy:
    torch's ops on a few host ints cost about 5 us each, a fifth of a varlen call's host time
    beyond the dense call's (session 33, launches stubbed)."""
    a_q = check_cu(cu_q, total_q, "cu_seqlens_q")
    check_cu(cu_k, total_k, "cu_seqlens_k")
    longest = int(numpy.diff(a_q).max())          # check_cu: at least two offsets
    if longest > max_seqlen_q:
        raise ValueError(f"max_seqlen_q={max_seqlen_q} is below the longest query sequence "
                         f"({longest})")


def check_cu(cu: torch.Tensor, total: int, name: str):
    """cu's values as a numpy array, checked: at least 2, from 0, never decreasing, to total."""
    a = cu.numpy()
    if a.size < 2:
        raise ValueError(f"{name} needs at least 2 entries (nseq + 1), got {a.size}")
    if a[0] != 0 or a[-1] != total or (a[1:] < a[:-1]).any():
        raise ValueError(f"{name} must start at 0, never decrease and end at the packed length "
                         f"{total}; got {a[:8].tolist()}{'...' if a.size > 8 else ''}")
    return a
