"""topk-merge inputs: the correctness battery and the speed workloads, all from seeded SplitMix64.

A workload is a pool of blocks (``dists`` f32 [blocks, width], ``row_ids`` u64, ``lengths`` i64:
block b's rows are its first ``lengths[b]``) and calls. Block ``j·Q + t`` is slot t of band j: the
candidates for a query's j-th run. A call gives each of its Q queries one block of every band (a
fresh permutation per band, so no block serves two queries of a call: runs as uint16 block
indices) and patches one row per query: a leaf of a random non-empty block of the query gets a
distance just below the query's smallest and a fresh row id below the pool's, so it is the
query's first answer, wherever it lands (``target.py``: nothing derived from the pool, not even a
block's minimum, survives a call). Rows within a block are in max-heap order by distance, the
order ``FlatIndex::search`` leaves its ``BinaryHeap`` in; the battery also has blocks sorted up,
sorted down and shuffled.

Speed: (runs, run width = k) in {(8, 10), (64, 100), (1024, 10), (16, 1000)} x iid_uniform,
partition_correlated (run j's distances grow with j: late runs mostly rejected), heavy_ties (64
levels: ties broken by row id) and adversarial (each run beats the one before, the last holds the
global best). Battery: small shapes x value kinds (NaN of both signs, ±0.0, ±inf, all equal, ties
at the cut, row ids over the whole u64 range, short and empty runs with bait past their lengths,
run orders), plus k = 1, k above the rows, one run, one element, many runs, most runs empty and
no rows at all. Fixtures are cached on disk by a hash of the generators, the PRNG and the seeds.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from targets.harness import cache
from targets.harness.prng import CORRECTNESS_SEED, SPEED_SEED, Stream, mix_seeds
from targets.topk_merge.reference import total_order_key

F32 = np.float32


@dataclass(frozen=True)
class MergeShape:
    runs: int           # P: runs per query (probed partitions, index deltas)
    width: int          # k': rows per run at most (a block's capacity)
    k: int              # the fetch: rows kept per query
    queries: int        # queries per call

    @property
    def label(self) -> str:
        return f"{self.runs}x{self.width}" + ("" if self.k == self.width else f"/k{self.k}")


SPEED_SHAPES = (MergeShape(8, 10, 10, 256), MergeShape(64, 100, 100, 12), MergeShape(1024, 10, 10, 24),
                MergeShape(16, 1000, 1000, 2))
SPEED_DISTRIBUTIONS = ("iid_uniform", "partition_correlated", "heavy_ties", "adversarial")
TIE_LEVELS = 64
SPEED_ROW_ID_BASE = 1 << 32          # pool row ids: fragment >= 1, as Lance's (fragment << 32 | offset)
SPEED_ROW_ID_SPAN = 1 << 40
PATCH_ROW_ID_SPAN = 1 << 32          # patched rows' ids: below every speed pool row id
MAX_ROW_ID = (1 << 64) - 2           # u64::MAX is the tombstone (the outputs' poison), never a row
MAX_BLOCKS = 1 << 16                 # runs travel as uint16 block indices (2 bytes a run, not 8)

# Battery shapes: (name, shape); every value kind runs on the first three.
GENERAL_SHAPES = (("16x8/k5", MergeShape(16, 8, 5, 4)), ("3x50/k20", MergeShape(3, 50, 20, 4)),
                  ("64x32/k100", MergeShape(64, 32, 100, 3)))
VALUE_KINDS = ("uniform", "nan", "signed_zeros", "infinities", "all_equal", "ties_at_cut", "wide_row_ids",
               "short_runs", "run_orders")
# Edge shapes, each with the "mixed" kind (a bit of every value kind) except the two whose kind is
# their name: empty_runs (most runs empty: some queries have no rows) and no_rows (every run empty).
EDGE_SHAPES = (("k1", MergeShape(32, 16, 1, 4)), ("k_above_rows", MergeShape(5, 4, 50, 4)),
               ("one_run", MergeShape(1, 40, 10, 4)), ("one_element", MergeShape(1, 1, 1, 3)),
               ("many_runs", MergeShape(300, 10, 10, 2)), ("empty_runs", MergeShape(12, 6, 8, 4)),
               ("no_rows", MergeShape(4, 5, 3, 3)))
BATTERY_CALLS = 3
# NaNs as they arise: x86's default NaN is negative (0xFFC00000), so it sorts before -inf.
NAN_BITS = np.array([0x7FC00000, 0xFFC00000, 0x7FC12345, 0xFFD00001, 0x7FFFFFFF], dtype=np.uint32)
BAIT_BITS = np.uint32(0xFFC00000)    # past a block's length: would be every query's first answer

_SOURCES = (Path(__file__), Path(__file__).with_name("target.py"), Path(__file__).with_name("reference.py"),
            Path(__file__).parent.parent / "harness" / "prng.py")


# --- values -----------------------------------------------------------------------------------------

def _band_values(kind: str, stream: Stream, band: int, bands: int, n: int) -> np.ndarray:
    """Distances of one band's blocks (n values) for a speed distribution or a battery kind."""
    u = stream.f32(n)
    if kind == "iid_uniform":
        return u
    if kind == "partition_correlated":                       # partitions ranked by centroid distance
        return u + F32(2.0 * band / bands)
    if kind == "heavy_ties":                                  # 4-bit-PQ-like: 64 levels
        return np.floor(u * F32(TIE_LEVELS)) / F32(TIE_LEVELS)
    if kind == "adversarial":                                 # each run better than the last
        if band == bands - 1:
            return u * F32(0.5)
        return F32(1.0) + u + F32(2.0 * (bands - 2 - band) / bands)
    return _battery_values(kind, stream, u)


