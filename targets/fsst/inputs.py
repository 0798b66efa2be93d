"""fsst inputs: the encoder, the correctness battery and the speed workloads, from seeded SplitMix64.

No Python FSST exists, so the pages are compressed here (``train`` and ``fsst_encode``), in
Lance's format (rust/compression/fsst/src/fsst.rs): a compact deterministic FSST trainer over a
~16 KiB sample of the page's strings (5 rounds: encode the sample greedily with the current
symbols, count every token and every concatenation of two adjacent tokens cut to 8 bytes, keep
the 255 best by gain = count x length), then a greedy longest-match encode (a miss is the escape
pair 255 + literal), the table written in Lance's 2,312-byte layout. Decoding what the encoder
wrote must give the strings back: the tests check that round trip against the oracle.

A page is cut into miniblock chunks as Lance's does: rows are added to a chunk until its
compressed bytes reach 4 KiB (``binary.rs``' target), each string under 256 bytes.

Battery (each case named; call 0 decodes the page as encoded, call 1 with fresh patched bytes):
``table_0_symbols`` (switch on, no symbols: every byte escaped), ``table_255_symbols`` (every
code 0..254 used), ``passthrough`` (switch off: a plain copy), ``empty_strings`` (a third of the
strings empty, and runs of them at both ends), ``all_empty`` (100 empty strings), ``n0`` (no
strings), ``raw_ff_bytes`` (0xFF runs of 1-9 bytes: escape runs 255 255 ...), ``ends_in_escape``
(every string's last token an escape pair), ``tail_1_3`` (strings of 1-3 compressed bytes: the
tail path alone), ``multibyte_utf8`` (2-, 3- and 4-byte characters), ``offsets_not_from_0``
(strings preceded and followed by junk bytes), ``int64_offsets``, ``long_symbols_at_end`` (the
page ends on an 8-byte symbol: a store that crosses the declared end), ``one_chunk`` and random
pages of every speed distribution (int32 and int64); one fresh case from the trial's seed.

Speed: one page per distribution, ~1 MB decoded, int32 offsets: ``urls`` (templated hosts and
paths, very compressible), ``log_lines``, ``words`` (1-8 words of a Zipf(1.1) vocabulary),
``hex_uuid`` (36-char UUIDs: nearly incompressible, short symbols) and ``short_codes`` (5-8-byte
categorical codes). Fixtures are cached on disk by a hash of these sources.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from targets.fsst import reference
from targets.fsst.reference import FSST_ESC, FSST_MAGIC, TABLE_SIZE
from targets.harness import cache
from targets.harness.prng import CORRECTNESS_SEED, SPEED_SEED, Stream, mix_seeds

CHUNK_BYTES = 4096                   # miniblock chunk target (binary.rs)
SAMPLE_BYTES = 16384
ROUNDS = 5
MAX_SYMBOLS = 255
SPEED_BYTES = 1 << 20                # decoded bytes per speed page
SPEED_PATCHES = 64                   # fresh bytes per timed call
BATTERY_PATCHES = 16
SPEED_DISTRIBUTIONS = ("urls", "log_lines", "words", "hex_uuid", "short_codes")

_SOURCES = (Path(__file__), Path(__file__).with_name("reference.py"), Path(__file__).with_name("target.py"),
            Path(__file__).parent.parent / "harness" / "prng.py")


# --- the encoder ----------------------------------------------------------------------------------------

def _tokens(s: bytes, table: dict[bytes, int]) -> list[bytes]:
    """Greedy longest match: each token a symbol of ``table`` or one byte (a miss)."""
    out, i, n = [], 0, len(s)
    while i < n:
        for length in range(min(8, n - i), 0, -1):
            if s[i:i + length] in table:
                break
        out.append(s[i:i + length])
        i += length
    return out


def train(strings: list[bytes], max_symbols: int = MAX_SYMBOLS) -> list[bytes]:
    """Up to ``max_symbols`` symbols (1-8 bytes) for these strings: FSST-like rounds of gains."""
    sample, size = [], 0
    step = max(1, len(strings) // 4096)
    for s in strings[::step]:
        if size >= SAMPLE_BYTES:
            break
        sample.append(s)
        size += len(s)
    symbols: list[bytes] = []
    for _ in range(ROUNDS):
        table = {s: i for i, s in enumerate(symbols)}
        counts: Counter[bytes] = Counter()
        for s in sample:
            toks = _tokens(s, table)
            for j, t in enumerate(toks):
                counts[t] += 1
                if j + 1 < len(toks):
                    counts[(t + toks[j + 1])[:8]] += 1
        symbols = sorted(counts, key=lambda t: (-counts[t] * len(t), t))[:max_symbols]
    return symbols


def symbol_table(symbols: list[bytes], switch: bool = True) -> np.ndarray:
    """Lance's 2,312-byte table: header, n u64 symbols, n u8 lengths, zeros."""
    n = len(symbols)
    if n > MAX_SYMBOLS or any(not 1 <= len(s) <= 8 for s in symbols):
        raise ValueError("at most 255 symbols of 1-8 bytes")
    header = FSST_MAGIC | (int(switch) << 24) | (n << 16) | n
    raw = header.to_bytes(8, "little") + b"".join(s.ljust(8, b"\0") for s in symbols) + bytes(len(s) for s in symbols)
    return np.frombuffer(raw.ljust(TABLE_SIZE, b"\0"), dtype=np.uint8).copy()


