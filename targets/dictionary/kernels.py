"""dictionary kernels: the one file the autoresearch loop may edit.

A compiled, faithful port of Lance 2.1's dictionary decode, as read at lancedb/lance d2039d750
(2025-11-15), one thread, numba:

  - `DictionaryDataBlock::decode_helper` (rust/lance-encoding/src/data.rs): for every index, in
    page order, `data_builder.append(&self.dictionary, idx..idx + 1)`: one append per row, the
    32-bit indices read as unsigned (`UInt32Type`, `idx.to_usize()`).
  - Variable width (strings): `VariableWidthDataBlockBuilder::<i32>::append` (data.rs): read the
    dictionary's `offsets[idx]` and `offsets[idx + 1]`, `extend_from_slice` the bytes between them
    onto the output (a memcpy of the value's length), then push the running byte count
    (`previous_len += next - current`) as the row's end offset; the output offsets start at 0.
  - Fixed width (16-byte values, `DICT_FIXED_WIDTH_BITS_PER_VALUE` = 128 in
    encodings/logical/primitive/dict.rs): `FixedWidthDataBlockBuilder::append` copies
    `bytes_per_value` bytes from `idx * bytes_per_value` (a runtime width: the builder is generic
    over bit widths).

Rust's `extend_from_slice` is a memcpy; numba has no memcpy for a runtime length, so the copy is
its loop (byte by byte; usize arithmetic as np.uint64). Newer upstream (after d2039d750) batches
the appends (`DataBlockBuilder::append_ranges`) and validates each range first; the per-value
copy and offset push are unchanged.

Lance grows its output `Vec`s from an estimate (the dictionary's size scaled to the page, as if
indices were uniform); here the op hands the kernel buffers of the exact output size, so the port
writes in place. No tuning beyond upstream's loop: this is the bar a keep must beat.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def _decode_varwidth(indices, dict_offsets, dict_bytes, out_offsets, out_bytes):
    # Rust's offsets and lengths are usize: unsigned here too (np.uint64), which also spares
    # numba's negative-index handling that Rust does not have.
    out_offsets[0] = 0                          # VariableWidthDataBlockBuilder::new: offsets = [0]
    previous_len = np.uint64(0)
    for i in range(indices.size):
        idx = np.uint64(np.uint32(indices[i]))  # K = UInt32Type: idx.to_usize()
        start = np.uint64(dict_offsets[idx])
        end = np.uint64(dict_offsets[idx + np.uint64(1)])
        # self.bytes.extend_from_slice(&block.data[start..end]): a copy of the value's bytes
        length = end - start
        j = np.uint64(0)
        while j < length:
            out_bytes[previous_len + j] = dict_bytes[start + j]
            j += np.uint64(1)
        # self.offsets.extend(...): previous_len += this_value_len; T::from_usize(previous_len)
        previous_len += length
        out_offsets[i + 1] = previous_len


@njit(cache=True)
def _decode_fixed(indices, dictionary, out):
    bytes_per_value = np.uint64(dictionary.shape[1])   # the builder's runtime width (128 bits here)
    src = dictionary.reshape(-1)
    dst = out.reshape(-1)
    pos = np.uint64(0)
    for i in range(indices.size):
        start = np.uint64(np.uint32(indices[i])) * bytes_per_value
        # self.values.extend_from_slice(&block.data[start..end])
        j = np.uint64(0)
        while j < bytes_per_value:
            dst[pos + j] = src[start + j]
            j += np.uint64(1)
        pos += bytes_per_value


class VarWidthDictDecoder:
    def __init__(self, dict_offsets, dict_bytes):
        self.dict_offsets = dict_offsets
        self.dict_bytes = dict_bytes

    def decode(self, indices, out_offsets, out_bytes):
        _decode_varwidth(indices, self.dict_offsets, self.dict_bytes, out_offsets, out_bytes)


class FixedWidthDictDecoder:
    def __init__(self, dictionary):
        self.dictionary = dictionary

    def decode(self, indices, out):
        _decode_fixed(indices, self.dictionary, out)