def _battery_values(kind: str, stream: Stream, u: np.ndarray) -> np.ndarray:
    n = u.size
    signed = u * F32(2.0) - F32(1.0)
    if kind in ("uniform", "short_runs", "run_orders"):
        return signed
    if kind == "nan":
        out = signed.copy()
        pick = stream.f32(n) < F32(0.15)
        out.view(np.uint32)[pick] = NAN_BITS[stream.integers(NAN_BITS.size, n)][pick]
        return out
    if kind == "signed_zeros":                                # a few -0.0 first, then many +0.0
        u2 = stream.f32(n)
        return np.where(u2 < F32(0.03), F32(-0.0), np.where(u2 < F32(0.5), F32(0.0),
                        np.where(u2 < F32(0.75), F32(1e-45), F32(1.0)))).astype(F32)
    if kind == "infinities":
        choice = stream.integers(5, n)
        return np.where(choice == 0, F32(np.inf), np.where(choice == 1, F32(-np.inf), signed)).astype(F32)
    if kind == "all_equal":
        return np.full(n, F32(0.25))
    if kind in ("ties_at_cut", "wide_row_ids"):               # three values: row ids decide
        return (stream.integers(3, n) - 1).astype(F32)
    if kind in ("mixed", "empty_runs", "no_rows"):
        out = np.array([-0.0, 0.0, np.inf, -np.inf, 1e-40, -3.5, 7.0, 0.25], dtype=F32)[stream.integers(8, n)]
        nan = stream.f32(n) < F32(0.1)
        out.view(np.uint32)[nan] = NAN_BITS[stream.integers(NAN_BITS.size, n)][nan]
        return out
    raise ValueError(f"unknown distribution {kind!r}")


def unique_row_ids(stream: Stream, n: int, low: int, span: int) -> np.ndarray:
    """n distinct u64 row ids in [low, low + span)."""
    out = np.empty(0, dtype=np.uint64)
    while out.size < n:
        draw = np.uint64(low) + stream.u64(n - out.size) % np.uint64(span)
        out = np.concatenate([out, draw])
        _, first = np.unique(out, return_index=True)
        out = out[np.sort(first)]
    return out


