"""dictionary inputs: the encoder, the correctness battery and the speed workloads, from seeded SplitMix64.

Every page is built as Lance builds one: a column of values is drawn from a vocabulary of
distinct values (text of chosen byte lengths, binary, or 16-byte UUIDs) with an index
distribution, then dictionary-encoded by ``dictionary_encode`` / ``dictionary_encode_fixed``
(Lance 2.1's ``dictionary_encode`` in rust/lance-encoding/src/encodings/logical/primitive/dict.rs:
a hash map from value to index in order of first occurrence, i32 indices, a dictionary of u32
offsets from 0 and its bytes, or of 128-bit values). The encoded indices are the workload's
pool; a call decodes a window of it (``target.py``). Decoding what the encoder wrote must give
the column back: the tests check that round trip against the oracle.

Text is UTF-8 drawn from four planes (ASCII; 2-byte Latin/Greek/Cyrillic; 3-byte CJK; 4-byte
emoji), cut on character boundaries to lognormal byte lengths. Index distributions: ``uniform``;
``zipf`` (s = 1.1 over the vocabulary in a random order of popularity); ``runs`` (runs of one
value, 1-100 rows long, as a column clustered by that value); ``sorted`` (the battery only).

Battery (each case named; calls are windows of its pool, some with patched indices):
``dict_1`` and ``dict_1_empty`` (a dictionary of one value, and of the empty string),
``dict_65536`` (2**16 entries, every one used, index 0 first and D-1 last), ``empty_strings``,
``multibyte_utf8``, ``escape_bytes`` (binary: NUL, 0xFF, lone continuation bytes, backslashes,
quotes), ``ends`` (indices 0 and D-1 at the page's ends and in runs), ``n0``, ``n1``, ``n100``
(pages of 0, 1 and 100 rows: Lance's threshold), ``long_values`` (100-5,000 bytes),
``short_values`` (0-2 bytes), ``lengths_around_16`` (0, 1, 7-9, 15-17, 31-33, 63-65 bytes, so a
wide copy's tail handling is tested, including a short last row after a long one),
``patched`` (calls with patches), random pages of every distribution over dictionaries of 16,
1,000 and 50,000 values; fixed width: ``fixed_dict_1``, ``fixed_dict_65536``, ``fixed_bytes``
(all-zero and all-0xFF values), ``fixed_sizes`` (0, 1, 100, 1,023, 1,025 rows) and random pages;
one fresh case per kind from the trial's seed.

Speed: pages of 2**19 rows (a ~12 MB decoded string page; 2**20 made a paired trial ~3x its
budget) cut from a pool of 1.25 x that, over ``str-D1k`` (1,000 text values of ~24 bytes: a
~24 KB dictionary, L1/L2-resident), ``str-D64k`` (a vocabulary of 65,536: the encoded pool's
dictionary holds the 65,534 values drawn (uniform, ~1.6 MB, L3), 43,617 (zipf) or 11,790 (runs))
x uniform, zipf, runs, and ``uuid-D64k`` (65,536 16-byte values) x uniform and runs. Fixed
fixtures are cached on disk by a hash of these sources.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from targets.dictionary import reference
from targets.dictionary.target import VALUE_WIDTH
from targets.harness import cache
from targets.harness.prng import CORRECTNESS_SEED, SPEED_SEED, Stream, mix_seeds

PAGE_ROWS = 1 << 19
POOL_ROWS = PAGE_ROWS + PAGE_ROWS // 4
PATCH_EVERY = 256                    # one patched index per this many rows of a speed page
ZIPF_S = 1.1
RUN_LENGTHS = (1, 100)

# (label, kind, profile, vocabulary size) x distributions
SPEED_SHAPES = (("str-D1k", "varwidth", "text24", 1_000), ("str-D64k", "varwidth", "text24", 65_536),
                ("uuid-D64k", "fixed", "uuid", 65_536))
SPEED_DISTRIBUTIONS = {"str-D1k": ("uniform", "zipf", "runs"), "str-D64k": ("uniform", "zipf", "runs"),
                       "uuid-D64k": ("uniform", "runs")}
DISTRIBUTIONS = ("uniform", "zipf", "runs", "sorted")

_SOURCES = (Path(__file__), Path(__file__).with_name("target.py"), Path(__file__).with_name("reference.py"),
            Path(__file__).parent.parent / "harness" / "prng.py")


# --- the encoder (Lance's dictionary_encode) ------------------------------------------------------------

def dictionary_encode(values: Iterable[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices int32 [N], dict_offsets uint32 [D+1], dict_bytes uint8): Lance's variable-width
    ``dictionary_encode`` (32-bit offsets): each value's index is the map's entry for it, a new
    value taking the next index and appending its bytes and end offset to the dictionary."""
    index: dict[bytes, int] = {}
    entries: list[bytes] = []
    indices: list[int] = []
    for value in values:
        i = index.get(value)
        if i is None:
            i = index[value] = len(entries)
            entries.append(value)
        indices.append(i)
    offsets = np.zeros(len(entries) + 1, dtype=np.int64)
    np.cumsum([len(v) for v in entries], out=offsets[1:])
    if offsets[-1] >= 1 << 32:
        raise ValueError("dictionary over 4 GiB: Lance would use 64-bit offsets")
    data = np.frombuffer(b"".join(entries), dtype=np.uint8).copy()
    return np.array(indices, dtype=np.int32), offsets.astype(np.uint32), data


