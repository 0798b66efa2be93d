"""fsst kernels: the one file the autoresearch loop may edit.

A compiled, faithful port of Lance's FSST string decode, as read at lancedb/lance d2039d750
(2025-11-15), one thread, numba:

  - `FsstMiniBlockDecompressor::decompress` (rust/lance-encoding/src/encodings/physical/fsst.rs)
    decodes a page one miniblock chunk (~4 KiB of compressed strings) at a time, each chunk with
    one call of `fsst::fsst::decompress` and the page's one symbol table.
  - `decompress` (rust/compression/fsst/src/fsst.rs) makes a fresh `FsstDecoder` per call and
    runs `FsstDecoder::init`: check the magic, read the encoder switch (bit 24 of the header),
    fill `symbols[256]` with FSST_CORRUPT and `lens[256]` with 0, then load `n_symbols` u64
    symbols and `n_symbols` u8 lengths from the 2,312-byte table. Ported here per chunk as well.
  - `FsstDecoder::decompress`: switch off -> a plain copy of the bytes and offsets; switch on ->
    `decompress_bulk`: per string `[offsets[i-1], offsets[i])`, 4 compressed bytes at a time,
    the escape mask `(w & 0x80808080) & (((~w & 0x7F7F7F7F) + 0x7F7F7F7F) ^ 0x80808080)` flags
    0xFF bytes; none -> four {unaligned 8-byte store of symbols[code], advance lens[code]};
    otherwise the codes before the first escape, then the escape pair (FSST_ESC = 255, literal).
    Then the tail path for the last 2-3 bytes and a last single code; `out_offsets[i]` is the
    running position.

Two adaptations, both forced by the contract: (1) upstream writes into a buffer 8x the input,
so its 8-byte stores may spill past the last string; here the output is exactly the page's
decoded size, so a store that would cross the end copies only the symbol's `len` bytes (numba
has no unaligned u64 store into uint8: the 8-byte store is 8 byte stores LLVM merges). (2) Each
chunk's output is written straight into the page's buffers at the running position (upstream's
`out_pos`), its offsets page-global from 0; upstream returns each chunk in its own Vec with
offsets from 0 and concatenates later. The switch-off copy rebases the offsets the same way.
Rust's positions are usize: np.uint64 here too (a signed port ran ~1.6x slower: numba's
negative-index handling, which Rust does not have).
No tuning beyond upstream's loop: this is the bar a keep must beat.
"""

import numpy as np
from numba import njit

FSST_ESC = 255


@njit(cache=True)
def _init(symbol_table, symbols, lens):
    # FsstDecoder::new: symbols = [FSST_CORRUPT; 256] (its bytes are never read for valid codes),
    # lens = [0; 256]; then FsstDecoder::init's loads.
    for c in range(256):
        lens[c] = 0
        for k in range(8):
            symbols[c, k] = 0
    header = np.uint64(0)
    for k in range(8):
        header |= np.uint64(symbol_table[k]) << np.uint64(8 * k)
    switch_on = (header >> np.uint64(24)) & np.uint64(1)
    n = np.int64(header & np.uint64(255))
    pos = 8
    for i in range(n):
        for k in range(8):
            symbols[i, k] = symbol_table[pos + k]
        pos += 8
    for i in range(n):
        lens[i] = symbol_table[pos]
        pos += 1
    return switch_on != 0


U1 = np.uint64(1)
U2 = np.uint64(2)
U8 = np.uint64(8)


@njit(cache=True, inline="always")
def _store(out, out_curr, symbols, code, length):
    # ptr::write_unaligned(out + out_curr, symbols[code] as u64), unless it would cross the end
    if out_curr + U8 <= np.uint64(out.size):
        for k in range(8):
            out[out_curr + np.uint64(k)] = symbols[code, k]
    else:
        k = np.uint64(0)
        while k < length:
            out[out_curr + k] = symbols[code, k]
            k += U1


