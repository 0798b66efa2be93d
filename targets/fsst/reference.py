"""fsst's oracle, written to be trusted by reading.

A page is FSST-compressed strings (``inputs.fsst_encode``) with one symbol table in Lance's
2,312-byte layout (rust/compression/fsst/src/fsst.rs, ``FSST_SYMBOL_TABLE_SIZE``):

- bytes 0..8: the header, a little-endian u64 ``FSST_MAGIC | encoder_switch << 24 |
  suffix_lim << 16 | terminator << 8 | n_symbols`` (``FSST_MAGIC = 0x46535354 << 32``);
- then ``n_symbols`` little-endian u64 symbols (symbol i is code i; its first ``len`` bytes);
- then ``n_symbols`` u8 lengths (1..8); the rest of the 2,312 bytes is zero.

A compressed string is a run of codes: a code ``c != 255`` stands for symbol c's bytes, and
``255`` (FSST_ESC) is followed by one literal byte that stands for itself. With the encoder
switch off (inputs under 32 KiB at encode time) the strings are stored as they are.

``decode`` is the plain byte loop over that definition. Output offsets start at 0 and have the
input offsets' dtype. ``byte_classes`` labels every compressed byte (code, escape, literal)
without a loop, from the run parity of 0xFF bytes; the tests check both against each other and
against the strings the encoder was given.
"""

from __future__ import annotations

import numpy as np

FSST_MAGIC = 0x46535354 << 32
FSST_ESC = 255
TABLE_SIZE = 8 + 256 * 8 + 256


def parse_table(table: np.ndarray) -> tuple[bool, list[bytes]]:
    """(encoder switch, the symbols' bytes by code) of a Lance symbol table."""
    raw = bytes(table)
    if len(raw) != TABLE_SIZE:
        raise ValueError(f"a symbol table is {TABLE_SIZE} bytes, not {len(raw)}")
    header = int.from_bytes(raw[:8], "little")
    if header & FSST_MAGIC != FSST_MAGIC:
        raise ValueError("not an FSST symbol table (magic)")
    switch = bool(header & (1 << 24))
    n = header & 255
    lens = raw[8 + 8 * n:8 + 9 * n]
    symbols = [raw[8 + 8 * i:8 + 8 * i + lens[i]] for i in range(n)]
    return switch, symbols


def decode(table: np.ndarray, in_bytes: np.ndarray, in_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bytes uint8, offsets [n+1] from 0 in ``in_offsets``' dtype) of every string, decoded."""
    switch, symbols = parse_table(table)
    data = bytes(in_bytes)
    offs = [int(v) for v in in_offsets]
    out = bytearray()
    ends = [0]
    for s, e in zip(offs[:-1], offs[1:]):
        if not switch:
            out += data[s:e]
        else:
            i = s
            while i < e:
                code = data[i]
                if code == FSST_ESC:
                    out.append(data[i + 1])
                    i += 2
                else:
                    out += symbols[code]
                    i += 1
        ends.append(len(out))
    return np.frombuffer(bytes(out), dtype=np.uint8).copy(), np.array(ends, dtype=in_offsets.dtype)


CODE, ESCAPE, LITERAL = 0, 1, 2


def byte_classes(in_bytes: np.ndarray, in_offsets: np.ndarray) -> np.ndarray:
    """Every compressed byte's class (CODE, ESCAPE, LITERAL; the page must use the switch): a
    0xFF run always starts at a token boundary, so within a string a 0xFF at an even place of its
    run is an escape, one at an odd place a literal, and a non-0xFF byte is a literal exactly when
    the run just before it has odd length."""
    n = in_bytes.size
    lo, hi = int(in_offsets[0]), int(in_offsets[-1])
    cls = np.zeros(n, dtype=np.int8)
    b = in_bytes[lo:hi]
    if b.size == 0:
        return cls
    starts = np.zeros(b.size, dtype=bool)
    starts[(in_offsets[:-1].astype(np.int64) - lo)[in_offsets[:-1] < in_offsets[1:]]] = True
    ff = b == FSST_ESC
    idx = np.arange(b.size)
    run_start = ff & (starts | ~np.concatenate([[False], ff[:-1]]))
    last_start = np.maximum.accumulate(np.where(run_start, idx, 0))
    place = np.where(ff, idx - last_start, -1)            # place of each 0xFF in its run
    prev_even_ff = np.concatenate([[False], ff[:-1] & (place[:-1] % 2 == 0)]) & ~starts
    c = np.full(b.size, CODE, dtype=np.int8)
    c[ff & (place % 2 == 0)] = ESCAPE
    c[ff & (place % 2 == 1)] = LITERAL
    c[~ff & prev_even_ff] = LITERAL
    cls[lo:hi] = c
    return cls


def output_starts(table: np.ndarray, in_bytes: np.ndarray, in_offsets: np.ndarray) -> np.ndarray:
    """Where each compressed byte's output starts (int64 per byte; the page's output from 0)."""
    _, symbols = parse_table(table)
    lens = np.zeros(256, dtype=np.int64)
    lens[:len(symbols)] = [len(s) for s in symbols]
    cls = byte_classes(in_bytes, in_offsets)
    width = np.where(cls == CODE, lens[in_bytes], np.where(cls == LITERAL, 1, 0))
    lo, hi = int(in_offsets[0]), int(in_offsets[-1])
    width[:lo] = 0
    width[hi:] = 0
    return np.concatenate([[0], np.cumsum(width)[:-1]]).astype(np.int64)