def fsst_encode(s: bytes, table: dict[bytes, int]) -> bytes:
    out = bytearray()
    for t in _tokens(s, table):
        code = table.get(t)
        if code is None:
            out += bytes((FSST_ESC, t[0]))
        else:
            out.append(code)
    return bytes(out)


def encode_page(strings: list[bytes], symbols: list[bytes] | None, dtype: type = np.int32, before: bytes = b"",
                after: bytes = b"") -> dict[str, np.ndarray]:
    """The page's arrays: its table (switch off when ``symbols`` is None), compressed bytes
    (``before`` and ``after`` around them), absolute offsets and chunk rows."""
    if symbols is None:
        table, comp = symbol_table([], switch=False), list(strings)
    else:
        codes = {s: i for i, s in enumerate(symbols)}
        table, comp = symbol_table(symbols), [fsst_encode(s, codes) for s in strings]
    offsets = np.zeros(len(comp) + 1, dtype=np.int64)
    np.cumsum([len(c) for c in comp], out=offsets[1:])
    rows, size = [0], 0
    for i, c in enumerate(comp):
        size += len(c)
        if size >= CHUNK_BYTES and i + 1 < len(comp):
            rows.append(i + 1)
            size = 0
    rows.append(len(comp))
    data = before + b"".join(comp) + after
    return {"symbol_table": table, "in_bytes": np.frombuffer(data, dtype=np.uint8).copy(),
            "in_offsets": (offsets + len(before)).astype(dtype), "chunk_rows": np.array(rows, dtype=np.int64)}


# --- strings ---------------------------------------------------------------------------------------------

def _zipf(r: Stream, k: int, n: int, s: float = 1.1) -> np.ndarray:
    cdf = np.cumsum(1.0 / np.arange(1, k + 1) ** s)
    return np.minimum(np.searchsorted(cdf / cdf[-1], r.f32(n).astype(np.float64)), k - 1)


def _word(r: Stream, syllables: int) -> bytes:
    parts = (b"ka", b"lo", b"mi", b"ne", b"ra", b"st", b"th", b"er", b"in", b"on", b"an", b"ed", b"re", b"ou",
             b"ch", b"sh", b"io", b"al", b"e", b"a", b"tion", b"ing", b"y", b"s")
    return b"".join(parts[int(i)] for i in r.integers(len(parts), syllables))


def _vocab(r: Stream, k: int) -> list[bytes]:
    return [_word(r, 1 + int(n)) for n in r.integers(4, k)]


