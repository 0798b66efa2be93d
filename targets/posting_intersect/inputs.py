"""posting-intersect inputs: the correctness battery and the speed workloads, all from seeded SplitMix64.

An index is T sorted, unique uint32 doc-id lists; a call is a batch of AND queries, each K index
lists with a doc-id shift per list (fresh per query: each query's lists are new, as a real
query's are, without shipping megabytes per call). Battery: named edge cases (empty lists, one
element, all equal, identical, disjoint, long runs, skewed lengths, single overlap, first/last
element overlaps, block edges, ids near 2**31, a 10**6-entry stopword list, shifts that align or
separate lists) at K in {2, 3, 4, 5, 8}, plus random batches of each speed distribution; one fresh
case per distribution from the trial's seed. Speed: K in {2, 3, 5, 8} x three distributions
(skewed: a 16-128-entry list AND 25k-100k-entry lists of 1M docs; balanced: 1% of 1M docs each;
dense: 50% of 10k docs each). Fixed fixtures are cached on disk by a hash of these sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from targets.harness import cache
from targets.harness.prng import CORRECTNESS_SEED, SPEED_SEED, Stream, mix_seeds
from targets.posting_intersect.target import MAX_DOC_ID

BATTERY_K = (2, 3, 4, 5, 8)
SPEED_K = (2, 3, 5, 8)
POOL_LISTS = 16                  # lists per speed index (skewed: 16 rare + 16 long)
EDGE_CASES = ("empty", "one_element", "all_equal", "identical", "disjoint", "long_runs", "skewed",
              "single_overlap", "first_last", "block_edges", "high_ids", "stopword", "shifted")
RANDOM_BATCH_QUERIES = 6         # queries per K in a battery case of a speed distribution

_SOURCES = (Path(__file__), Path(__file__).with_name("target.py"),
            Path(__file__).parent.parent / "harness" / "prng.py")


@dataclass(frozen=True)
class Distribution:
    """A speed distribution: its universe, its lists' densities, queries per call per K."""

    name: str
    universe: int
    density: tuple[float, float]                  # each list's density, log-uniform in this range
    rare_length: tuple[int, int] | None           # skewed: the rare lists' lengths (log-uniform)
    queries: dict[int, int]                       # K -> queries per call (about 0.5-1 ms of baseline)

    @property
    def max_shift(self) -> int:
        return self.universe // 16


DISTRIBUTIONS = (
    Distribution("skewed", 1_000_000, (0.025, 0.1), (16, 128), {2: 32, 3: 16, 5: 48, 8: 64}),
    Distribution("balanced", 1_000_000, (0.01, 0.01), None, {2: 8, 3: 6, 5: 2, 8: 2}),
    Distribution("dense", 10_000, (0.5, 0.5), None, {2: 10, 3: 6, 5: 2, 8: 2}),
)
SPEED_DISTRIBUTIONS = tuple(d.name for d in DISTRIBUTIONS)


def distribution(name: str) -> Distribution:
    return next(d for d in DISTRIBUTIONS if d.name == name)


# --- lists ------------------------------------------------------------------------------------------

def sample_list(stream: Stream, universe: int, n: int) -> np.ndarray:
    """``n`` distinct doc ids drawn uniformly from [0, universe), ascending, uint32."""
    n = min(n, universe)
    if n * 4 > universe:
        keys = stream.u64(universe)
        return np.sort(np.argsort(keys, kind="stable")[:n]).astype(np.uint32)
    picked = np.empty(0, dtype=np.int64)
    while picked.size < n:
        draws = np.concatenate([picked, stream.integers(universe, 2 * (n - picked.size) + 16)])
        _, first = np.unique(draws, return_index=True)
        picked = draws[np.sort(first)][:n]
    return np.sort(picked).astype(np.uint32)


def log_uniform(stream: Stream, lo: float, hi: float) -> float:
    return float(np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * float(stream.f32(1)[0])))


def flatten(lists: list[np.ndarray]) -> dict[str, np.ndarray]:
    """An index's arrays: the lists concatenated (uint32) and their offsets (int64)."""
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum([x.size for x in lists], out=offsets[1:])
    doc_ids = np.concatenate([np.asarray(x, dtype=np.uint32) for x in lists]) if lists else np.empty(0, np.uint32)
    return {"doc_ids": doc_ids, "list_offsets": offsets}


