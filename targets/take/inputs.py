"""take inputs: the datasets, the battery of requests (each edge case named) and the speed
workloads, from seeded SplitMix64 (the same seed gives the same arrays on every machine).

``encode_dataset`` is the "encoder": Python strings and numbers into the dataset's columns
(utf8 as int32 offsets + bytes, fragments as row ranges with ids). Requests are row addresses
``fragment_id << 32 | row_offset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from targets.harness import cache
from targets.harness.prng import CORRECTNESS_SEED, SPEED_SEED, Stream, mix_seeds

# Battery dataset: 5 fragments with gaps in their ids (2, 5 and 6 are gone); 100-dim vectors: rows
# long enough for vectorised copies, and not a multiple of 8, 16 or 32 floats, so a copy loop's
# tail is exercised (768 was a multiple of all three, and 6 MB per battery case through the pipe).
BATTERY_FRAGS = ((0, 700), (1, 500), (3, 1), (4, 900), (7, 400))    # (id, rows)
BATTERY_DIM = 100
# Speed dataset: 10^6 rows over 8 fragments; a small vector (the pipe carries the dataset to every
# worker, 16 per trial: 768 dims would be 3 GB) and ~1 % of rows deleted.
SPEED_ROWS = 1_000_000
SPEED_FRAGS = 8
SPEED_DIM = 8
DELETED_SHARE = 0.01
SPEED_COMBOS = (("m100k", 100_000, "contiguous"), ("m100k", 100_000, "sorted_sparse"),
                ("m100k", 100_000, "random_dup"), ("m100k", 100_000, "clustered"))
# Small takes (0.3-0.9 ms a call: close to the harness's ~0.1 ms round trip, and dominated by cold
# caches after the other arm ran) are measured by benchmarks/take_anchors.py, not by the trial:
# their noise decided the gate's worst-combo rule more than the kernel did.
ANCHOR_ONLY_COMBOS = (("m1k", 1_000, "random_dup"),)
WORDS = ("", "a", "lance", "take", "é", "日本語", "naïve café", "🙂🙃", "x" * 40, "Grüße", "columnar format")


def encode_strings(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """utf8 strings -> (int32 offsets [N+1] from 0, uint8 bytes)."""
    raw = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in raw], out=offsets[1:])
    return offsets.astype(np.int32), np.frombuffer(b"".join(raw), dtype=np.uint8).copy()


def encode_dataset(frags: tuple[tuple[int, int], ...], i64: np.ndarray, vec: np.ndarray, strings: list[str],
                   deleted: np.ndarray) -> dict[str, np.ndarray]:
    rows = np.zeros(len(frags) + 1, dtype=np.int64)
    np.cumsum([n for _, n in frags], out=rows[1:])
    offsets, data = encode_strings(strings)
    return {"frag_ids": np.array([f for f, _ in frags], dtype=np.uint32), "frag_rows": rows,
            "deleted": deleted.astype(np.uint8), "i64": i64.astype(np.int64), "vec": vec.astype(np.float32),
            "str_offsets": offsets, "str_bytes": data}


def addr(frag: int | list[int] | np.ndarray, offset: int | list[int] | np.ndarray) -> np.ndarray:
    return (np.asarray(frag, dtype=np.uint64) << np.uint64(32)) | np.asarray(offset, dtype=np.uint64)


def battery_dataset() -> dict[str, np.ndarray]:
    s = Stream(mix_seeds(CORRECTNESS_SEED, "take", "dataset"))
    n = sum(r for _, r in BATTERY_FRAGS)
    i64 = (s.u64(n) >> np.uint64(1)).astype(np.int64) - np.int64(1 << 62)       # both signs
    vec = s.normal(n * BATTERY_DIM).reshape(n, BATTERY_DIM)
    picks = s.integers(len(WORDS), n)
    strings = [WORDS[int(p)] for p in picks]
    deleted = s.integers(20, n) == 0                                              # ~5 %
    return encode_dataset(BATTERY_FRAGS, i64, vec, strings, deleted)


def _rows_to_addrs(rows: np.ndarray, ds: dict[str, np.ndarray]) -> np.ndarray:
    k = np.searchsorted(ds["frag_rows"], rows, side="right") - 1
    return addr(ds["frag_ids"][k], rows - ds["frag_rows"][k])


def live_row_addrs(ds: dict[str, np.ndarray]) -> np.ndarray:
    rows = np.arange(ds["deleted"].size)
    return _rows_to_addrs(rows, ds)


def request(kind: str, m: int, ds: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """A request of about ``m`` row addresses of the dataset (uint64) of one distribution."""
    s = Stream(mix_seeds(seed, "request", kind, m))
    n = ds["deleted"].size
    if kind == "contiguous":                     # one fragment, consecutive offsets
        sizes = np.diff(ds["frag_rows"])
        k = int(np.argmax(sizes >= m)) if np.any(sizes >= m) else int(np.argmax(sizes))
        m = min(m, int(sizes[k]))
        start = int(s.integers(int(sizes[k]) - m + 1, 1)[0])
        return addr(ds["frag_ids"][k], np.arange(start, start + m))
    if kind == "sorted_sparse":                  # distinct, strictly increasing
        rows = np.unique(s.integers(n, m))
        return _rows_to_addrs(rows, ds)
    if kind == "random_dup":                     # random order, ~10 % duplicates
        distinct = s.integers(n, m - m // 10)
        dup = distinct[s.integers(distinct.size, m // 10)] if distinct.size else distinct
        rows = np.concatenate([distinct, dup])
        return _rows_to_addrs(rows[np.argsort(s.u64(rows.size), kind="stable")], ds)
    if kind == "clustered":                      # runs of 1-50 consecutive rows, runs in random order
        runs = 2 * (m // 25) + 2                 # mean run 25.5: more than enough runs
        lengths = 1 + s.integers(50, runs)
        ends = np.cumsum(lengths)
        k = int(np.searchsorted(ends, m)) + 1
        lengths, ends = lengths[:k], ends[:k]
        lengths[-1] -= int(ends[-1]) - m
        starts = s.integers(max(n - 50, 1), k)
        run_of = np.repeat(np.arange(k), lengths)
        within = np.arange(m) - np.repeat(ends - lengths, lengths)
        return _rows_to_addrs(starts[run_of] + within, ds)
    if kind == "reversed":
        return request("sorted_sparse", m, ds, seed)[::-1].copy()
    raise ValueError(f"unknown request kind {kind!r}")


def battery_requests(ds: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """name -> the requests of that case (each a call)."""
    seed = mix_seeds(CORRECTNESS_SEED, "take", "requests")
    live = live_row_addrs(ds)
    rows_live = np.flatnonzero(ds["deleted"] == 0)
    first, last = live[rows_live[0]], live[rows_live[-1]]
    bounds = np.concatenate([addr(ds["frag_ids"], 0), addr(ds["frag_ids"], np.diff(ds["frag_rows"]) - 1)])
    deleted_addrs = live[ds["deleted"] == 1][:5]
    missing = np.concatenate([deleted_addrs, addr([2, 5, 6, 9], [0, 1, 2, 3]),          # gone fragments
                              addr([0, 1, 4], [700, 5000, 900])])                       # past the end
    u64 = lambda *a: np.array(a, dtype=np.uint64)                                       # noqa: E731
    rnd = request("random_dup", 300, ds, seed)
    return {
        "m1": [live[rows_live[17:18]], live[rows_live[-1:]]],
        "empty": [np.zeros(0, np.uint64)],
        "all_duplicates": [np.full(64, live[rows_live[100]], dtype=np.uint64), np.full(2, first, dtype=np.uint64)],
        "repeated": [np.tile(live[rows_live[:7]], 9), np.repeat(live[rows_live[200:210]], 3)],
        "sorted": [request("sorted_sparse", 300, ds, seed)],
        "contiguous": [request("contiguous", 400, ds, seed), live[700:1200].copy()],
        "reversed": [request("reversed", 300, ds, seed), live[:800][::-1].copy()],
        "random": [rnd, request("random_dup", 2500, ds, seed)],
        "clustered_runs": [request("clustered", 500, ds, seed)],
        "fragment_boundary": [np.sort(bounds), np.sort(bounds)[::-1].copy(),
                              bounds[np.argsort(np.arange(bounds.size) % 3, kind="stable")]],
        "max_u32_offset": [u64((0 << 32) | 0xFFFF_FFFF, int(first), (7 << 32) | 0xFFFF_FFFF, (0xFFFF_FFFF << 32) | 0xFFFF_FFFF),
                           u64(int(first), int(first) + 1, (0 << 32) | 0xFFFF_FFFF),
                           u64(0xFFFF_FFFF, 1 << 32, (1 << 32) | 1)],          # +1 steps across a fragment boundary
        "batch_ends": [u64(int(last), int(first), int(last), int(first)), u64(int(first), int(last))],
        "missing_rows_dropped": [np.concatenate([missing, rnd[:50], missing[::-1]]), np.sort(missing),
                                 missing[:3].copy()],
        "strings_empty_and_multibyte": [live[np.flatnonzero(np.isin(np.diff(ds["str_offsets"]), (0, 3, 8, 9)))][:200][::-1].copy()],
    }


@dataclass(frozen=True)
class BatteryCase:
    name: str
    calls: list[np.ndarray]


def battery() -> list[BatteryCase]:
    ds = battery_dataset()
    return [BatteryCase(name, calls) for name, calls in battery_requests(ds).items()]


BATTERY_NAMES = ("m1", "empty", "all_duplicates", "repeated", "sorted", "contiguous", "reversed", "random",
                 "clustered_runs", "fragment_boundary", "max_u32_offset", "batch_ends", "missing_rows_dropped",
                 "strings_empty_and_multibyte")


def fresh_requests(ds: dict[str, np.ndarray], seed: int) -> list[np.ndarray]:
    """Per trial: a random request, a clustered one and a reversed one from the secret seed."""
    return [request("random_dup", 1000, ds, mix_seeds(seed, "fresh", 1)),
            request("clustered", 700, ds, mix_seeds(seed, "fresh", 2)),
            request("reversed", 400, ds, mix_seeds(seed, "fresh", 3))]


def speed_dataset() -> dict[str, np.ndarray]:
    """10^6 rows over 8 fragments of unequal sizes; strings of 0-40 bytes. Built once per machine
    (~2 s of seeded draws) and cached, keyed by this file and numpy's version."""
    return cache.cached_arrays("take", cache.fixture_key(Path(__file__), SPEED_SEED, np.__version__), _speed_dataset)