def dictionary_encode_fixed(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices int32 [N], dictionary uint8 [D, 16]): Lance's fixed-width (u128) branch of
    ``dictionary_encode``, the same first-occurrence order, vectorised (np.unique over 16-byte
    rows, its entries re-ranked by where each first occurs)."""
    if values.dtype != np.uint8 or values.ndim != 2 or values.shape[1] != VALUE_WIDTH:
        raise ValueError("values: uint8 [N, 16]")
    if values.shape[0] == 0:
        return np.zeros(0, dtype=np.int32), np.zeros((0, VALUE_WIDTH), dtype=np.uint8)
    keys = np.ascontiguousarray(values).view(np.dtype((np.void, VALUE_WIDTH))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")                 # unique entries by first occurrence
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return rank[inverse.ravel()].astype(np.int32), values[first[order]].copy()


def values_of(offsets: np.ndarray, data: np.ndarray) -> list[bytes]:
    """A variable-width block as Python byte strings."""
    raw = data.tobytes()
    o = offsets.astype(np.int64).tolist()
    return [raw[o[i]:o[i + 1]] for i in range(len(o) - 1)]


# --- vocabularies -------------------------------------------------------------------------------------

# UTF-8 planes: (first code point, count, bytes per character, share of characters)
PLANES = ((0x20, 95, 1, 0.85), (0x00A0, 0x0800 - 0x00A0, 2, 0.08), (0x4E00, 0x9FFF - 0x4E00, 3, 0.05),
          (0x1F300, 0x1FAFF - 0x1F300, 4, 0.02))
MULTIBYTE_PLANES = ((0x00A0, 0x0800 - 0x00A0, 2, 0.4), (0x4E00, 0x9FFF - 0x4E00, 3, 0.4),
                    (0x1F300, 0x1FAFF - 0x1F300, 4, 0.2))
ESCAPES = (b"", b"\x00", b"\xff", b"\\", b'"', b"'", b"\n", b"\r\n", b"\t", b"\x80", b"\xc3", b"\xe2\x82",
           b"\x00" * 9, b"\xff" * 17, b"\\\\\\x00", b"\x1b[0m", b"\xef\xbb\xbf", b"\xf4\x8f\xbf\xbf")


def _text(stream: Stream, lengths: np.ndarray, planes: tuple[tuple[int, int, int, float], ...]) -> list[bytes]:
    """UTF-8 strings of about ``lengths`` bytes each (cut on character boundaries, so a string
    may run up to 3 bytes over or stop short)."""
    target = np.cumsum(lengths.astype(np.int64))
    chars = int(target[-1]) + 8 if target.size else 8
    pick = np.searchsorted(np.cumsum([p[3] for p in planes]), stream.f32(chars) * np.float32(0.999999))
    first = np.array([p[0] for p in planes])[pick]
    count = np.array([p[1] for p in planes])[pick]
    width = np.array([p[2] for p in planes])[pick]
    codes = (first + (stream.u64(chars) % count.astype(np.uint64)).astype(np.int64)).astype(np.uint32)
    utf8 = codes.tobytes().decode("utf-32-le").encode("utf-8")
    ends = np.concatenate([[0], np.cumsum(width)])               # byte offset of every character
    cut = ends[np.searchsorted(ends, target, side="left")]
    starts = np.concatenate([[0], cut[:-1]])
    return [utf8[a:b] for a, b in zip(starts.tolist(), cut.tolist())]


def _lognormal_lengths(stream: Stream, n: int, median: float, sigma: float, lo: int, hi: int) -> np.ndarray:
    return np.clip(np.rint(median * np.exp(sigma * stream.normal(n).astype(np.float64))), lo, hi).astype(np.int64)


def vocabulary(profile: str, count: int, seed: int) -> list[bytes]:
    """``count`` distinct values of a profile, in a seeded order."""
    stream = Stream(mix_seeds(seed, "vocabulary", profile, count))
    out: list[bytes] = []
    seen: set[bytes] = set()
    rounds = 0
    while len(out) < count:
        want = count - len(out) + 16 + (count - len(out)) // 8
        if profile == "text24":
            batch = _text(stream, _lognormal_lengths(stream, want, 20.0, 0.6, 1, 400), PLANES)
        elif profile == "multibyte":
            batch = _text(stream, _lognormal_lengths(stream, want, 16.0, 0.7, 2, 200), MULTIBYTE_PLANES)
        elif profile == "long":
            batch = _text(stream, 100 + stream.integers(4_900, want), PLANES)
        elif profile == "short":                            # 0-2 bytes, any byte values
            lengths = stream.integers(3, want)
            pairs = stream.u64(2 * want).astype(np.uint8).reshape(want, 2)
            batch = [pairs[i, :lengths[i]].tobytes() for i in range(want)]
        elif profile == "around16":
            sizes = np.array([0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65])
            lengths = sizes[stream.integers(sizes.size, want)]
            raw = (0x41 + stream.u64(int(lengths.sum()) + 1) % 26).astype(np.uint8).tobytes()
            ends = np.cumsum(lengths)
            batch = [raw[e - n:e] for e, n in zip(ends.tolist(), lengths.tolist())]
        elif profile == "binary":
            lengths = stream.integers(24, want)
            raw = stream.u64(int(lengths.sum()) + 1).astype(np.uint8).tobytes()
            ends = np.cumsum(lengths)
            batch = list(ESCAPES) if rounds == 0 else []
            batch += [raw[e - n:e] for e, n in zip(ends.tolist(), lengths.tolist())]
        else:
            raise ValueError(f"unknown profile {profile!r}")
        for value in batch:
            if value not in seen and len(out) < count:
                seen.add(value)
                out.append(value)
        rounds += 1
    return out


def uuids(count: int, seed: int, extremes: bool = False) -> np.ndarray:
    """``count`` distinct random 16-byte values (version-4 UUID bits), uint8 [count, 16]; with
    ``extremes`` the all-zero and all-0xFF values lead."""
    stream = Stream(mix_seeds(seed, "uuids", count))
    raw = stream.u64(2 * count + 64).view(np.uint8).reshape(-1, VALUE_WIDTH).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    if extremes:
        raw[0], raw[1] = 0, 0xFF
    keys = raw.view(np.dtype((np.void, VALUE_WIDTH))).ravel()
    _, first = np.unique(keys, return_index=True)
    keep = np.sort(first)[:count]
    if keep.size < count:
        raise ValueError("uuid collision")
    return raw[keep]


# --- columns ------------------------------------------------------------------------------------------

def column_ids(dist: str, rows: int, vocab: int, seed: int) -> np.ndarray:
    """Which vocabulary value each of ``rows`` rows holds (int64), by distribution."""
    stream = Stream(mix_seeds(seed, "column", dist, rows, vocab))
    if dist == "uniform":
        return stream.integers(vocab, rows)
    if dist == "zipf":
        cdf = np.cumsum(np.arange(1, vocab + 1, dtype=np.float64) ** -ZIPF_S)
        u = (stream.u64(rows) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        rank = np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), vocab - 1)
        popularity = np.argsort(stream.u64(vocab), kind="stable")         # rank -> vocabulary id
        return popularity[rank]
    if dist == "runs":
        lo, hi = RUN_LENGTHS
        lengths = lo + stream.integers(hi - lo + 1, rows // lo + 1)
        lengths = lengths[:int(np.searchsorted(np.cumsum(lengths), rows)) + 1]
        return np.repeat(stream.integers(vocab, lengths.size), lengths)[:rows]
    if dist == "sorted":
        return np.sort(stream.integers(vocab, rows))
    raise ValueError(f"unknown distribution {dist!r}")


def encode_column(vocab: list[bytes], ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return dictionary_encode(vocab[i] for i in ids.tolist())


# --- calls ----------------------------------------------------------------------------------------------

def call(start: int, n: int, patch_pos: np.ndarray | None = None, patch_idx: np.ndarray | None = None
         ) -> dict[str, np.ndarray]:
    """A battery call: the window, its patches; ``out_size`` is added by ``with_sizes``."""
    return {"window": np.array([start, n], dtype=np.int64),
            "patch_pos": np.zeros(0, np.int64) if patch_pos is None else patch_pos.astype(np.int64),
            "patch_idx": np.zeros(0, np.int32) if patch_idx is None else patch_idx.astype(np.int32)}


def with_sizes(calls: list[dict[str, np.ndarray]], arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Each call with its declared output size (``out_size``, bytes; varwidth pages only)."""
    if "dict_offsets" not in arrays:
        return calls
    return [{**c, "out_size": np.array([reference.output_size(reference.window_indices(arrays["pool"], c),
                                                               arrays["dict_offsets"])], dtype=np.int64)}
            for c in calls]


