"""bitpack's oracle, written to be trusted by reading: FastLanes unpacking as bit strings.

In FastLanes' layout (rust/compression/bitpacking/src/lib.rs, ``pack!``/``unpack!``) a chunk of
1,024 values of T bits packed at width W is W*LANES words (LANES = 1024 / T): packed word
``LANES * k + lane`` is word k of lane ``lane``. Each lane's W words, read least significant bit
first, are one string of W*T bits holding T values of W bits: row r is bits [r*W, (r+1)*W). Row
r of lane l is the value at logical position ``FL_ORDER[r // 8] * 16 + (r % 8) * 128 + l``.

``unpack_chunk`` is exactly that, with numpy's ``unpackbits`` (little bit order) making the bit
strings; ``decode_page`` walks a page's chunks (a header word holding W, then the packed words)
and truncates to the page's value count. The encoder in ``inputs.py`` and a round trip against the
original values check it independently.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CHUNK = 1024
FL_ORDER = np.array([0, 4, 2, 6, 1, 5, 3, 7], dtype=np.int64)
DTYPES: dict[int, np.dtype[Any]] = {8: np.dtype("<u1"), 16: np.dtype("<u2"), 32: np.dtype("<u4"), 64: np.dtype("<u8")}


def positions(t: int) -> np.ndarray:
    """(T, LANES): the logical position of row r of lane l."""
    rows = np.arange(t)[:, None]
    lanes = np.arange(CHUNK // t)[None, :]
    return FL_ORDER[rows // 8] * 16 + (rows % 8) * 128 + lanes


def unpack_chunk(packed: np.ndarray, width: int, t: int) -> np.ndarray:
    """The 1,024 values (uintT) of one chunk packed at ``width`` bits."""
    lanes = CHUNK // t
    if packed.size != width * lanes:
        raise ValueError(f"a chunk packed at {width} bits holds {width * lanes} words, got {packed.size}")
    out = np.zeros(CHUNK, dtype=DTYPES[t])
    if width == 0:
        return out
    per_lane = np.ascontiguousarray(packed.astype(DTYPES[t]).reshape(width, lanes).T)     # (lanes, W words)
    bits = np.unpackbits(per_lane.view(np.uint8).reshape(lanes, -1), axis=1, bitorder="little")
    rows = bits.reshape(lanes, t, width).astype(np.uint64)                                   # (lanes, T rows, W bits)
    values = (rows << np.arange(width, dtype=np.uint64)).sum(axis=2, dtype=np.uint64)      # (lanes, T)
    out[positions(t).T] = values.astype(DTYPES[t])
    return out


def decode_page(words: np.ndarray, chunk_starts: np.ndarray, num_values: int, t: int) -> np.ndarray:
    """A page's values: every chunk unpacked in order, truncated to ``num_values``."""
    lanes = CHUNK // t
    if chunk_starts.size != -(-num_values // CHUNK):
        raise ValueError(f"{num_values} values need {-(-num_values // CHUNK)} chunks, got {chunk_starts.size}")
    parts = []
    for start in chunk_starts.tolist():
        width = int(words[start])
        if not 0 <= width <= t:
            raise ValueError(f"chunk header {width}: widths lie in 0..{t}")
        parts.append(unpack_chunk(words[start + 1:start + 1 + width * lanes], width, t))
    if not parts:
        return np.zeros(0, dtype=DTYPES[t])
    return np.concatenate(parts)[:num_values]
