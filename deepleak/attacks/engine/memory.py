"""Handing freed heap pages back to the OS between the replay's reverse steps (glibc only).

glibc keeps freed blocks of 1-32 MB (a ResNet's weight tensors) in its heap, so without this a
process's resident memory keeps the high-water mark of every reverse step's temporaries.
"""

from __future__ import annotations

import torch


def _libc_trim():
    """glibc's ``malloc_trim``, or None (not glibc)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _libc_trim()
# Weight sets smaller than this (bytes, summed) are not worth a trim: it would cost more than it frees.
TRIM_MIN_BYTES = 16 * 2**20


def release_freed_memory(weights: list[torch.Tensor]) -> None:
    """Hand the C heap's free pages back to the OS after a reverse step of a large model
    (``weights`` on the CPU, at least TRIM_MIN_BYTES in all); a no-op otherwise."""
    if _MALLOC_TRIM is not None and weights and weights[0].device.type == "cpu" and \
            sum(w.numel() * w.element_size() for w in weights) >= TRIM_MIN_BYTES:
        _MALLOC_TRIM(0)