def speed_calls(arrays: dict[str, np.ndarray], prefix: np.ndarray | None, n: int, seed: int,
                count: int) -> list[dict[str, np.ndarray]]:
    """``count`` fresh timed calls on a pool: a random window of ``n`` rows, one patched index
    per ``PATCH_EVERY`` rows (the pool's own values from random places: the same distribution),
    the declared size (from ``prefix``, the running byte count over the pool: varwidth only) and
    the secret key of the call's output digest."""
    pool = arrays["pool"]
    stream = Stream(mix_seeds(seed, "calls", pool.size, n))
    out = []
    for _ in range(count):
        start = int(stream.integers(pool.size - n + 1, 1)[0])
        pos = np.unique(stream.integers(n, max(1, n // PATCH_EVERY))) if n else np.zeros(0, np.int64)
        idx = pool[stream.integers(pool.size, pos.size)]
        c = call(start, n, pos, idx)
        c["key"] = stream.u64(2)
        if prefix is not None:
            lengths = reference.value_lengths(arrays["dict_offsets"])
            size = int(prefix[start + n] - prefix[start]) + int(lengths[idx].sum() - lengths[pool[start + pos]].sum())
            c["out_size"] = np.array([size], dtype=np.int64)
        out.append(c)
    return out


# --- the battery ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatteryCase:
    name: str
    kind: str                                         # "varwidth" | "fixed"
    arrays: dict[str, np.ndarray]                     # pool + dict_offsets/dict_bytes or dictionary
    calls: list[dict[str, np.ndarray]]


def _var(values: list[bytes]) -> dict[str, np.ndarray]:
    pool, offsets, data = dictionary_encode(values)
    return {"pool": pool, "dict_offsets": offsets, "dict_bytes": data}


def _fixed(values: np.ndarray) -> dict[str, np.ndarray]:
    pool, dictionary = dictionary_encode_fixed(values)
    return {"pool": pool, "dictionary": dictionary}


def _whole_and_windows(rows: int, stream: Stream, sizes: tuple[int, ...] = (1, 100, 1023, 1025)
                       ) -> list[dict[str, np.ndarray]]:
    calls = [call(0, rows)]
    for n in sizes:
        if n <= rows:
            calls.append(call(int(stream.integers(rows - n + 1, 1)[0]), n))
    return calls


def _random_var(dist: str, vocab_size: int, rows: int, seed: int) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    vocab = vocabulary("text24", vocab_size, seed)
    arrays = _var([vocab[i] for i in column_ids(dist, rows, vocab_size, seed).tolist()])
    return arrays, _whole_and_windows(rows, Stream(mix_seeds(seed, "windows")))


VAR_RANDOM = tuple(f"{dist}_D{d}" for dist in DISTRIBUTIONS for d in (16, 1_000, 50_000))
FIXED_RANDOM = tuple(f"fixed_{dist}" for dist in ("uniform", "zipf", "runs"))
VAR_EDGES = ("dict_1", "dict_1_empty", "dict_65536", "empty_strings", "multibyte_utf8", "escape_bytes", "ends",
             "n0", "n1", "n100", "long_values", "short_values", "lengths_around_16", "patched")
FIXED_EDGES = ("fixed_dict_1", "fixed_dict_65536", "fixed_bytes", "fixed_sizes")
BATTERY_NAMES = (*VAR_EDGES, *VAR_RANDOM, *FIXED_EDGES, *FIXED_RANDOM)


def _var_edge(name: str, seed: int) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    stream = Stream(mix_seeds(seed, name))
    if name == "dict_1":
        arrays = _var(["naïve café ✓ 🍵".encode()] * 1000)
        return arrays, [call(0, 1000), call(999, 1), call(10, 100)]
    if name == "dict_1_empty":
        return _var([b""] * 300), [call(0, 300), call(5, 1), call(0, 0)]
    if name == "dict_65536":
        d = 1 << 16
        vocab = vocabulary("text24", d, seed)
        ids = np.concatenate([np.arange(d - 1), stream.integers(d - 1, 20_000), [d - 1]])
        arrays = _var([vocab[i] for i in ids.tolist()])
        rows = ids.size
        return arrays, [call(0, rows), call(rows - 1, 1), call(0, 1), call(d - 1000, 3000)]
    if name == "empty_strings":
        vocab = [b""] + vocabulary("text24", 40, seed)
        ids = stream.integers(41, 3000)
        ids[::3] = 0
        ids[:5] = 0
        ids[-5:] = 0
        ids[1000:1200] = 0
        arrays = _var([vocab[i] for i in ids.tolist()])
        return arrays, [call(0, 3000), call(1000, 200), call(2995, 5), call(999, 202)]
    if name == "multibyte_utf8":
        vocab = vocabulary("multibyte", 500, seed)
        arrays = _var([vocab[i] for i in column_ids("zipf", 3000, 500, seed).tolist()])
        return arrays, _whole_and_windows(3000, stream)
    if name == "escape_bytes":
        vocab = vocabulary("binary", 300, seed)
        ids = column_ids("uniform", 2000, 300, seed)
        ids[:len(ESCAPES)] = np.arange(len(ESCAPES))
        ids[-len(ESCAPES):] = np.arange(len(ESCAPES))[::-1]
        arrays = _var([vocab[i] for i in ids.tolist()])
        return arrays, _whole_and_windows(2000, stream)
    if name == "ends":
        vocab = vocabulary("text24", 1000, seed)
        ids = column_ids("uniform", 4000, 998, seed) + 1
        ids[0], ids[-1] = 0, 999                       # first seen: index 0; the last new value: index D-1
        ids[1:50] = 0
        ids[3950:-1] = 0
        ids[2000:2100:2] = 0
        arrays = _var([vocab[i] for i in ids.tolist()])
        return arrays, [call(0, 4000), call(3999, 1), call(0, 50), call(3900, 100), call(1990, 120)]
    if name in ("n0", "n1", "n100"):
        vocab = [b""] + vocabulary("text24", 300, seed)
        ids = column_ids("uniform", 2000, 301, seed)
        ids[700] = 0
        arrays = _var([vocab[i] for i in ids.tolist()])
        rows = 2000
        if name == "n0":
            return arrays, [call(0, 0), call(1234, 0), call(rows, 0)]
        if name == "n1":
            return arrays, [call(0, 1), call(rows - 1, 1), call(700, 1), call(1234, 1)]
        return arrays, [call(0, 100), call(rows - 100, 100), call(650, 100), call(333, 100)]
    if name == "long_values":
        vocab = vocabulary("long", 40, seed)
        return _var([vocab[i] for i in column_ids("uniform", 500, 40, seed).tolist()]), _whole_and_windows(500, stream)
    if name == "short_values":
        vocab = vocabulary("short", 400, seed)
        arrays = _var([vocab[i] for i in column_ids("uniform", 5000, 400, seed).tolist()])
        return arrays, _whole_and_windows(5000, stream)
    if name == "lengths_around_16":
        vocab = vocabulary("around16", 200, seed)
        lengths = np.array([len(v) for v in vocab])
        ids = column_ids("uniform", 3000, 200, seed)
        longest, one = int(np.argmax(lengths)), int(np.flatnonzero(lengths == 1)[0])
        ids[-2:] = (longest, one)                      # a short last row right after a long one
        arrays = _var([vocab[i] for i in ids.tolist()])
        calls = [call(0, 3000), call(2998, 2), call(2999, 1)]
        calls += [call(int(s), int(n)) for s, n in zip(stream.integers(2000, 12), 1 + stream.integers(40, 12))]
        return arrays, calls
    if name == "patched":
        vocab = [b""] + vocabulary("text24", 200, seed)
        arrays = _var([vocab[i] for i in column_ids("runs", 4000, 201, seed).tolist()])
        entries = arrays["dict_offsets"].size - 1
        calls = []
        for n in (4000, 1500, 1):
            pos = np.unique(stream.integers(n, max(1, n // 10)))
            calls.append(call(int(stream.integers(4000 - n + 1, 1)[0]), n, pos,
                              stream.integers(entries, pos.size).astype(np.int32)))
        return arrays, calls
    raise ValueError(f"unknown edge case {name!r}")


def _fixed_edge(name: str, seed: int) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    stream = Stream(mix_seeds(seed, name))
    if name == "fixed_dict_1":
        return _fixed(np.repeat(uuids(1, seed), 300, axis=0)), [call(0, 300), call(299, 1), call(0, 0)]
    if name == "fixed_dict_65536":
        d = 1 << 16
        values = uuids(d, seed)
        ids = np.concatenate([np.arange(d - 1), stream.integers(d - 1, 10_000), [d - 1]])
        rows = ids.size
        return _fixed(values[ids]), [call(0, rows), call(rows - 1, 1), call(0, 1)]
    if name == "fixed_bytes":
        values = uuids(20, seed, extremes=True)
        ids = column_ids("uniform", 700, 20, seed)
        ids[:2], ids[-2:] = (0, 1), (1, 0)
        return _fixed(values[ids]), _whole_and_windows(700, stream)
    if name == "fixed_sizes":
        values = uuids(300, seed)
        rows = 3000
        arrays = _fixed(values[column_ids("uniform", rows, 300, seed)])
        return arrays, [call(0, 0), call(rows, 0), call(0, 1), call(rows - 1, 1), call(17, 100),
                        call(1, 1023), call(rows - 1025, 1025)]
    raise ValueError(f"unknown edge case {name!r}")


def battery_case(name: str, seed: int) -> BatteryCase:
    if name in VAR_EDGES:
        arrays, calls = _var_edge(name, seed)
        kind = "varwidth"
    elif name in VAR_RANDOM:
        dist, d = name.rsplit("_D", 1)
        arrays, calls = _random_var(dist, int(d), 5000, mix_seeds(seed, name))
        kind = "varwidth"
    elif name in FIXED_EDGES:
        arrays, calls = _fixed_edge(name, seed)
        kind = "fixed"
    elif name in FIXED_RANDOM:
        dist = name.split("_", 1)[1]
        s = mix_seeds(seed, name)
        arrays = _fixed(uuids(1000, s)[column_ids(dist, 5000, 1000, s)])
        calls, kind = _whole_and_windows(5000, Stream(mix_seeds(s, "windows"))), "fixed"
    else:
        raise ValueError(f"unknown battery case {name!r}")
    return BatteryCase(name, kind, arrays, with_sizes(calls, arrays))


def fresh_case(kind: str, seed: int) -> BatteryCase:
    """A page of a random size (0-20,000 rows) over a random dictionary (1-20,000 values) with a
    random distribution, from a per-trial seed."""
    stream = Stream(mix_seeds(seed, "fresh", kind))
    rows = int(stream.integers(20_001, 1)[0])
    vocab_size = 1 + int(stream.integers(20_000, 1)[0])
    dist = DISTRIBUTIONS[int(stream.integers(len(DISTRIBUTIONS), 1)[0])]
    ids = column_ids(dist, max(rows, 1), vocab_size, mix_seeds(seed, "fresh-ids", kind))
    if kind == "varwidth":
        profile = ("text24", "multibyte", "binary", "around16")[int(stream.integers(4, 1)[0])]
        vocab = vocabulary(profile, vocab_size, mix_seeds(seed, "fresh-vocab"))
        arrays = _var([vocab[i] for i in ids.tolist()])
    else:
        arrays = _fixed(uuids(vocab_size, mix_seeds(seed, "fresh-vocab"))[ids])
    calls = _whole_and_windows(max(rows, 1), stream, (0, 1, 100))
    if rows == 0:
        calls = [call(0, 0)]
    return BatteryCase(f"{kind}/fresh", kind, arrays, with_sizes(calls, arrays))


# --- speed ----------------------------------------------------------------------------------------------

def speed_arrays(label: str, dist: str) -> dict[str, np.ndarray]:
    """One speed combo's pool and dictionary: ``POOL_ROWS`` rows drawn from the shape's vocabulary
    with ``dist``, dictionary-encoded."""
    _, kind, profile, vocab_size = next(s for s in SPEED_SHAPES if s[0] == label)
    seed = mix_seeds(SPEED_SEED, label)
    ids = column_ids(dist, POOL_ROWS, vocab_size, mix_seeds(seed, dist))
    if kind == "fixed":
        return _fixed(uuids(vocab_size, seed)[ids])
    pool, offsets, data = encode_column(vocabulary(profile, vocab_size, seed), ids)
    return {"pool": pool, "dict_offsets": offsets, "dict_bytes": data}


def _all_fixtures() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in BATTERY_NAMES:
        case = battery_case(name, CORRECTNESS_SEED)
        for key, arr in case.arrays.items():
            out[f"battery/{name}/{key}"] = arr
        for i, c in enumerate(case.calls):
            for key, arr in c.items():
                out[f"battery/{name}/call{i}/{key}"] = arr
    for label, _, _, _ in SPEED_SHAPES:
        for dist in SPEED_DISTRIBUTIONS[label]:
            for key, arr in speed_arrays(label, dist).items():
                out[f"speed/{label}/{dist}/{key}"] = arr
    return out


def fixtures() -> dict[str, np.ndarray]:
    """Every fixed fixture, from the on-disk cache when it is current."""
    key = cache.fixture_key(*_SOURCES, CORRECTNESS_SEED, SPEED_SEED, np.__version__)
    return cache.cached_arrays("dictionary", key, _all_fixtures)


def _group(fx: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {key[len(prefix):]: arr for key, arr in fx.items() if key.startswith(prefix) and "/" not in key[len(prefix):]}


def cached_battery_case(fx: dict[str, np.ndarray], name: str) -> BatteryCase:
    prefix = f"battery/{name}/"
    arrays = _group(fx, prefix)
    calls: list[dict[str, np.ndarray]] = []
    while f"{prefix}call{len(calls)}/window" in fx:
        calls.append(_group(fx, f"{prefix}call{len(calls)}/"))
    return BatteryCase(name, "varwidth" if "dict_offsets" in arrays else "fixed", arrays, calls)


def cached_speed_arrays(fx: dict[str, np.ndarray], label: str, dist: str) -> dict[str, np.ndarray]:
    return _group(fx, f"speed/{label}/{dist}/")
