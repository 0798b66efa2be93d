"""bitpack's fixed types and the op the worker runs around each kernel call (immutable in a run).

An instance is one page of a Lance 2.1 miniblock column of unsigned T-bit integers (T = 8, 16,
32 or 64) encoded with inline FastLanes bit-packing: its words (uintT: per chunk of 1,024 values
a header word holding the width W, then W*1024/T packed words, chunks 8-byte aligned) and the word
offset of every chunk's header. The page is sent once per workload into a memory file mapped
twice: the kernel gets a read-only view (numpy refuses to make it writable); the op patches fresh
packed words into it through the second mapping before every call and undoes them after, so no
call repeats an earlier one and nothing a kernel kept from one call is valid for the next.

The op is one ``decode`` call: the whole page into ``out`` (uintT[num_values], sized from the
page's metadata before the kernel runs). ``out`` is a view of a longer buffer: the values, then a
guard of at least ``GUARD`` words. The buffer is allocated once per instance (a fresh 1-8 MB
allocation per call would cost its page faults on every call, the same for every kernel) and
refilled with a poison pattern before every call, so a value the kernel
never writes (a zero it assumed, a skipped chunk) or a write past the declared output (into the
guard) fails the check. The check op returns the values and the guard for a bit-for-bit
comparison. The speed op returns a keyed digest of values and guard (computed here, after the
kernel, with a key drawn per call and never shown to the kernel): shipping 1-8 MB of output
through the worker's pipe would cost more than the decode; the runner compares the digest with
the oracle's. Workers import only this module (plus the harness), so it imports nothing else from
the project.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from targets.harness.pages import digest_buffers, read_only_copy

CHUNK = 1024
GUARD = 64                                     # poison words past the declared output
POISON_BYTE = 0xA5                             # every byte of the prefill: never a whole page's answer
DTYPES: dict[int, np.dtype[Any]] = {8: np.dtype("<u1"), 16: np.dtype("<u2"), 32: np.dtype("<u4"), 64: np.dtype("<u8")}

# Modules kernels.py may import (the static policy's allowlist).
ALLOWED_IMPORTS = ("numpy", "numba", "math")

# The API kernels.py must keep: class -> method -> parameter names (checked on every edit).
KERNEL_API: dict[str, dict[str, list[str]]] = {
    "BitpackDecoder": {
        "__init__": ["self", "bits"],
        "decode": ["self", "words", "chunk_starts", "num_values", "out"],
    },
}



def digest(values_and_guard: np.ndarray, key: np.ndarray) -> np.ndarray:
    """The keyed digest of an output buffer (values then guard), uint64[1] (``key``: uint64[2])."""
    return digest_buffers([values_and_guard], key)


def empty_output(num_values: int, t: int) -> np.ndarray:
    """The poison-filled buffer (uintT): ``num_values`` values, then ``GUARD`` guard words and up to
    7 more, so that the buffer is a whole number of 8-byte words."""
    nbytes = -(-(num_values + GUARD) * (t // 8) // 8) * 8
    return np.full(nbytes, POISON_BYTE, dtype=np.uint8).view(DTYPES[t])


@dataclass
class Instance:
    """One page: the kernel (``__init__`` untimed), the read-only view it decodes and the op's
    writable view of the same memory (for the patches)."""

    kernel: Any
    t: int
    num_values: int
    words: np.ndarray
    chunk_starts: np.ndarray
    _words_rw: np.ndarray
    _maps: tuple[mmap.mmap, ...]
    _out: np.ndarray                           # the output buffer, poisoned afresh before every call



def build(kernels: ModuleType, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Instance:
    t, n = int(params["bits"]), int(params["num_values"])
    words, starts = arrays["words"], arrays["chunk_starts"]
    if t not in DTYPES or words.dtype != DTYPES[t] or words.ndim != 1:
        raise ValueError(f"words must be a 1-d array of uint{t}")
    if starts.dtype != np.int64 or starts.ndim != 1 or starts.size != -(-n // CHUNK) or n < 0:
        raise ValueError(f"{n} values need {-(-n // CHUNK)} chunk offsets (int64)")
    lanes = CHUNK // t
    for s in starts.tolist():                  # every chunk's header and packed words inside the page
        if not 0 <= s < words.size or not 0 <= int(words[s]) <= t or s + 1 + int(words[s]) * lanes > words.size:
            raise ValueError(f"chunk at word {s} is not a valid chunk of the page")
    ro, rw, maps = read_only_copy(words, "bitpack-page")
    return Instance(kernels.BitpackDecoder(t), t, n, ro, starts, rw, maps, empty_output(n, t))


def _decode(inst: Instance, arrays: dict[str, np.ndarray]) -> np.ndarray:
    pos = arrays["patch_pos"]
    buf = inst._out
    buf.view(np.uint8).fill(POISON_BYTE)
    saved = inst._words_rw[pos]
    inst._words_rw[pos] = arrays["patch_words"]
    try:
        inst.kernel.decode(inst.words, inst.chunk_starts, inst.num_values, buf[:inst.num_values])
    finally:
        inst._words_rw[pos] = saved
    return buf


def _check(inst: Instance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    buf = _decode(inst, arrays)
    return {"values": buf[:inst.num_values].copy(), "guard": buf[inst.num_values:].copy()}


def _speed(inst: Instance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"digest": digest(_decode(inst, arrays), arrays["key"])}


OPS = {"check": _check, "speed": _speed}
