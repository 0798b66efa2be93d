"""fts-bm25 inputs: inverted indexes built term by term (no corpus), all from seeded SplitMix64.

A document's length is log-normal (mean ~60 tokens); a term's postings are drawn directly: its
document frequency from its distribution's law, its documents uniform without replacement (or
clustered in bursts), its term frequencies 1 + Geometric(0.6) (in a burst, a burst's own, heavier
law); in a speed index a document is at least as long as its terms' total tf. Each index then
stores what Lance stores for the term (lance-index ``DocSet``, ``calculate_block_max_scores``,
``PostingListBuilder::to_batch``): postings in doc-id order in
blocks of 128, each block's max score ``max f/(f + doc_norm) · idf · (K1 + 1)`` and the list's
max score (the largest block max), decompressed (Lance bit-packs each full block's doc-id deltas
and frequencies; decoding them is part of Lance's search time, not of this op).

Battery: small indexes (1..4,000 documents) with the domain's edge cases, one per named case,
plus one fresh case per shape from the trial's secret seed. Speed: 10 combos of 3 shapes
(documents x terms per query x k) and 4 distributions, each combo an index over its own pool of
terms; a call is a batch of queries drawing distinct pool terms, a term set seen earlier in the
sequence redrawn.
Fixed fixtures are cached on disk by a hash of the generators, the PRNG and the seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from targets.fts_bm25 import reference
from targets.fts_bm25.target import BLOCK_SIZE, INDEX_ARRAYS
from targets.harness import cache
from targets.harness.prng import CORRECTNESS_SEED, SPEED_SEED, Stream, mix_seeds

MEAN_DOC_LENGTH = 60.0
DOC_LENGTH_SIGMA = 0.6
TF_P = 0.6                          # tf = 1 + Geometric(TF_P)
ZIPF_SCALE, ZIPF_EXPONENT = 0.3, 1.1  # df ≈ N·0.3 / rank^1.1


@dataclass(frozen=True)
class Bm25Shape:
    num_docs: int
    terms: int                      # distinct terms per speed query
    k: int

    @property
    def label(self) -> str:
        return f"{self.num_docs}x{self.terms}x{self.k}"


@dataclass(frozen=True)
class Query:
    """One call: a batch of queries (terms of query q at ``offsets[q]:offsets[q + 1]``) and k."""

    terms: np.ndarray               # uint32
    offsets: np.ndarray             # int64[batch + 1]
    k: int


@dataclass(frozen=True)
class SpeedCombo:
    shape: Bm25Shape
    distribution: str
    batch: int                      # queries per call: each call ~0.5-2 ms with the baseline

    @property
    def pool(self) -> int:
        """Terms in the combo's index: twice a call's, at least 24, so term sets rarely recur."""
        return max(MIN_POOL, 2 * self.batch * self.shape.terms)


SMALL, LARGE_K, LONG = Bm25Shape(100_000, 3, 10), Bm25Shape(300_000, 3, 1000), Bm25Shape(1_000_000, 12, 10)
SPEED_DISTRIBUTIONS = ("zipf_mixed", "common_heavy", "rare_only", "bursty")
# common_heavy only at 100k documents: at 1M one 3-term query is ~0.9M postings, ~17 ms with the
# baseline, which alone would take the paired trial far past its budget.
SPEED_COMBOS = (SpeedCombo(SMALL, "zipf_mixed", 4), SpeedCombo(SMALL, "common_heavy", 1),
                SpeedCombo(SMALL, "rare_only", 8), SpeedCombo(SMALL, "bursty", 8),
                SpeedCombo(LARGE_K, "zipf_mixed", 1), SpeedCombo(LARGE_K, "rare_only", 2),
                SpeedCombo(LARGE_K, "bursty", 1),
                SpeedCombo(LONG, "zipf_mixed", 1), SpeedCombo(LONG, "rare_only", 2),
                SpeedCombo(LONG, "bursty", 2))
MIN_POOL = 24
REDRAWS = 32
# Zipf ranks start at 4 (df <= ~6.6% of N): Lance removes stop words by default, and the
# 10-50% regime is common_heavy's.
MIN_RANK = 4.0

_SOURCES = (Path(__file__), Path(__file__).with_name("target.py"), Path(__file__).with_name("reference.py"),
            Path(__file__).parent.parent / "harness" / "prng.py")


# --- generators ------------------------------------------------------------------------------------

def doc_lengths(seed: int, num_docs: int) -> np.ndarray:
    """Log-normal token counts, mean ~60, at least 1: uint32[num_docs]."""
    mu = np.log(MEAN_DOC_LENGTH) - DOC_LENGTH_SIGMA ** 2 / 2
    z = Stream(seed).normal(num_docs).astype(np.float64)
    return np.maximum(1, np.rint(np.exp(mu + DOC_LENGTH_SIGMA * z))).astype(np.uint32)


def geometric_tf(stream: Stream, count: int, p: np.ndarray | float) -> np.ndarray:
    """1 + Geometric(p) (failures before the first success), by inversion: uint32[count]."""
    u = stream.f32(count).astype(np.float64)
    return (1 + np.floor(np.log1p(-u) / np.log1p(-np.asarray(p, dtype=np.float64)))).astype(np.uint32)


def uniform_docs(stream: Stream, num_docs: int, df: int) -> np.ndarray:
    """About ``df`` distinct documents, uniform: sorted uint32. Rare terms draw with replacement
    and drop repeats; common ones keep each document with probability df/N."""
    if df * 8 <= num_docs:
        return np.unique(stream.integers(num_docs, df)).astype(np.uint32)
    return np.flatnonzero(stream.f32(num_docs) < np.float32(df / num_docs)).astype(np.uint32)


def bursty_postings(stream: Stream, num_docs: int, df: int) -> tuple[np.ndarray, np.ndarray]:
    """About ``df`` documents in bursts of ~256 within windows of ~4x that many ids, each burst
    with its own term-frequency law (some bursts are about the term): sorted doc ids, freqs."""
    bursts = max(1, df // 256)
    width = min(num_docs, 4 * -(-df // bursts))
    starts = stream.integers(num_docs - width + 1, bursts)
    which = stream.integers(bursts, df)
    docs, first = np.unique(starts[which] + stream.integers(width, df), return_index=True)
    heat = np.float32(0.15) + np.float32(0.7) * stream.f32(bursts)          # Geometric p per burst
    return docs.astype(np.uint32), geometric_tf(stream, docs.size, heat[which[first]])


def term_postings(seed: int, num_docs: int, df: int, bursty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    stream = Stream(seed)
    if bursty:
        return bursty_postings(stream, num_docs, df)
    docs = uniform_docs(stream, num_docs, df)
    return docs, geometric_tf(stream, docs.size, TF_P)


def zipf_df(stream: Stream, num_docs: int, count: int, max_rank: float) -> np.ndarray:
    """df ≈ N·0.3/rank^1.1 with rank log-uniform in [MIN_RANK, max_rank]."""
    rank = MIN_RANK * np.exp(stream.f32(count).astype(np.float64) * np.log(max_rank / MIN_RANK))
    return np.maximum(1, np.rint(num_docs * ZIPF_SCALE / rank ** ZIPF_EXPONENT)).astype(np.int64)


def pool_dfs(distribution: str, stream: Stream, num_docs: int, count: int) -> np.ndarray:
    """Target document frequencies of a speed index's terms."""
    if distribution == "zipf_mixed":
        return zipf_df(stream, num_docs, count, 20_000.0)
    if distribution == "common_heavy":                       # 10-50% of the documents: WAND cannot skip
        return np.rint(num_docs * (0.1 + 0.4 * stream.f32(count).astype(np.float64))).astype(np.int64)
    if distribution == "rare_only":                          # at most 2,000 documents
        return np.rint(np.exp(np.log(10.0) + stream.f32(count).astype(np.float64) * np.log(200.0))).astype(np.int64)
    if distribution == "bursty":
        return zipf_df(stream, num_docs, count, 2_000.0)
    raise ValueError(f"unknown distribution {distribution!r}")


