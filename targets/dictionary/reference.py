"""dictionary's oracle, written to be trusted by reading.

A page is dictionary-encoded as Lance 2.1 does it (``inputs.dictionary_encode``): int32 indices
into a dictionary of distinct values. Decoding replaces every index by its value:

- variable width (strings, binary): the dictionary is ``dict_offsets`` (uint32 [D+1], from 0) and
  ``dict_bytes``; value i is ``dict_bytes[dict_offsets[i]:dict_offsets[i+1]]``. The decoded page
  is the values of the indices, concatenated, with uint32 offsets [N+1] from 0 (row r is
  ``out_bytes[out_offsets[r]:out_offsets[r+1]]``).
- fixed width (16-byte values): ``dictionary`` uint8 [D, 16]; the decoded page is
  ``dictionary[indices]``, uint8 [N, 16].

``decode_varwidth`` is numpy's ``cumsum``/``repeat`` written plainly; the tests check it against
``b"".join`` of Python byte strings and against a round trip through the encoder.
"""

from __future__ import annotations

import numpy as np


def window_indices(pool: np.ndarray, call: dict[str, np.ndarray]) -> np.ndarray:
    """A call's page: ``n`` indices of the pool from ``start``, with the call's patches applied
    (``patch_pos`` relative to the start, ``patch_idx`` the new indices)."""
    start, n = (int(v) for v in call["window"])
    page = pool[start:start + n].copy()
    page[call["patch_pos"]] = call["patch_idx"]
    return page


def value_lengths(dict_offsets: np.ndarray) -> np.ndarray:
    """Each dictionary value's length in bytes (int64)."""
    return np.diff(dict_offsets.astype(np.int64))


def decode_offsets(indices: np.ndarray, dict_offsets: np.ndarray) -> np.ndarray:
    """The decoded page's offsets (uint32 [N+1]): 0, then the running sum of the rows' lengths."""
    lengths = value_lengths(dict_offsets)[indices.astype(np.int64)]
    out = np.zeros(indices.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out.astype(np.uint32)


def output_size(indices: np.ndarray, dict_offsets: np.ndarray) -> int:
    """The decoded page's size in bytes."""
    return int(value_lengths(dict_offsets)[indices.astype(np.int64)].sum())


def decode_varwidth(indices: np.ndarray, dict_offsets: np.ndarray,
                    dict_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets uint32 [N+1], bytes uint8 [total]): each output byte's source is its row's value
    start in the dictionary plus its position within the row."""
    idx = indices.astype(np.int64)
    offsets = decode_offsets(indices, dict_offsets).astype(np.int64)
    lengths = np.diff(offsets)
    starts = dict_offsets.astype(np.int64)[idx]
    row_of_byte = np.repeat(np.arange(idx.size), lengths)
    within = np.arange(offsets[-1]) - offsets[:-1][row_of_byte]
    data = dict_bytes[starts[row_of_byte] + within]
    return offsets.astype(np.uint32), data.astype(np.uint8)


def decode_fixed(indices: np.ndarray, dictionary: np.ndarray) -> np.ndarray:
    """The decoded page of 16-byte values: uint8 [N, 16]."""
    return dictionary[indices.astype(np.int64)].reshape(indices.size, dictionary.shape[1])