def _speed_dataset() -> dict[str, np.ndarray]:
    s = Stream(mix_seeds(SPEED_SEED, "take", "dataset"))
    n = SPEED_ROWS
    cuts = np.sort(s.integers(n, SPEED_FRAGS - 1))
    sizes = np.diff(np.r_[0, cuts, n])
    big = int(np.argmax(sizes))
    if sizes[big] < 100_000:
        raise AssertionError("no fragment holds 100k rows")
    frags = tuple((i, int(r)) for i, r in enumerate(sizes))
    i64 = (s.u64(n) >> np.uint64(1)).astype(np.int64)
    vec = s.normal(n * SPEED_DIM).reshape(n, SPEED_DIM)
    lengths = s.integers(41, n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = (0x61 + s.integers(26, int(offsets[-1]))).astype(np.uint8)
    deleted = (s.integers(1_000_000, n) < int(DELETED_SHARE * 1_000_000)).astype(np.uint8)
    rows = np.zeros(len(frags) + 1, dtype=np.int64)
    np.cumsum(sizes, out=rows[1:])
    return {"frag_ids": np.arange(SPEED_FRAGS, dtype=np.uint32), "frag_rows": rows, "deleted": deleted,
            "i64": i64, "vec": vec.astype(np.float32), "str_offsets": offsets.astype(np.int32), "str_bytes": data}