# --- indexes ---------------------------------------------------------------------------------------

def build_index(num_docs: int, lengths: np.ndarray, postings: list[tuple[np.ndarray, np.ndarray]]) -> reference.Index:
    """What Lance stores for these terms' posting lists over these documents."""
    counts = np.array([docs.size for docs, _ in postings], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    blocks = -(-counts // BLOCK_SIZE)
    block_offsets = np.concatenate([[0], np.cumsum(blocks)]).astype(np.int64)
    total_tokens = int(lengths.sum(dtype=np.uint64))
    avgdl = reference.avg_doc_length(num_docs, total_tokens)
    block_max = np.empty(int(block_offsets[-1]), dtype=np.float32)
    max_scores = np.empty(len(postings), dtype=np.float32)
    for t, (docs, freqs) in enumerate(postings):
        block_max[block_offsets[t]:block_offsets[t + 1]] = block_max_scores(docs, freqs, lengths, avgdl, num_docs)
        # PostingListBuilder::to_batch: the fold of f32::max from f32::MIN (-inf for an empty list)
        max_scores[t] = block_max[block_offsets[t]:block_offsets[t + 1]].max(initial=np.float32(np.finfo(np.float32).min))
    empty = np.zeros(0, dtype=np.uint32)
    return reference.Index(
        num_docs=num_docs, total_tokens=total_tokens, doc_lengths=lengths, offsets=offsets,
        doc_ids=np.concatenate([empty] + [d for d, _ in postings]).astype(np.uint32),
        freqs=np.concatenate([empty] + [f for _, f in postings]).astype(np.uint32),
        block_offsets=block_offsets, block_max_scores=block_max, max_scores=max_scores)


def block_max_scores(docs: np.ndarray, freqs: np.ndarray, lengths: np.ndarray, avgdl: np.float32,
                     num_docs: int) -> np.ndarray:
    """``DocSet::calculate_block_max_scores``: per block of 128 postings, the max of
    ``f / (f + doc_norm)``, times ``idf(df, N) · (K1 + 1)``, all in f32."""
    if docs.size == 0:
        return np.zeros(0, dtype=np.float32)
    f = freqs.astype(np.float32)
    norm = reference.K1 * (reference.ONE_MINUS_B + (reference.B * lengths[docs].astype(np.float32)) / avgdl)
    per_posting = f / (f + norm)
    block_max = np.maximum.reduceat(per_posting, np.arange(0, docs.size, BLOCK_SIZE))
    return block_max * np.float32(reference.idf(docs.size, num_docs) * reference.K1_PLUS_1)


def index_arrays(index: reference.Index) -> dict[str, np.ndarray]:
    """The index's arrays by the names the kernel's ``__init__`` takes them (target.INDEX_ARRAYS)."""
    return {name: getattr(index, name) for name in INDEX_ARRAYS}


def index_from_arrays(num_docs: int, total_tokens: int, arrays: dict[str, np.ndarray]) -> reference.Index:
    return reference.Index(num_docs, total_tokens, **{name: arrays[name] for name in INDEX_ARRAYS})


def speed_index(combo: SpeedCombo) -> reference.Index:
    shape = combo.shape
    base = mix_seeds(SPEED_SEED, shape.label, combo.distribution)
    lengths = doc_lengths(mix_seeds(base, "lengths"), shape.num_docs)
    dfs = pool_dfs(combo.distribution, Stream(mix_seeds(base, "df")), shape.num_docs, combo.pool)
    postings = [term_postings(mix_seeds(base, "term", t), shape.num_docs, int(df), combo.distribution == "bursty")
                for t, df in enumerate(dfs)]
    return build_index(shape.num_docs, holding_lengths(lengths, postings), postings)


def holding_lengths(lengths: np.ndarray, postings: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Each document at least as long as its terms' total tf, as in a real corpus (a document's
    text holds its tokens; Lance's own index of the same corpus needs it)."""
    tf_sum = np.zeros(lengths.size, dtype=np.int64)
    for docs, freqs in postings:
        tf_sum[docs] += freqs
    return np.maximum(lengths.astype(np.int64), tf_sum).astype(np.uint32)


def speed_batches(combo: SpeedCombo, seed: int, count: int) -> list[Query]:
    """``count`` calls of ``combo.batch`` queries, each query ``terms`` distinct pool terms, no
    term twice in a call, a term set seen earlier in the sequence redrawn (up to REDRAWS times:
    profile mode asks for more one-term queries than a pool has terms)."""
    shape = combo.shape
    stream = Stream(mix_seeds(seed, "queries", shape.label, combo.distribution))
    seen: set[tuple[int, ...]] = set()
    out: list[Query] = []
    offsets = np.arange(0, (combo.batch + 1) * shape.terms, shape.terms, dtype=np.int64)
    redraws = 0
    while len(out) < count:
        terms = np.argsort(stream.f32(combo.pool), kind="stable")[:combo.batch * shape.terms].astype(np.uint32)
        keys = {tuple(sorted(int(t) for t in terms[a:b])) for a, b in zip(offsets[:-1], offsets[1:])}
        if keys & seen and redraws < REDRAWS:
            redraws += 1
            continue
        seen |= keys
        out.append(Query(terms, offsets, shape.k))
        redraws = 0
    return out


# --- the correctness battery -----------------------------------------------------------------------

BATTERY_SHAPES = (Bm25Shape(1_000, 4, 10), Bm25Shape(4_000, 8, 100))
CORRECTNESS_KINDS = SPEED_DISTRIBUTIONS
BATTERY_POOL = 16                   # terms per battery index
# The domain's edge cases, one case each (tests name them).
EDGE_CASES = ("repeated_term", "one_term", "empty_posting_list", "single_doc", "tf_up_to_1000",
              "zero_length_docs", "identical_docs", "k_above_matches", "many_terms")


def batch(queries: list[list[int]], k: int) -> Query:
    offsets = np.concatenate([[0], np.cumsum([len(q) for q in queries])]).astype(np.int64)
    return Query(np.array([t for q in queries for t in q], dtype=np.uint32), offsets, k)


@dataclass(frozen=True)
class BatteryCase:
    name: str
    index: reference.Index
    calls: list[Query]


def kind_case(shape: Bm25Shape, kind: str, seed: int) -> BatteryCase:
    """A small index of ``kind``'s terms (lists of 1..~2,000 postings, so many span several
    blocks) and three calls: one query of ``shape.terms`` terms at ``shape.k``, a batch of three
    half-size queries at k = 1, and one query ranking every document (k = N)."""
    base = mix_seeds(seed, shape.label, kind)
    n = shape.num_docs
    lengths = doc_lengths(mix_seeds(base, "lengths"), n)
    dfs = np.minimum(pool_dfs(kind, Stream(mix_seeds(base, "df")), n, BATTERY_POOL), n)
    if kind == "zipf_mixed":                # down to rank 1 here: a stop-word-sized list too
        dfs[0] = int(n * ZIPF_SCALE)
    postings = [term_postings(mix_seeds(base, "term", t), n, int(df), kind == "bursty") for t, df in enumerate(dfs)]
    order = [int(t) for t in np.argsort(Stream(mix_seeds(base, "queries")).f32(BATTERY_POOL), kind="stable")]
    half = max(1, shape.terms // 2)
    calls = [batch([order[:shape.terms]], shape.k),
             batch([order[i * half:(i + 1) * half] for i in range(3)], 1),
             batch([order[-shape.terms:]], n)]
    return BatteryCase(f"{shape.label}/{kind}", build_index(n, lengths, postings), calls)


def edge_case(name: str, seed: int) -> BatteryCase:
    """One of EDGE_CASES: an index and calls built to hold the case (see the comments)."""
    base = mix_seeds(seed, "edge", name)
    n = 2_000
    lengths = doc_lengths(mix_seeds(base, "lengths"), n)
    dfs = [1_000, 300, 40, 600, 5]

    def postings(counts: list[int], bursty: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        return [term_postings(mix_seeds(base, "term", t), n, df, bursty) for t, df in enumerate(counts)]

    if name == "repeated_term":             # Lance dedups a query's tokens: a repeat counts once
        index = build_index(n, lengths, postings(dfs))
        calls = [batch([[1, 1, 2], [3, 3, 3], [0, 4, 0, 4]], 10), batch([[2, 1, 2, 1]], n)]
    elif name == "one_term":
        index = build_index(n, lengths, postings(dfs))
        calls = [batch([[0], [2], [4]], 10), batch([[3]], 1_000)]
    elif name == "empty_posting_list":      # term 2 has no postings (its max score is f32::MIN)
        lists = postings(dfs)
        lists[2] = (np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.uint32))
        index = build_index(n, lengths, lists)
        calls = [batch([[2], [2, 0], [1, 2, 3], [2, 2]], 10), batch([[4, 2]], 50)]
    elif name == "single_doc":              # N = 1, df = N: the smallest idf, ln(1 + 1/3)
        index = build_index(1, np.array([7], dtype=np.uint32), [(np.zeros(1, dtype=np.uint32), np.array([3], dtype=np.uint32))])
        calls = [batch([[0]], 1), batch([[0], [0, 0]], 10)]
    elif name == "tf_up_to_1000":           # term frequencies 1..1,000 (doc weights near K1 + 1)
        lists = postings(dfs)
        stream = Stream(mix_seeds(base, "tf"))
        lists = [(d, np.minimum(1_000, geometric_tf(stream, d.size, 0.005))) for d, _ in lists]
        lists[0][1][::97] = 1_000
        index = build_index(n, lengths, lists)
        calls = [batch([[0, 1, 2]], 10), batch([[3, 4], [0]], 100)]
    elif name == "zero_length_docs":        # a fifth of the documents have no tokens (doc_norm = K1·(1 − B))
        lengths = lengths.copy()
        lengths[::5] = 0
        index = build_index(n, lengths, postings(dfs))
        calls = [batch([[0, 1, 2]], 10), batch([[3, 4], [1]], n)]
    elif name == "identical_docs":          # every document 60 tokens, tf 1: equal scores by the hundred
        lengths = np.full(n, 60, dtype=np.uint32)
        lists = [(d, np.ones(d.size, dtype=np.uint32)) for d, _ in postings([600, 600, 150, 1_200])]
        index = build_index(n, lengths, lists)
        calls = [batch([[0], [0, 1], [2, 3]], 10), batch([[0, 1, 2, 3]], 137)]
    elif name == "k_above_matches":         # fewer matches than k: the rest of the buffers stays unwritten
        index = build_index(n, lengths, postings([3, 1, 8, 40, 2]))
        calls = [batch([[0], [0, 1], [4]], 10), batch([[2, 3, 4]], 1_000)]
    elif name == "many_terms":              # 24 terms in one query, 6 of them common
        counts = [int(c) for c in pool_dfs("zipf_mixed", Stream(mix_seeds(base, "df")), n, 18)] + [800] * 6
        index = build_index(n, lengths, postings([min(c, n) for c in counts]))
        calls = [batch([list(range(24))], 10), batch([list(range(0, 24, 2)), list(range(1, 24, 2))], 100)]
    else:
        raise ValueError(f"unknown edge case {name!r}")
    return BatteryCase(name, index, calls)


def battery(seed: int = CORRECTNESS_SEED) -> list[BatteryCase]:
    """The fixed battery: every kind at every battery shape, then every edge case."""
    cases = [kind_case(shape, kind, seed) for shape in BATTERY_SHAPES for kind in CORRECTNESS_KINDS]
    return cases + [edge_case(name, seed) for name in EDGE_CASES]


def fresh_cases(seed: int) -> list[BatteryCase]:
    """One case per battery shape from a per-trial seed, its kind drawn from the seed too."""
    kinds = Stream(mix_seeds(seed, "fresh-kinds")).integers(len(CORRECTNESS_KINDS), len(BATTERY_SHAPES))
    out = []
    for shape, kind in zip(BATTERY_SHAPES, kinds):
        case = kind_case(shape, CORRECTNESS_KINDS[int(kind)], mix_seeds(seed, "fresh"))
        out.append(BatteryCase(case.name + "/fresh", case.index, case.calls))
    return out


# --- fixtures ---------------------------------------------------------------------------------------

def combo_label(combo: SpeedCombo) -> str:
    return f"{combo.shape.label}/{combo.distribution}"


def _all_fixtures() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for combo in SPEED_COMBOS:
        for name, arr in index_arrays(speed_index(combo)).items():
            out[f"speed/{combo_label(combo)}/{name}"] = arr
    return out


def fixtures() -> dict[str, np.ndarray]:
    """Every speed index, from the on-disk cache when it is current."""
    key = cache.fixture_key(*_SOURCES, SPEED_SEED, np.__version__)
    return cache.cached_arrays("fts_bm25", key, _all_fixtures)


def fixture_index(fx: dict[str, np.ndarray], combo: SpeedCombo) -> reference.Index:
    prefix = f"speed/{combo_label(combo)}/"
    arrays = {name: fx[prefix + name] for name in INDEX_ARRAYS}
    lengths = arrays["doc_lengths"]
    return index_from_arrays(lengths.size, int(lengths.sum(dtype=np.uint64)), arrays)