def urls(r: Stream, n: int) -> list[bytes]:
    hosts = _vocab(r, 300)
    segs = _vocab(r, 500)
    tlds = (b"com", b"org", b"net", b"io", b"de", b"co.uk")
    h, t, ns, ids = _zipf(r, 300, n), r.integers(len(tlds), n), r.integers(4, n), r.integers(1 << 20, n)
    out = []
    for i in range(n):
        path = b"/".join(segs[int(j)] for j in _zipf(r, 500, 1 + int(ns[i])))
        q = b"?id=%d" % int(ids[i]) if ids[i] % 2 else b""
        out.append(b"https://www.%s.%s/%s%s" % (hosts[int(h[i])], tlds[int(t[i])], path, q))
    return out


def log_lines(r: Stream, n: int) -> list[bytes]:
    levels = (b"INFO", b"INFO", b"INFO", b"DEBUG", b"WARN", b"ERROR")
    mods = _vocab(r, 40)
    msgs = (b"request served in %d ms", b"connection from 10.0.%d.%d closed", b"cache miss for key %d",
            b"retrying task %d after timeout", b"user %d logged in", b"flushed %d rows to disk")
    v = r.u64(6 * n).reshape(n, 6) % np.uint64(100000)
    out = []
    for i in range(n):
        a = [int(x) for x in v[i]]
        msg = msgs[a[0] % len(msgs)]
        body = msg % ((a[1], a[2] % 256) if msg.count(b"%d") == 2 else (a[1],))
        out.append(b"2026-11-%02dT%02d:%02d:%02d.%03dZ %s [%s] %s" % (
            1 + a[3] % 28, a[4] % 24, a[5] % 60, a[2] % 60, a[1] % 1000, levels[a[3] % 6], mods[a[4] % 40], body))
    return out


def words(r: Stream, n: int) -> list[bytes]:
    vocab = _vocab(r, 5000)
    k = 1 + r.integers(8, n)
    w = _zipf(r, 5000, int(k.sum()))
    out, j = [], 0
    for m in k.tolist():
        out.append(b" ".join(vocab[int(x)] for x in w[j:j + m]))
        j += m
    return out


