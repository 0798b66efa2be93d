"""posting-seek inputs: the correctness battery and the speed workloads, all from seeded SplitMix64.

A list is sorted, unique uint32 doc ids with its 128-entry block sidecar; a call is a sequence
of ops (seek deltas and resets). Layouts: ``even`` (a constant gap) and ``geo`` (geometric gaps,
the spacing of a term's documents). Access patterns, in entries ahead of the cursor per seek:
``sequential`` (1-192: about one block), ``wand_shallow`` (128-384: 1-3 blocks, the pattern
WAND's score skipping makes dominant), ``skip_shallow`` (1,536-2,560: ~16 blocks), ``skip_deep``
(5-15 % of the list). A sequence resets the cursor about once per pass over the list (its first
seek after a reset lands at a random start), so seeks past the end (and the -1 results after
them) come naturally. Battery: named edge cases plus random sequences of every pattern on both
layouts, and one fresh case per pattern from the trial's seed. Speed: 100, 10,000 and 80,000
blocks x ``geo-sequential``, ``geo-wand_shallow``, ``even-wand_shallow``, ``geo-skip_shallow``,
``geo-skip_deep``. Fixed fixtures are cached on disk by a hash of these sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from targets.harness import cache
from targets.harness.prng import CORRECTNESS_SEED, SPEED_SEED, Stream, mix_seeds
from targets.posting_seek.target import BLOCK, MAX_DOC_ID, RESET

MEAN_GAP = 64                                   # doc ids per entry on average (1.6 % density)
LAYOUTS = ("even", "geo")
PATTERNS: dict[str, tuple[float, float]] = {    # entries ahead per seek: (low, high), uniform
    "sequential": (1, 192),
    "wand_shallow": (128, 384),
    "skip_shallow": (1_536, 2_560),
    "skip_deep": (-0.15, -0.05),                # negative: a fraction of the list
}
SPEED_BLOCKS = (100, 1_000, 10_000)
SPEED_DISTRIBUTIONS = ("geo-sequential", "geo-wand_shallow", "even-wand_shallow", "geo-skip_shallow",
                       "geo-skip_deep")
# Seeks per call (the baseline takes about 0.4-0.9 ms per call on each): per pattern and blocks.
SEEKS_PER_CALL: dict[str, dict[int, int]] = {
    "sequential": {100: 12_288, 1_000: 12_288, 10_000: 12_288},
    "wand_shallow": {100: 12_288, 1_000: 12_288, 10_000: 10_240},
    "skip_shallow": {100: 12_288, 1_000: 8_192, 10_000: 8_192},
    "skip_deep": {100: 12_288, 1_000: 8_192, 10_000: 6_144},
}
BATTERY_BLOCKS = (1, 3, 40)
EDGE_CASES = ("single_entry", "partial_block", *(f"block_multiples_{n}" for n in (128, 129, 255, 256, 257)),
              "block_boundaries", "zero_delta", "past_end", "high_ids", "runs_and_gaps")
BATTERY_SEEKS = 700

_SOURCES = (Path(__file__), Path(__file__).with_name("target.py"),
            Path(__file__).parent.parent / "harness" / "prng.py")


# --- lists ------------------------------------------------------------------------------------------

def make_list(layout: str, n: int, seed: int, mean_gap: int = MEAN_GAP, start: int = 0) -> np.ndarray:
    """``n`` ascending doc ids from ``start``: a constant gap (even) or geometric gaps (geo)."""
    if layout == "even":
        docs = start + mean_gap * np.arange(n, dtype=np.int64)
    elif layout == "geo":
        u = 1.0 - Stream(mix_seeds(seed, "gaps")).f32(n).astype(np.float64)           # in (0, 1]
        gaps = 1 + np.floor(np.log(u) / np.log1p(-1.0 / mean_gap)).astype(np.int64)
        docs = start + np.cumsum(gaps) - gaps[0]
    else:
        raise ValueError(f"unknown layout {layout!r}")
    if docs.size and docs[-1] > MAX_DOC_ID:
        raise ValueError("doc ids past 2**31 - 1")
    return docs.astype(np.uint32)


def sidecar(doc_ids: np.ndarray) -> np.ndarray:
    """The first doc id of every 128-entry block (Lance's block_least_doc_id)."""
    return doc_ids[::BLOCK].copy()


def list_arrays(doc_ids: np.ndarray) -> dict[str, np.ndarray]:
    return {"first_doc_ids": sidecar(doc_ids), "doc_ids": doc_ids}


# --- sequences ----------------------------------------------------------------------------------------

def entries_ahead(pattern: str, n: int, stream: Stream, count: int) -> np.ndarray:
    lo, hi = PATTERNS[pattern]
    if lo < 0:                                                   # a fraction of the list
        lo, hi = -lo * n, -hi * n
        lo, hi = min(lo, hi), max(lo, hi)
    return lo + (hi - lo) * stream.f32(count).astype(np.float64)


def sequence(pattern: str, n: int, mean_gap: float, stream: Stream, seeks: int) -> np.ndarray:
    """``seeks`` ops: passes of about one list length, each a reset, a seek to a random start and
    seeks ``pattern`` entries ahead (as doc-id deltas at the list's mean gap)."""
    lo, hi = PATTERNS[pattern]
    mean_ahead = (lo + hi) / 2 if lo >= 0 else -(lo + hi) / 2 * n
    per_pass = int(min(seeks, max(4, round(0.9 * n / mean_ahead))))
    passes = -(-seeks // (per_pass + 1))
    starts = stream.f32(passes).astype(np.float64) * max(0.0, n - per_pass * mean_ahead)
    ahead = entries_ahead(pattern, n, stream, passes * (per_pass - 1)).reshape(passes, per_pass - 1)
    ops = np.empty((passes, per_pass + 1), dtype=np.int64)
    ops[:, 0] = RESET
    ops[:, 1] = (starts * mean_gap).astype(np.int64)
    ops[:, 2:] = np.rint(ahead * mean_gap).astype(np.int64)
    return ops.ravel()[:seeks].copy()


# --- speed ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpeedCombo:
    blocks: int
    distribution: str                             # "<layout>-<pattern>"

    @property
    def layout(self) -> str:
        return self.distribution.split("-", 1)[0]

    @property
    def pattern(self) -> str:
        return self.distribution.split("-", 1)[1]

    @property
    def length(self) -> int:
        return self.blocks * BLOCK

    @property
    def seeks(self) -> int:
        return SEEKS_PER_CALL[self.pattern][self.blocks]


def speed_list(layout: str, blocks: int) -> np.ndarray:
    return make_list(layout, blocks * BLOCK, mix_seeds(SPEED_SEED, layout, blocks))


def speed_queries(combo: SpeedCombo, doc_ids: np.ndarray, seed: int, count: int,
                  seeks: int | None = None) -> list[dict[str, np.ndarray]]:
    """``count`` fresh sequences of one combo from a per-trial seed."""
    stream = Stream(mix_seeds(seed, "ops", combo.blocks, combo.distribution, doc_ids.size))
    gap = (int(doc_ids[-1]) - int(doc_ids[0])) / max(1, doc_ids.size - 1)
    return [{"ops": sequence(combo.pattern, doc_ids.size, gap, stream, seeks or combo.seeks)} for _ in range(count)]


# --- the battery ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatteryCase:
    name: str
    doc_ids: np.ndarray
    calls: list[np.ndarray]                       # ops per call


def _ops(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _edge_case(name: str, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    stream = Stream(mix_seeds(seed, name))
    if name == "single_entry":
        docs = np.array([1_000], dtype=np.uint32)
        return docs, [_ops(0, 0, 1, 5, RESET, 1_000, 0, RESET, 1_001, 0), _ops(999, 1, 0, 1, 1), _ops(RESET, RESET, 7)]
    if name == "partial_block":
        docs = make_list("geo", 50, seed)
        return docs, [sequence(p, docs.size, MEAN_GAP, stream, 120) for p in PATTERNS] + [
            _ops(0, *[1] * 60), _ops(int(docs[-1]), 0, 1)]
    if name.startswith("block_multiples"):              # lists of 128, 129, 255, 256 and 257 entries
        n = int(name.rsplit("_", 1)[1])
        docs = make_list("even" if n % 2 else "geo", n, seed)
        last_of_first = int(docs[BLOCK - 1])
        return docs, [_ops(int(docs[-1])), _ops(last_of_first, 1, 0), _ops(int(docs[-1]) + 1),
                      _ops(0, *[1] * (n + 2)), *[sequence(p, n, MEAN_GAP, stream, 200) for p in PATTERNS]]
    if name == "block_boundaries":
        # big gaps between blocks: targets on a block's first doc, its last doc, and in the gap
        blocks = [make_list("even", BLOCK, seed, 3, 10_000 * b) for b in range(12)]
        docs = np.concatenate(blocks)
        firsts, lasts = docs[::BLOCK].astype(np.int64), docs[BLOCK - 1::BLOCK].astype(np.int64)
        walk_first = _ops(int(firsts[0]), *np.diff(firsts).tolist())
        walk_last = _ops(int(lasts[0]), *np.diff(lasts).tolist())
        into_gaps = _ops(int(lasts[0]) + 1, *[int(lasts[b] + 1 - firsts[b]) for b in range(1, 11)])
        far = _ops(0, int(firsts[9]), RESET, int(lasts[10]), 1, RESET, int(firsts[1]) - 1, 1, 1)
        return docs, [walk_first, walk_last, into_gaps, far]
    if name == "zero_delta":
        docs = make_list("geo", 300, seed)
        return docs, [_ops(*[0] * 50), _ops(int(docs[10]), *[0] * 20, 1, *[0] * 20), _ops(int(docs[-1]), 0, 0, 1, 0)]
    if name == "past_end":
        docs = make_list("geo", 1_000, seed)
        end = int(docs[-1])
        return docs, [_ops(end + 1, 0, 5, RESET, RESET, 0, end, 1, 0),
                      _ops(RESET, 1 << 31, 0, RESET, end, 0, 1 << 30, RESET, int(docs[500]), 0),
                      _ops((1 << 32) - 2, 1, RESET, (1 << 31) - 1, 0)]
    if name == "high_ids":
        docs = (MAX_DOC_ID - make_list("geo", 700, seed)[::-1]).astype(np.uint32)
        return docs, [_ops(int(docs[0]), 1, 2_000, 0, int(docs[-1]) - int(docs[600]), 1),
                      _ops(MAX_DOC_ID, 0, 1, RESET, MAX_DOC_ID - 1, 1, 0, 1),
                      *[sequence(p, docs.size, MEAN_GAP, stream, 150) for p in PATTERNS]]
    if name == "runs_and_gaps":
        # runs of consecutive ids (gap 1) between gaps of a million
        runs = [make_list("even", int(length), seed, 1, start)
                for start, length in zip(range(0, 12_000_000, 1_000_000), (300, 40, 500, 1, 128, 129, 700, 2, 256, 90, 64, 33))]
        docs = np.concatenate(runs)
        return docs, [sequence(p, docs.size, 1.0, stream, 300) for p in PATTERNS] + [
            sequence(p, docs.size, float(docs[-1]) / docs.size, stream, 300) for p in PATTERNS]
    raise ValueError(f"unknown edge case {name!r}")


def _random_case(layout: str, blocks: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    docs = make_list(layout, blocks * BLOCK - int(Stream(mix_seeds(seed, "trim")).integers(BLOCK, 1)[0]), seed)
    stream = Stream(mix_seeds(seed, "ops"))
    return docs, [sequence(p, docs.size, MEAN_GAP, stream, BATTERY_SEEKS) for p in PATTERNS]


BATTERY_NAMES = (*EDGE_CASES, *(f"random_{layout}_{blocks}" for layout in LAYOUTS for blocks in BATTERY_BLOCKS))


def battery_case(name: str, seed: int) -> BatteryCase:
    if name.startswith("random_"):
        _, layout, blocks = name.split("_")
        docs, calls = _random_case(layout, int(blocks), mix_seeds(seed, name))
    else:
        docs, calls = _edge_case(name, seed)
    return BatteryCase(name, docs, calls)


def fresh_case(pattern: str, seed: int) -> BatteryCase:
    """A geo list of 1-400 blocks and sequences of one pattern (and a wand_shallow one), from a
    per-trial seed."""
    stream = Stream(mix_seeds(seed, "fresh", pattern))
    n = 1 + int(stream.integers(400 * BLOCK, 1)[0])
    docs = make_list("geo", n, mix_seeds(seed, "fresh-list", pattern))
    calls = [sequence(p, n, MEAN_GAP, stream, BATTERY_SEEKS) for p in (pattern, "wand_shallow")]
    return BatteryCase(f"{pattern}/fresh", docs, calls)


def _all_fixtures() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in BATTERY_NAMES:
        case = battery_case(name, CORRECTNESS_SEED)
        out[f"battery/{name}/doc_ids"] = case.doc_ids
        for i, ops in enumerate(case.calls):
            out[f"battery/{name}/ops{i}"] = ops
    for layout in LAYOUTS:
        for blocks in SPEED_BLOCKS:
            out[f"speed/{layout}/{blocks}"] = speed_list(layout, blocks)
    return out


def fixtures() -> dict[str, np.ndarray]:
    """Every fixed fixture, from the on-disk cache when it is current."""
    key = cache.fixture_key(*_SOURCES, CORRECTNESS_SEED, SPEED_SEED, np.__version__)
    return cache.cached_arrays("posting_seek", key, _all_fixtures)


def cached_battery_case(fx: dict[str, np.ndarray], name: str) -> BatteryCase:
    prefix = f"battery/{name}/"
    calls: list[np.ndarray] = []
    while f"{prefix}ops{len(calls)}" in fx:
        calls.append(fx[f"{prefix}ops{len(calls)}"])
    return BatteryCase(name, fx[prefix + "doc_ids"], calls)