def batch(rows: list[tuple[list[int], list[int]]]) -> dict[str, np.ndarray]:
    """A call from (terms, shifts) rows of one K."""
    return {"terms": np.array([t for t, _ in rows], dtype=np.int64).reshape(len(rows), -1),
            "shifts": np.array([s for _, s in rows], dtype=np.int64).reshape(len(rows), -1)}


def _ids(values: list[int] | np.ndarray | range) -> np.ndarray:
    return np.unique(np.asarray(values, dtype=np.int64)).astype(np.uint32)


# --- speed indexes and queries ----------------------------------------------------------------------

def speed_index(dist: Distribution, seed: int, length_scale: float = 1.0) -> list[np.ndarray]:
    """A distribution's index: POOL_LISTS lists at its density (skewed: first POOL_LISTS rare lists,
    then POOL_LISTS long ones); ``length_scale`` shrinks the universe (profile sizes)."""
    universe = max(64, int(dist.universe * length_scale))
    stream = Stream(mix_seeds(seed, dist.name, universe))
    lists = []
    if dist.rare_length is not None:
        lo, hi = dist.rare_length
        lists += [sample_list(stream, universe, int(log_uniform(stream, lo, hi))) for _ in range(POOL_LISTS)]
    lo_d, hi_d = dist.density
    lists += [sample_list(stream, universe, int(universe * log_uniform(stream, lo_d, hi_d)))
              for _ in range(POOL_LISTS)]
    return lists