def heap_order(dists: np.ndarray) -> np.ndarray:
    """A permutation laying ``dists`` out as a max-heap by totalOrder (what a BinaryHeap's vec holds)."""
    heap = [(-int(key), i) for i, key in enumerate(total_order_key(dists))]
    heapq.heapify(heap)
    return np.array([i for _, i in heap], dtype=np.int64)


def _block_order(how: int, stream: Stream, dists: np.ndarray) -> np.ndarray:
    if how == 0:
        return heap_order(dists)
    keys = total_order_key(dists)
    if how == 1:
        return np.argsort(keys, kind="stable")
    if how == 2:
        return np.argsort(keys, kind="stable")[::-1]
    return np.argsort(stream.u64(dists.size), kind="stable")


# --- pools and calls ---------------------------------------------------------------------------------

def make_pool(shape: MergeShape, kind: str, seed: int) -> dict[str, np.ndarray]:
    """A pool of ``runs x queries`` blocks of ``width``: dists, row_ids, lengths."""
    stream = Stream(mix_seeds(seed, shape.label, kind, "pool"))
    blocks = shape.runs * shape.queries
    dists = np.empty((blocks, shape.width), dtype=F32)
    for band in range(shape.runs):
        values = _band_values(kind, stream, band, shape.runs, shape.queries * shape.width)
        dists[band * shape.queries:(band + 1) * shape.queries] = values.reshape(shape.queries, shape.width)
    lengths = np.full(blocks, shape.width, dtype=np.int64)
    if kind in ("short_runs", "mixed", "empty_runs") and shape.width > 1:
        lengths = stream.integers(shape.width + 1, blocks)
    if kind == "empty_runs":                                  # half the bands empty, most of the rest
        lengths[stream.f32(blocks) < F32(0.85)] = 0
        lengths[:shape.runs // 2 * shape.queries] = 0
    if kind == "no_rows":
        lengths[:] = 0
    if kind == "wide_row_ids":
        row_ids = unique_row_ids(stream, dists.size, 0, MAX_ROW_ID + 1)
    elif kind in SPEED_DISTRIBUTIONS:
        row_ids = unique_row_ids(stream, dists.size, SPEED_ROW_ID_BASE, SPEED_ROW_ID_SPAN)
    else:                                     # both sides of 2^32: a packed 32-bit key breaks here
        row_ids = unique_row_ids(stream, dists.size, (1 << 32) - dists.size, 2 * dists.size)
    row_ids = row_ids.reshape(dists.shape)
    orders = stream.integers(4, blocks) if kind in ("run_orders", "mixed") else np.zeros(blocks, np.int64)
    for b in range(blocks):
        n = int(lengths[b])
        perm = _block_order(int(orders[b]), stream, dists[b, :n])
        dists[b, :n], row_ids[b, :n] = dists[b, :n][perm], row_ids[b, :n][perm]
        dists[b, n:].view(np.uint32)[:] = BAIT_BITS            # bait: a reader past the length wins it
        row_ids[b, n:] = 0
    return {"dists": dists, "row_ids": row_ids, "lengths": lengths}


def below(dists: np.ndarray) -> np.ndarray:
    """The f32 just below each value in totalOrder (the same value at the very bottom, -NaN with
    every payload bit set)."""
    key = total_order_key(dists).astype(np.int64)
    key = np.maximum(key - 1, 0).astype(np.uint32)
    bits = np.where(key >= np.uint32(0x80000000), key ^ np.uint32(0x80000000), ~key)
    return bits.astype(np.uint32).view(F32)


def make_calls(pool: dict[str, np.ndarray], shape: MergeShape, seed: int, count: int) -> list[dict[str, np.ndarray]]:
    """``count`` calls of ``shape.queries`` queries each: their runs (uint16 block indices: a fresh
    permutation of each band's blocks over the queries) and one patch per query with rows: a leaf
    of a random non-empty block of the query gets a distance just below the query's smallest and
    a fresh row id, so it is the query's first answer."""
    dists, row_ids, lengths = pool["dists"], pool["row_ids"], pool["lengths"]
    if dists.shape[0] > MAX_BLOCKS:
        raise ValueError(f"{dists.shape[0]} blocks: runs are uint16, at most {MAX_BLOCKS}")
    valid = np.arange(shape.width)[None, :] < lengths[:, None]
    keys = np.where(valid, total_order_key(dists), np.uint32(0xFFFFFFFF)).astype(np.int64)
    keys[lengths == 0] = 1 << 32                       # an empty block holds no query's minimum
    block_best = keys.argmin(axis=1)                   # first minimum: inside the valid prefix
    block_min = keys[np.arange(keys.shape[0]), block_best]
    pool_rows = row_ids[valid]
    clash = pool_rows[pool_rows < np.uint64(PATCH_ROW_ID_SPAN)]
    out = []
    for c in range(count):
        stream = Stream(mix_seeds(seed, "calls", c))
        slots = np.argsort(stream.u64(shape.runs * shape.queries).reshape(shape.runs, shape.queries), axis=1,
                           kind="stable").T
        runs = np.arange(shape.runs)[None, :] * shape.queries + slots
        rows = lengths[runs] > 0
        has = rows.any(axis=1)                         # queries without rows get no patch
        runs_with = runs[has]
        best = runs_with[np.arange(runs_with.shape[0]), block_min[runs_with].argmin(axis=1)]
        # A random non-empty block of each query: the j-th of its non-empty ones.
        nonempty = rows[has]
        pick = (stream.u64(best.size) >> np.uint64(32)) * nonempty.sum(axis=1).astype(np.uint64) >> np.uint64(32)
        column = np.argmax(np.cumsum(nonempty, axis=1) > pick.astype(np.int64)[:, None], axis=1)
        target = runs_with[np.arange(runs_with.shape[0]), column]
        n = lengths[target]
        leaf = n // 2 + ((stream.u64(target.size) >> np.uint64(32)) * (n - n // 2).astype(np.uint64)
                         >> np.uint64(32)).astype(np.int64)
        fresh = unique_row_ids(stream, target.size + clash.size, 0, PATCH_ROW_ID_SPAN)
        fresh = fresh[~np.isin(fresh, clash)][:target.size]
        out.append({"runs": np.ascontiguousarray(runs, dtype=np.uint16), "patch_pos": target * shape.width + leaf,
                    "patch_dists": below(dists[best, block_best[best]]), "patch_row_ids": fresh})
    return out


