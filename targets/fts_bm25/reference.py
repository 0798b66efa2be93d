"""The fts-bm25 oracle: every matching document's BM25 score in Lance's f32 operations and order,
term at a time, written to be trusted by reading (lancedb/lance d2039d75,
rust/lance-index/src/scalar/inverted/scorer.rs).

- ``avgdl = total_tokens as f32 / num_docs as f32`` (``IndexBM25Scorer::new``).
- ``idf(df, N) = ln((N − df + 0.5) / (df + 0.5) + 1)`` in f32 (``idf``). Rust's ``f32::ln`` is
  the platform's ``logf``; here the f64 logarithm rounded to f32 (the correctly rounded value,
  which ``logf`` may miss by one unit in the last place: the tolerance covers it).
- ``doc_weight(f, dl) = (K1 + 1)·f / (f + K1·((1 − B) + B·dl / avgdl))``, K1 = 1.2, B = 0.75
  (``IndexBM25Scorer::doc_weight``), and a term's score is ``idf · doc_weight``
  (``Scorer::score``).
- A document's score sums its terms' scores in f32 from 0, in the order of Lance's posting
  iterators at that document (``Wand::score`` over ``postings[..=pivot]``, sorted by
  ``PostingIterator::cmp``: at one document, by the list's max score, then the token id).
- A query is its distinct terms (``InvertedPartition::bm25_search`` sorts and dedups the token
  ids); a term without postings is absent from the index and scores nothing. Every document
  holding at least one term is a match (OR).

Every numpy operation below is an element-wise f32 operation, so the rounding is exactly Lance's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

K1 = np.float32(1.2)
B = np.float32(0.75)
K1_PLUS_1 = np.float32(K1 + np.float32(1.0))
ONE_MINUS_B = np.float32(np.float32(1.0) - B)


@dataclass(frozen=True)
class Index:
    """One partition's inverted index over the query-relevant terms, decompressed: term t's
    postings are ``doc_ids/freqs[offsets[t]:offsets[t+1]]`` (doc ids ascending), its blocks of
    128 postings ``block_max_scores[block_offsets[t]:block_offsets[t+1]]``."""

    num_docs: int
    total_tokens: int
    doc_lengths: np.ndarray            # uint32[num_docs]
    offsets: np.ndarray                # int64[V + 1]
    doc_ids: np.ndarray                # uint32[nnz]
    freqs: np.ndarray                  # uint32[nnz]
    block_offsets: np.ndarray          # int64[V + 1]
    block_max_scores: np.ndarray       # float32[nblocks]
    max_scores: np.ndarray             # float32[V]

    def postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = int(self.offsets[term]), int(self.offsets[term + 1])
        return self.doc_ids[lo:hi], self.freqs[lo:hi]

    def df(self, term: int) -> int:
        return int(self.offsets[term + 1] - self.offsets[term])


def avg_doc_length(num_docs: int, total_tokens: int) -> np.float32:
    return np.float32(np.float32(total_tokens) / np.float32(num_docs))


def idf(df: int, num_docs: int) -> np.float32:
    n, d = np.float32(num_docs), np.float32(df)
    ratio = ((n - d) + np.float32(0.5)) / (d + np.float32(0.5)) + np.float32(1.0)
    return np.float32(math.log(float(ratio)))


def doc_weights(freqs: np.ndarray, lengths: np.ndarray, avgdl: np.float32) -> np.ndarray:
    """``doc_weight`` of each posting: f32[n] from the term frequencies and document lengths."""
    f = freqs.astype(np.float32)
    norm = K1 * (ONE_MINUS_B + (B * lengths.astype(np.float32)) / avgdl)
    return (K1_PLUS_1 * f) / (f + norm)


def query_order(index: Index, query_terms: np.ndarray) -> list[int]:
    """The query's distinct terms with postings, in the order Lance sums them at a document."""
    terms = [int(t) for t in np.unique(query_terms) if index.df(int(t)) > 0]
    return sorted(terms, key=lambda t: (float(index.max_scores[t]), t))


@dataclass(frozen=True)
class Scores:
    """Every matching document (ascending ids) and its score."""

    docs: np.ndarray                   # int64[matches]
    scores: np.ndarray                 # float32[matches]


def score_all(index: Index, query_terms: np.ndarray) -> Scores:
    avgdl = avg_doc_length(index.num_docs, index.total_tokens)
    acc = np.zeros(index.num_docs, dtype=np.float32)
    hit = np.zeros(index.num_docs, dtype=bool)
    for term in query_order(index, query_terms):
        ids, freqs = index.postings(term)
        weight = idf(index.df(term), index.num_docs)
        acc[ids] += weight * doc_weights(freqs, index.doc_lengths[ids], avgdl)   # ids unique per term
        hit[ids] = True
    docs = np.flatnonzero(hit)
    return Scores(docs.astype(np.int64), acc[docs])


def top_k(scores: Scores, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first min(k, matches) documents by score descending, ties by doc id ascending: the
    order this target documents (Lance's heap leaves ties in no particular order)."""
    order = np.lexsort((scores.docs, -scores.scores.astype(np.float64)))[:k]
    return scores.docs[order], scores.scores[order]


def search(index: Index, query_terms: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    return top_k(score_all(index, query_terms), k)
