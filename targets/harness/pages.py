"""Input pages a worker's op shares with the kernel read-only (in the worker's bundle).

The op keeps a read-write mapping of the same memory, so it can patch fresh values into a page
between calls (no call repeats an earlier one) while the kernel's view stays read-only: numpy
refuses to make an array over a read-only mapping writable, so a kernel cannot keep state in, or
corrupt, its input.
"""

from __future__ import annotations

import mmap
import os

import numpy as np


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