def hex_uuid(r: Stream, n: int) -> list[bytes]:
    v = r.u64(2 * n)
    out = []
    for i in range(n):
        h = b"%016x%016x" % (int(v[2 * i]), int(v[2 * i + 1]))
        out.append(b"-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:])))
    return out


def short_codes(r: Stream, n: int) -> list[bytes]:
    alphabet = b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    codes = [bytes(alphabet[int(c)] for c in r.integers(len(alphabet), 5 + int(m))) for m in r.integers(4, 2000)]
    return [codes[int(i)] for i in _zipf(r, 2000, n)]


def multibyte_utf8(r: Stream, n: int) -> list[bytes]:
    planes = ((0x00A0, 0x0700), (0x4E00, 0x5000), (0x1F300, 0x0700), (0x61, 26))
    out = []
    for m in r.integers(30, n).tolist():
        p = r.integers(len(planes), m)
        c = r.integers(1 << 16, m)
        out.append("".join(chr(planes[int(a)][0] + int(b) % planes[int(a)][1]) for a, b in zip(p, c)).encode())
    return out


GENERATORS: dict[str, Callable[[Stream, int], list[bytes]]] = {
    "urls": urls, "log_lines": log_lines, "words": words, "hex_uuid": hex_uuid, "short_codes": short_codes}


def strings_of(dist: str, seed: int, total_bytes: int) -> list[bytes]:
    """Strings of ``dist`` adding up to about ``total_bytes``."""
    r = Stream(seed)
    out: list[bytes] = []
    size = 0
    while size < total_bytes:
        more = GENERATORS[dist](r, max(16, min(4096, (total_bytes - size) // 64)))
        out += more
        size += sum(len(s) for s in more)
    return out


# --- the battery -----------------------------------------------------------------------------------------

def _battery_page(name: str) -> dict[str, np.ndarray]:
    r = Stream(mix_seeds(CORRECTNESS_SEED, "fsst", name))
    if name == "table_0_symbols":
        return encode_page(words(r, 300) + [b"", b"a", b"ab"], [])
    if name == "table_255_symbols":
        syms = [bytes([i]) * (1 + i % 8) for i in range(MAX_SYMBOLS)]
        strings = [b"".join(syms[(i * 37 + j) % MAX_SYMBOLS] for j in range(1 + i % 5)) for i in range(300)]
        page = encode_page(strings + [b"\xff", b"a\xff\xff"], syms)
        assert np.unique(page["in_bytes"]).size == 256, "every code 0..254 and the escape used"
        return page
    if name == "passthrough":
        return encode_page(urls(r, 100) + [b"", b"\xff\xff", b"x"], None)
    if name == "empty_strings":
        s = words(r, 600)
        s = [b"" if i % 3 == 0 else v for i, v in enumerate(s)]
        s = [b""] * 5 + s + [b""] * 5
        return encode_page(s, train(s))
    if name == "all_empty":
        return encode_page([b""] * 100, train(words(r, 100)))
    if name == "n0":
        return encode_page([], train(words(r, 100)))
    if name == "raw_ff_bytes":
        base = words(r, 400)
        k = r.integers(10, len(base))
        s = [w[:3] + b"\xff" * int(m) + w[3:] + (b"\xff" if i % 2 else b"") for i, (w, m) in enumerate(zip(base, k))]
        s += [b"\xff" * m for m in range(1, 10)]
        syms = [t for t in train(base) if b"\xff" not in t]
        return encode_page(s, syms)
    if name == "ends_in_escape":
        base = words(r, 400)
        syms = [t for t in train(base) if not any(ch in t for ch in b"XYZ\xff")]
        return encode_page([w + bytes([b"XYZ\xff"[i % 4]]) for i, w in enumerate(base)], syms)
    if name == "tail_1_3":
        base = short_codes(r, 600)
        syms = train(base)
        s = [w[:1 + i % 3] for i, w in enumerate(base)] + [b"\xfe", b"\xfe\xfd", b"AB\xfe"]
        return encode_page(s, syms)
    if name == "multibyte_utf8":
        s = multibyte_utf8(r, 400)
        return encode_page(s, train(s))
    if name == "offsets_not_from_0":
        s = log_lines(r, 300)
        return encode_page(s, train(s), before=b"\xff\x00junk" * 250, after=b"\xfftrailing")
    if name == "int64_offsets":
        s = urls(r, 400)
        return encode_page(s, train(s), dtype=np.int64, before=b"\x07" * 13)
    if name == "long_symbols_at_end":
        s = [b"abcdefgh" * (1 + i % 4) + b"hgfedcba" * (i % 2) for i in range(200)] + [b"", b"abcdefgh"]
        return encode_page(s, [b"abcdefgh", b"hgfedcba", b"a", b"b"])
    if name == "one_chunk":
        s = hex_uuid(r, 50)
        return encode_page(s, train(s))
    dist, dtype = name.rsplit("/", 1)
    s = strings_of(dist, mix_seeds(CORRECTNESS_SEED, "fsst", name), 24_000)
    return encode_page(s, train(s), dtype=np.int64 if dtype == "i64" else np.int32, before=b"\x01\x02\x03")


BATTERY_NAMES = ("table_0_symbols", "table_255_symbols", "passthrough", "empty_strings", "all_empty", "n0",
                 "raw_ff_bytes", "ends_in_escape", "tail_1_3", "multibyte_utf8", "offsets_not_from_0",
                 "int64_offsets", "long_symbols_at_end", "one_chunk",
                 *(f"{d}/{t}" for d in SPEED_DISTRIBUTIONS for t in ("i32", "i64")))


def fresh_page(seed: int) -> tuple[str, dict[str, np.ndarray]]:
    """One page from the trial's secret seed: a random distribution, size, offset dtype and base."""
    r = Stream(mix_seeds(seed, "fsst", "fresh"))
    d, size, wide, skip = (int(v) for v in r.integers(1 << 30, 4))
    dist = SPEED_DISTRIBUTIONS[d % len(SPEED_DISTRIBUTIONS)]
    s = strings_of(dist, mix_seeds(seed, "fsst", "fresh", "strings"), 1000 + size % 30_000)
    return (f"fresh/{dist}", encode_page(s, train(s), dtype=np.int64 if wide % 2 else np.int32,
                                         before=b"\xff" * (skip % 9)))


# --- patches ---------------------------------------------------------------------------------------------

def patch_candidates(page: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(positions that may be patched, their class): codes whose symbol length has another code,
    and literals; none on a passthrough page (no codes) is fine too: its bytes are literals."""
    table, data, offsets = page["symbol_table"], page["in_bytes"], page["in_offsets"]
    switch, symbols = reference.parse_table(table)
    lo, hi = int(offsets[0]), int(offsets[-1])
    if not switch:
        pos = np.arange(lo, hi)
        return pos, np.full(pos.size, reference.LITERAL, dtype=np.int8)
    cls = reference.byte_classes(data, offsets)
    lens = np.array([len(s) for s in symbols] + [0] * (256 - len(symbols)))
    shared = np.bincount(lens, minlength=9)[lens] >= 2
    ok = (cls == reference.LITERAL) | ((cls == reference.CODE) & shared[data])
    ok[:lo] = False
    ok[hi:] = False
    pos = np.flatnonzero(ok)
    return pos, cls[pos]


def patches(page: dict[str, np.ndarray], seed: int, count: int,
            where: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """One call's patch: up to ``count`` distinct positions and their new bytes (a code by
    another code of the same length, a literal by any byte)."""
    pos, cls = where if where is not None else patch_candidates(page)
    r = Stream(seed)
    if pos.size == 0 or count == 0:
        return {"patch_pos": np.zeros(0, dtype=np.int64), "patch_bytes": np.zeros(0, dtype=np.uint8)}
    pick = np.unique(r.integers(pos.size, count))
    p, c = pos[pick], cls[pick]
    _, symbols = reference.parse_table(page["symbol_table"])
    lens = np.array([len(s) for s in symbols] + [0] * (256 - len(symbols)))
    new = np.empty(p.size, dtype=np.uint8)
    draw = r.integers(1 << 30, p.size)
    for i in range(p.size):
        if c[i] == reference.LITERAL:
            new[i] = draw[i] % 256
        else:
            same = np.flatnonzero(lens == lens[page["in_bytes"][p[i]]])
            new[i] = same[draw[i] % same.size]
    return {"patch_pos": p.astype(np.int64), "patch_bytes": new}


# --- fixtures --------------------------------------------------------------------------------------------

PAGE_KEYS = ("symbol_table", "in_bytes", "in_offsets", "chunk_rows")


def _all_fixtures() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in BATTERY_NAMES:
        for k, v in _battery_page(name).items():
            out[f"battery/{name}/{k}"] = v
    for dist in SPEED_DISTRIBUTIONS:
        s = strings_of(dist, mix_seeds(SPEED_SEED, "fsst", dist), SPEED_BYTES)
        page = encode_page(s, train(s))
        for k, v in page.items():
            out[f"speed/{dist}/{k}"] = v
        data, offsets = reference.decode(page["symbol_table"], page["in_bytes"], page["in_offsets"])
        out[f"speed/{dist}/out_bytes"] = data
        out[f"speed/{dist}/out_offsets"] = offsets
    return out


def fixtures() -> dict[str, np.ndarray]:
    """Every fixed fixture, from the on-disk cache when it is current."""
    key = cache.fixture_key(*_SOURCES, CORRECTNESS_SEED, SPEED_SEED, np.__version__)
    return cache.cached_arrays("fsst", key, _all_fixtures)


def page_of(fx: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k: fx[f"{prefix}/{k}"] for k in PAGE_KEYS}