@njit(cache=True)
def _decompress_string(data, in_curr, in_end, out, out_curr, symbols, lens):
    """decompress_bulk's closure for one string; returns the new out_curr. Positions are usize in
    Rust: np.uint64 here (which also spares numba's negative-index handling Rust does not have)."""
    esc = np.uint8(FSST_ESC)
    while in_curr + np.uint64(4) <= in_end:
        w = (np.uint32(data[in_curr]) | (np.uint32(data[in_curr + U1]) << np.uint32(8))
             | (np.uint32(data[in_curr + U2]) << np.uint32(16)) | (np.uint32(data[in_curr + np.uint64(3)]) << np.uint32(24)))
        escape_mask = (w & np.uint32(0x80808080)) & ((((~w) & np.uint32(0x7F7F7F7F)) + np.uint32(0x7F7F7F7F))
                                                    ^ np.uint32(0x80808080))
        if escape_mask == 0:
            for _ in range(4):
                code = np.uint64(data[in_curr])
                length = np.uint64(lens[code])
                _store(out, out_curr, symbols, code, length)
                in_curr += U1
                out_curr += length
        else:
            # first_escape_pos = escape_mask.trailing_zeros() >> 3
            first = 0
            while (escape_mask >> np.uint32(8 * first)) & np.uint32(0xFF) == 0:
                first += 1
            for _ in range(first):
                code = np.uint64(data[in_curr])
                length = np.uint64(lens[code])
                _store(out, out_curr, symbols, code, length)
                in_curr += U1
                out_curr += length
            in_curr += U2                                 # the escape byte and its literal
            out[out_curr] = data[in_curr - U1]
            out_curr += U1
    # handle the remaining bytes
    if in_curr + U2 <= in_end:
        out[out_curr] = data[in_curr + U1]
        if data[in_curr] != esc:
            code = np.uint64(data[in_curr])
            _store(out, out_curr, symbols, code, np.uint64(lens[code]))
            in_curr += U1
            out_curr += np.uint64(lens[code])
            if data[in_curr] != esc:
                code = np.uint64(data[in_curr])
                _store(out, out_curr, symbols, code, np.uint64(lens[code]))
                in_curr += U1
                out_curr += np.uint64(lens[code])
            else:
                in_curr += U2
                out[out_curr] = data[in_curr - U1]
                out_curr += U1
        else:
            in_curr += U2
            out_curr += U1
    if in_curr < in_end:
        # last code cannot be an escape code
        code = np.uint64(data[in_curr])
        _store(out, out_curr, symbols, code, np.uint64(lens[code]))
        out_curr += np.uint64(lens[code])
    return out_curr


@njit(cache=True)
def _decode_page(symbol_table, in_bytes, in_offsets, chunk_rows, out_offsets, out_bytes):
    symbols = np.empty((256, 8), dtype=np.uint8)
    lens = np.empty(256, dtype=np.uint8)
    out_pos = np.uint64(0)
    out_offsets[0] = 0
    for c in range(chunk_rows.size - 1):
        r0 = np.int64(chunk_rows[c])
        r1 = np.int64(chunk_rows[c + 1])
        switch_on = _init(symbol_table, symbols, lens)      # decompress: a fresh FsstDecoder per chunk
        if not switch_on:
            # out_buf.copy_from_slice(in_buf); out_offsets_buf.copy_from_slice(in_offsets_buf)
            base = np.uint64(in_offsets[r0])
            end = np.uint64(in_offsets[r1])
            j = np.uint64(0)
            while j < end - base:
                out_bytes[out_pos + j] = in_bytes[base + j]
                j += U1
            for i in range(r0 + 1, r1 + 1):
                out_offsets[i] = out_pos + (np.uint64(in_offsets[i]) - base)
            out_pos += end - base
            continue
        out_curr = out_pos
        for i in range(r0 + 1, r1 + 1):
            out_curr = _decompress_string(in_bytes, np.uint64(in_offsets[i - 1]), np.uint64(in_offsets[i]),
                                          out_bytes, out_curr, symbols, lens)
            out_offsets[i] = out_curr
        out_pos = out_curr

class FsstPageDecoder:
    def __init__(self, symbol_table):
        self.symbol_table = symbol_table

    def decode(self, in_bytes, in_offsets, chunk_rows, out_offsets, out_bytes):
        _decode_page(self.symbol_table, in_bytes, in_offsets, chunk_rows, out_offsets, out_bytes)
