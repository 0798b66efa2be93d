"""bitpack kernels: the one file the autoresearch loop may edit.

A compiled (numba, one thread, no fastmath), faithful port of how Lance decodes one page of a
file-format 2.1 miniblock column encoded with inline FastLanes bit-packing:
  - lancedb/lance d2039d750, rust/lance-encoding/src/encodings/physical/bitpacking.rs
    ``InlineBitpacking::unchunk`` (reached through ``MiniBlockDecompressor::decompress``), once
    per chunk of at most 1,024 values: the chunk's bytes are copied into a fresh Vec ("Copy for
    memory alignment"), its first word (of the column's type T) is the bit width W, a zeroed
    1,024-value buffer receives ``BitPacking::unchecked_unpack(W, packed, buffer)``, and the
    buffer is truncated to the chunk's value count; the miniblock decoder then appends each
    chunk's values to the page's output (one more copy).
  - rust/compression/bitpacking/src/lib.rs (Lance's vendored copy of spiraldb/fastlanes@8e0ff37),
    the ``unpack!`` macro as ``unpack_8/16/32/64`` expand it: for each lane (LANES = 1024 / T
    words) and each row r in 0..T, the value's W bits start at bit r*W of the lane's bit stream:
    word ``LANES * (r*W / T) + lane`` at shift ``r*W % T``, spilling into word
    ``LANES * ((r+1)*W / T) + lane``; the value goes to the transposed position
    ``FL_ORDER[r / 8] * 16 + (r % 8) * 128 + lane`` with FL_ORDER = [0, 4, 2, 6, 1, 5, 3, 7].
    W = 0 writes zeros, W = T copies the word.
Upstream instantiates one unrolled function per (T, W) (W a compile-time constant, rows unrolled
inside the lane loop); here T is a compile-time constant as upstream (from the arrays' dtype:
numba compiles one version per T), W a runtime value and the row loop a loop, the same operation
order. The per-chunk zeroed buffer is one reused scratch zeroed per chunk (Lance allocates a
zeroed Vec each time). Arithmetic is done in uint64 and stored into the column's type. No tuning
beyond upstream: this is the bar a keep must beat.
"""

import numpy as np
from numba import njit

CHUNK = 1024
FL_ORDER = np.array([0, 4, 2, 6, 1, 5, 3, 7], dtype=np.int64)
ALL_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


@njit(cache=True)
def _mask(width):
    # lib.rs unpack!'s mask(width): all ones when width == T, else (1 << width) - 1; here in u64.
    if width >= 64:
        return ALL_ONES
    return (np.uint64(1) << np.uint64(width)) - np.uint64(1)


@njit(cache=True)
def _unchecked_unpack(width, t, packed, out):
    """BitPacking::unchecked_unpack(width, packed, out): 1,024 values of ``t`` bits from
    ``width * 1024 / t`` packed words (lane-major rows), in the unpack! macro's loop order."""
    t = out.itemsize * 8
    lanes = CHUNK // t
    if width == 0:
        for lane in range(lanes):
            for row in range(t):
                out[FL_ORDER[row // 8] * 16 + (row % 8) * 128 + lane] = 0
    elif width == t:
        for lane in range(lanes):
            for row in range(t):
                out[FL_ORDER[row // 8] * 16 + (row % 8) * 128 + lane] = packed[lanes * row + lane]
    else:
        for lane in range(lanes):
            src = np.uint64(packed[lane])
            for row in range(t):
                curr_word = (row * width) // t
                next_word = ((row + 1) * width) // t
                shift = np.uint64((row * width) % t)
                if next_word > curr_word:
                    remaining_bits = ((row + 1) * width) % t
                    current_bits = width - remaining_bits
                    tmp = (src >> shift) & _mask(current_bits)
                    if next_word < width:
                        src = np.uint64(packed[lanes * next_word + lane])
                        tmp |= (src & _mask(remaining_bits)) << np.uint64(current_bits)
                else:
                    tmp = (src >> shift) & _mask(width)
                out[FL_ORDER[row // 8] * 16 + (row % 8) * 128 + lane] = tmp


@njit(cache=True)
def _decode_page(words, chunk_starts, num_values, t, out):
    t = out.itemsize * 8                       # T: a constant of the compiled version
    nchunks = chunk_starts.size
    scratch_in = np.empty(1 + t * (CHUNK // t), dtype=words.dtype)     # header + up to T*LANES words
    decompressed = np.empty(CHUNK, dtype=words.dtype)
    lanes = CHUNK // t
    for c in range(nchunks):
        start = chunk_starts[c]
        width = np.int64(words[start])
        nwords = 1 + width * lanes
        # unchunk: copy the chunk for alignment; read the header word; zeroed output buffer
        for i in range(nwords):
            scratch_in[i] = words[start + i]
        width = np.int64(scratch_in[0])
        decompressed[:] = 0
        _unchecked_unpack(width, t, scratch_in[1:nwords], decompressed)
        # truncate to the chunk's values and append them to the page's output
        n = min(CHUNK, num_values - c * CHUNK)
        base = c * CHUNK
        for i in range(n):
            out[base + i] = decompressed[i]


class BitpackDecoder:
    """Decodes pages of one column of unsigned ``bits``-bit integers (8, 16, 32 or 64)."""

    def __init__(self, bits):
        self.bits = bits

    def decode(self, words, chunk_starts, num_values, out):
        """``words``: the page as uintT words; ``chunk_starts[c]``: the word offset of chunk c's
        header word (chunks hold 1,024 values, the last one the rest); ``out``: uintT[num_values]."""
        _decode_page(words, chunk_starts, num_values, self.bits, out)