def query_rows(dist: Distribution, k: int, stream: Stream, count: int, universe: int) -> dict[str, np.ndarray]:
    """``count`` queries of K distinct lists (skewed: one rare list and K-1 long ones), each list
    shifted by a fresh amount in [0, universe/16)."""
    picks = np.argsort(stream.u64(count * POOL_LISTS).reshape(count, POOL_LISTS), axis=1, kind="stable")
    if dist.rare_length is not None:
        rare = stream.integers(POOL_LISTS, count)
        terms = np.column_stack([rare, POOL_LISTS + picks[:, :k - 1]])
    else:
        terms = picks[:, :k]
    shifts = stream.integers(max(1, universe // 16), count * k).reshape(count, k)
    return {"terms": np.ascontiguousarray(terms, dtype=np.int64), "shifts": shifts.astype(np.int64)}


def speed_queries(dist: Distribution, k: int, seed: int, count: int, queries_per_call: int,
                  universe: int) -> list[dict[str, np.ndarray]]:
    """``count`` fresh calls of one combo from a per-trial seed."""
    stream = Stream(mix_seeds(seed, "queries", dist.name, k, universe, queries_per_call))
    return [query_rows(dist, k, stream, queries_per_call, universe) for _ in range(count)]


# --- the battery ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatteryCase:
    name: str
    index: dict[str, np.ndarray]                 # doc_ids, list_offsets
    calls: list[dict[str, np.ndarray]]           # each: terms, shifts [Q, K]


def _random_case(dist: Distribution, seed: int, scale: float) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
    """A speed distribution at a smaller universe: every battery K, several queries each."""
    lists = speed_index(dist, seed, scale)
    universe = max(64, int(dist.universe * scale))
    stream = Stream(mix_seeds(seed, "battery-queries", dist.name))
    return lists, [query_rows(dist, k, stream, RANDOM_BATCH_QUERIES, universe) for k in BATTERY_K]


def _repeat(terms: list[int], k: int, shifts: list[int] | None = None) -> tuple[list[int], list[int]]:
    """``terms`` cycled to K clauses (shift 0 unless given, cycled too)."""
    shifts = shifts or [0]
    return [terms[i % len(terms)] for i in range(k)], [shifts[i % len(shifts)] for i in range(k)]


def _edge_case(name: str, seed: int) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
    stream = Stream(mix_seeds(seed, name))
    if name == "empty":
        a = sample_list(stream, 5_000, 300)
        b = np.union1d(a[::2], sample_list(stream, 5_000, 300)).astype(np.uint32)
        lists = [np.empty(0, np.uint32), a, b]
        return lists, [batch([([0, 1], [0, 0]), ([1, 0], [0, 0]), ([1, 2], [0, 0])]),
                       batch([([1, 2, 0], [0, 0, 0]), ([1, 2, 1], [0, 0, 0]), ([0, 0, 0], [0, 0, 0])]),
                       *[batch([_repeat([1, 2, 0, 1], k), _repeat([1, 2], k), _repeat([2, 1, 1, 0], k)]) for k in (4, 5, 8)]]
    if name == "one_element":
        long = sample_list(stream, 100_000, 20_000)
        x, y = int(long[7_777]), int(np.setdiff1d(np.arange(100_000), long)[5_000])      # y is not in long
        lists = [_ids([x]), _ids([x]), _ids([y]), long, np.union1d(long[::3], [x]).astype(np.uint32)]
        return lists, [batch([([0, 1], [0, 0]), ([0, 2], [0, 0]), ([0, 3], [0, 0]), ([2, 3], [0, 0]),
                              ([3, 0], [0, 0]), ([0, 1], [5, 5]), ([0, 1], [5, 6])]),
                       batch([([0, 3, 4], [0, 0, 0]), ([2, 3, 4], [0, 0, 0])]),
                       *[batch([_repeat([0, 3, 4, 1], k), _repeat([3, 4, 2, 1], k)]) for k in (4, 5)],
                       batch([_repeat([3, 4, 0, 1], 8), _repeat([3, 4, 1], 8, [0, 0, 1])])]
    if name == "all_equal":
        base = sample_list(stream, 50_000, 1_000)
        lists = [base, base.copy(), base.copy(), (base + 777).astype(np.uint32), base.copy()]
        return lists, [batch([([0, 1], [0, 0]), ([3, 2], [0, 777]), ([1, 3], [777, 0])]),
                       batch([([0, 1, 2], [0, 0, 0]), ([0, 3, 4], [777, 0, 777])]),
                       *[batch([_repeat([0, 1, 2, 4], k), _repeat([0, 3], k, [777, 0])]) for k in (4, 5, 8)]]
    if name == "identical":
        lists = [sample_list(stream, 200_000, n) for n in (1, 127, 128, 129, 1_000, 5_000)]
        return lists, [batch([_repeat([t], k, [s]) for t in range(len(lists)) for s in (0, 12_345)])
                       for k in BATTERY_K]
    if name == "disjoint":
        evens, odds = _ids(range(0, 4_000, 2)), _ids(range(1, 4_000, 2))
        low, high = _ids(range(0, 1_000)), _ids(range(1_000, 2_000))
        # every pair of these three shares docs, no doc is in all three
        a, b, c = _ids(range(0, 600)), _ids(range(300, 900)), _ids([*range(0, 300), *range(600, 900)])
        lists = [evens, odds, low, high, a, b, c]
        return lists, [batch([([0, 1], [0, 0]), ([2, 3], [0, 0]), ([3, 2], [0, 0]), ([0, 0], [0, 1]),
                              ([2, 2], [0, 1_000]), ([2, 3], [1_000, 0])]),
                       batch([([4, 5, 6], [0, 0, 0]), ([0, 1, 2], [0, 0, 0])]),
                       *[batch([_repeat([4, 5, 6], k), _repeat([0, 2, 1], k)]) for k in (4, 5, 8)]]
    if name == "long_runs":
        runs = [_ids([*range(0, 3_000), *range(10_000, 10_200), *range(20_000, 26_000)]),
                _ids([*range(1_500, 12_000), *range(25_000, 30_000)]),
                np.union1d(_ids(range(2_000, 2_600)), sample_list(stream, 40_000, 2_000)).astype(np.uint32),
                _ids(range(0, 40_000)),
                _ids(range(5_000, 5_001))]
        return runs, [batch([([0, 1], [0, 0]), ([0, 3], [0, 0]), ([1, 2], [0, 0]), ([0, 1], [0, 1_000]),
                             ([3, 3], [0, 17])]),
                      batch([([0, 1, 2], [0, 0, 0]), ([0, 1, 3], [0, 0, 0]), ([0, 1, 3], [9, 0, 4])]),
                      *[batch([_repeat([0, 1, 3, 2], k), _repeat([3, 0, 1], k)]) for k in (4, 5, 8)],
                      batch([([4, 3], [0, 0]), ([4, 0], [0, 0])])]
    if name == "skewed":
        longs = [sample_list(stream, 500_000, 25_000) for _ in range(3)]
        rare = [longs[0][[0, 127, 128, 5_000, 24_999]], sample_list(stream, 500_000, 50),
                np.union1d(longs[0][::500], longs[1][::700]).astype(np.uint32), _ids([int(longs[0][-1])])]
        lists = [*rare, *longs]
        return lists, [batch([([r, 4 + i % 3], [0, 0]) for r in range(4) for i in range(3)]),
                       batch([([r, 4, 5], [0, 0, 0]) for r in range(4)]),
                       *[batch([_repeat([r, 4, 5, 6], k) for r in range(4)]) for k in (4, 5, 8)]]
    if name == "single_overlap":
        lists, rows = [], []
        for i in range(6):
            a = sample_list(stream, 60_000, 2_000 + 500 * i)
            common = int(a[int(stream.integers(a.size, 1)[0])])
            b = np.setdiff1d(sample_list(stream, 60_000, 3_000), a)
            lists += [a, np.union1d(b, [common]).astype(np.uint32)]
            rows.append(([2 * i, 2 * i + 1], [0, 0]))
        third = np.setdiff1d(sample_list(stream, 60_000, 9_000), np.intersect1d(lists[0], lists[1]))
        lists.append(np.union1d(third, np.intersect1d(lists[0], lists[1])).astype(np.uint32))
        return lists, [batch(rows), batch([([0, 1, 12], [0, 0, 0])]),
                       *[batch([_repeat([0, 1, 12], k)]) for k in (4, 5, 8)]]
    if name == "first_last":
        a = sample_list(stream, 30_000, 1_500)
        first, last = int(a[0]), int(a[-1])
        inner = np.setdiff1d(sample_list(stream, 30_000, 2_500), a)
        b = np.union1d(inner, [first]).astype(np.uint32)                 # shares a's first doc only
        c = np.union1d(inner, [last]).astype(np.uint32)                  # shares a's last doc only
        d = np.union1d(np.setdiff1d(sample_list(stream, 30_000, 2_000), a), [first, last]).astype(np.uint32)
        touch_lo, touch_hi = _ids(range(0, 501)), _ids(range(500, 1_000))    # the last of one is the first of the other
        lists = [a, b, c, d, touch_lo, touch_hi]
        return lists, [batch([([0, 1], [0, 0]), ([0, 2], [0, 0]), ([0, 3], [0, 0]), ([4, 5], [0, 0]),
                              ([5, 4], [0, 0]), ([4, 5], [499, 0])]),
                       batch([([0, 3, 1], [0, 0, 0]), ([0, 3, 2], [0, 0, 0]), ([3, 0, 3], [0, 0, 0])]),
                       *[batch([_repeat([0, 3, 1], k), _repeat([3, 0, 2], k), _repeat([0, 3], k)]) for k in (4, 5, 8)]]
    if name == "block_edges":
        lists = []
        for n in (128, 129, 255, 256, 257, 384, 1_000):
            a = sample_list(stream, 20_000, n)
            edges = [i for i in (0, 126, 127, 128, 129, 254, 255, 256, n - 2, n - 1) if 0 <= i < n]
            b = np.union1d(np.setdiff1d(sample_list(stream, 20_000, 600), a), a[edges]).astype(np.uint32)
            lists += [a, b]
        m = len(lists)
        return lists, [batch([([i, i + 1], [0, 0]) for i in range(0, m, 2)]),
                       batch([([i, i + 1, i], [0, 0, 0]) for i in range(0, m, 2)]),
                       *[batch([_repeat([i, i + 1], k) for i in range(0, m, 2)]) for k in (4, 5, 8)]]
    if name == "high_ids":
        top = MAX_DOC_ID
        a = _ids([top - int(v) for v in sample_list(stream, 6_000, 2_000)])
        b = _ids([top - int(v) for v in sample_list(stream, 6_000, 2_000)])
        c = _ids([top - 10_000 - int(v) for v in sample_list(stream, 6_000, 1_000)])    # shifted up by 10k: touches 2**31 - 1
        lists = [a, b, c, _ids([top])]
        return lists, [batch([([0, 1], [0, 0]), ([0, 3], [0, 0]), ([2, 0], [10_000, 0]), ([1, 2], [0, 10_000])]),
                       batch([([0, 1, 2], [0, 0, 10_000])]),
                       *[batch([_repeat([0, 1, 2], k, [0, 0, 10_000]), _repeat([0, 3], k)]) for k in (4, 5, 8)]]
    if name == "stopword":
        stop = sample_list(stream, 1_250_000, 1_000_000)
        rare = [sample_list(stream, 1_250_000, 10), stop[::100_000].copy(), sample_list(stream, 1_250_000, 100)]
        medium = sample_list(stream, 1_250_000, 50_000)
        lists = [stop, *rare, medium]
        return lists, [batch([([1, 0], [0, 0]), ([2, 0], [0, 0]), ([3, 0], [0, 0]), ([4, 0], [0, 0])]),
                       batch([([2, 0, 4], [0, 0, 0]), ([3, 4, 0], [0, 0, 0])]),
                       *[batch([_repeat([2, 0, 4], k), _repeat([1, 0], k)]) for k in (4, 5, 8)]]
    if name == "shifted":
        a = sample_list(stream, 100_000, 5_000)
        b = np.union1d(sample_list(stream, 100_000, 5_000), (a[::3].astype(np.int64) + 40_000) % 100_000).astype(np.uint32)
        lists = [a, b, sample_list(stream, 100_000, 20_000)]
        rows = [([0, 1], [40_000, 0]), ([0, 1], [0, 40_000]), ([0, 0], [0, 3]), ([0, 0], [0, 200_000]),
                ([1, 0], [0, 40_000]), ([0, 2], [99_999, 0]), ([0, 1], [123_456_789, 123_416_789])]
        return lists, [batch(rows), batch([([0, 1, 2], [40_000, 0, 7]), ([2, 0, 1], [1, 40_000, 0])]),
                       *[batch([_repeat([0, 1, 2], k, [40_000, 0, 5]), _repeat([0, 1], k, [40_000, 0])]) for k in (4, 5, 8)]]
    raise ValueError(f"unknown edge case {name!r}")


def battery_case(name: str, seed: int) -> BatteryCase:
    """An edge case by name, or ``random_<distribution>`` (a speed distribution at 1/8 of its
    universe for balanced and skewed)."""
    if name.startswith("random_"):
        dist = distribution(name[len("random_"):])
        lists, calls = _random_case(dist, seed, 1.0 if dist.name == "dense" else 0.125)
    else:
        lists, calls = _edge_case(name, seed)
    return BatteryCase(name, flatten(lists), calls)


BATTERY_NAMES = (*EDGE_CASES, *(f"random_{d}" for d in SPEED_DISTRIBUTIONS))


def _all_fixtures() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in BATTERY_NAMES:
        case = battery_case(name, CORRECTNESS_SEED)
        for key, arr in case.index.items():
            out[f"battery/{name}/{key}"] = arr
        for i, call in enumerate(case.calls):
            for key, arr in call.items():
                out[f"battery/{name}/call{i}/{key}"] = arr
    for dist in DISTRIBUTIONS:
        for key, arr in flatten(speed_index(dist, SPEED_SEED)).items():
            out[f"speed/{dist.name}/{key}"] = arr
    return out


def fixtures() -> dict[str, np.ndarray]:
    """Every fixed fixture, from the on-disk cache when it is current."""
    key = cache.fixture_key(*_SOURCES, CORRECTNESS_SEED, SPEED_SEED, np.__version__)
    return cache.cached_arrays("posting_intersect", key, _all_fixtures)


def cached_battery_case(fx: dict[str, np.ndarray], name: str) -> BatteryCase:
    prefix = f"battery/{name}/"
    calls: list[dict[str, np.ndarray]] = []
    while f"{prefix}call{len(calls)}/terms" in fx:
        i = len(calls)
        calls.append({"terms": fx[f"{prefix}call{i}/terms"], "shifts": fx[f"{prefix}call{i}/shifts"]})
    return BatteryCase(name, {"doc_ids": fx[prefix + "doc_ids"], "list_offsets": fx[prefix + "list_offsets"]}, calls)


def fresh_case(dist: Distribution, seed: int) -> BatteryCase:
    """A random battery case of one distribution drawn from a per-trial seed."""
    name = f"random_{dist.name}"
    lists, calls = _random_case(dist, mix_seeds(seed, "fresh"), 1.0 if dist.name == "dense" else 0.125)
    return BatteryCase(f"{name}/fresh", flatten(lists), calls)