# --- the battery and the speed fixtures --------------------------------------------------------------

def battery_specs() -> list[tuple[str, MergeShape, str]]:
    """(case name, shape, kind) of every fixed battery case."""
    out = [(f"{kind}/{name}", shape, kind) for name, shape in GENERAL_SHAPES for kind in VALUE_KINDS]
    out += [(f"{name}/{shape.label}", shape, name if name in ("empty_runs", "no_rows") else "mixed")
            for name, shape in EDGE_SHAPES]
    return out


def _all_fixtures() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, shape, kind in battery_specs():
        for key, arr in make_pool(shape, kind, CORRECTNESS_SEED).items():
            out[f"battery/{name}/{key}"] = arr
    for shape in SPEED_SHAPES:
        for dist in SPEED_DISTRIBUTIONS:
            for key, arr in make_pool(shape, dist, SPEED_SEED).items():
                out[f"speed/{shape.label}/{dist}/{key}"] = arr
    return out


def fixtures() -> dict[str, np.ndarray]:
    """Every fixed pool, from the on-disk cache when it is current."""
    key = cache.fixture_key(*_SOURCES, CORRECTNESS_SEED, SPEED_SEED, np.__version__)
    return cache.cached_arrays("topk_merge", key, _all_fixtures)


def pool_of(fx: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {name: fx[prefix + name] for name in ("dists", "row_ids", "lengths")}


def fresh_case(shape: MergeShape, kind: str, seed: int) -> dict[str, np.ndarray]:
    """A battery pool drawn from a per-trial seed."""
    return make_pool(shape, kind, mix_seeds(seed, "fresh"))


