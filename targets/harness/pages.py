"""Input pages and output digests: what a target's op uses around its kernel call in the worker
(in the worker's bundle).

- Input pages the kernel sees read-only: the op keeps a read-write mapping of the same memory, so
  it can patch fresh values into a page between calls (no call repeats an earlier one) while the
  kernel's view stays read-only (numpy refuses to make an array over a read-only mapping
  writable), so a kernel cannot keep state in, or corrupt, its input.
- A keyed digest of a large output, returned by timed calls instead of the output itself (shipping
  megabytes back per call would cost more than the op): keys fresh per call, never shown to the
  kernel; the runner compares it with the oracle's digest under the same key.
"""

from __future__ import annotations

import mmap
import os

import numpy as np
from numba import njit


def read_only_copy(array: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, tuple[mmap.mmap, ...]]:
    """(read-only view, read-write view, the mappings) of a 1-d copy of ``array`` in an anonymous
    memory file named ``name``; keep the mappings alive as long as the views."""
    size = max(array.nbytes, 1)
    fd = os.memfd_create(name)
    try:
        os.ftruncate(fd, size)
        rw = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        ro = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)
    writable = np.frombuffer(rw, dtype=array.dtype, count=array.size)
    writable[...] = array
    return np.frombuffer(ro, dtype=array.dtype, count=array.size), writable, (rw, ro)


def immutable(array: np.ndarray) -> np.ndarray:
    """``array`` if its memory can never be made writable (arrays the worker receives are views of
    ``bytes``), else a copy over ``bytes``. Flagging a view read-only is not enough: a kernel can
    flag it writable again when the memory behind it is writable."""
    probe = array.view()
    try:
        probe.flags.writeable = True
    except ValueError:
        return array
    return np.frombuffer(array.tobytes(), dtype=array.dtype).reshape(array.shape)


@njit("uint64(uint32[::1], uint64, uint64)", cache=True)
def digest32(words, k1, k2):
    """sum of (w_i ^ k1) * (k2 | 1 + 2 i) mod 2**32 over 32-bit words: any single wrong word
    changes it (the factors are odd); without the keys a wrong output matches by chance (2**-32)."""
    acc = np.uint64(0)
    mul = k2 | np.uint64(1)
    for i in range(words.size):
        acc += (np.uint64(words[i]) ^ k1) * (mul + np.uint64(2 * i))
    return acc & np.uint64(0xFFFF_FFFF)


def digest_buffers(buffers: list[np.ndarray], key: np.ndarray) -> np.ndarray:
    """The keyed digest of each whole buffer (any dtype and length, C-contiguous), uint64[len];
    ``key`` uint64[2], fresh per call. Each buffer gets its own key (the call's, mixed with its
    index); a tail shorter than a word is zero-padded into one more word, so every byte counts."""
    low = np.uint64(0xFFFF_FFFF)
    out = np.zeros(len(buffers), dtype=np.uint64)
    for i, buf in enumerate(buffers):
        k1 = (np.uint64(key[0]) + np.uint64(0x9E37_79B9) * np.uint64(i + 1)) & low
        k2 = (np.uint64(key[1]) ^ np.uint64(0x85EB_CA6B) * np.uint64(i + 1)) & low
        raw = buf.reshape(-1).view(np.uint8)
        whole = raw.size // 4 * 4
        acc = digest32(raw[:whole].view(np.uint32), k1, k2)
        if whole < raw.size:
            tail = np.zeros(4, dtype=np.uint8)
            tail[:raw.size - whole] = raw[whole:]
            acc = (acc + digest32(tail.view(np.uint32), k2, k1)) & low
        out[i] = acc
    return out

