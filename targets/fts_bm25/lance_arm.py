"""fts-bm25's Lance arm: Lance's own full-text search on the trial's corpus (``--against-lance``).

The same shape as ``target.py`` (``build`` + ``OPS``), run by a trusted worker like the PQ arm
(``targets/harness/lance_arm.py``). The corpus is the index's documents written as text: document
d holds the token ``t<term>`` tf times for each of its terms, padded with a filler token to its
length, so Lance's inverted index (whitespace tokens, no lower-casing, stemming, stop words or
folding) holds the same postings, document lengths and average length, and its BM25 scores the
oracle's within float rounding (1.4e-7 relative on the speed corpora, in the capsule). Built once
per index, cached by a hash of its arrays; every term's posting list is warmed into Lance's index
cache before the first timed call.

Time per call is the sum over its queries of ``MatchQuery``'s ``elapsed_compute`` (tokenising the
query, the posting lists, WAND, the top k): Lance's ~1 ms of planning and Python per query is not
counted, as the kernel's harness round trip is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from targets.fts_bm25 import inputs, reference
from targets.fts_bm25.target import NO_DOC
from targets.harness import lance, lance_arm

FILLER = "zz"


@dataclass
class FtsInstance:
    ds: Any


def corpus(index: reference.Index) -> list[str]:
    """The documents as text: ``t<term>`` tf times per term, in term order, then the filler."""
    vocab = index.offsets.size - 1
    tokens: list[list[str]] = [[] for _ in range(index.num_docs)]
    for t in range(vocab):
        ids, freqs = index.postings(t)
        name = f"t{t}"
        for d, f in zip(ids.tolist(), freqs.tolist()):
            tokens[d].extend([name] * f)
    for d, length in enumerate(index.doc_lengths.tolist()):
        if length < len(tokens[d]):
            raise ValueError(f"document {d} is shorter ({length}) than its terms' total tf ({len(tokens[d])})")
        tokens[d].extend([FILLER] * (length - len(tokens[d])))
    return [" ".join(doc) for doc in tokens]


def query_text(terms: np.ndarray) -> str:
    return " ".join(f"t{int(t)}" for t in terms)


def build(kernels: None, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> FtsInstance:
    if kernels is not None:
        raise ValueError("the Lance arm runs no kernel")
    index = inputs.index_from_arrays(int(params["num_docs"]), int(params["total_tokens"]), arrays)
    key = lance_arm.dataset_key("fts-bm25", str(index.num_docs), str(index.total_tokens),
                                *(arrays[name] for name in inputs.INDEX_ARRAYS))
    path = lance_arm.cached_dataset(Path(params["lance_cache"]), key,
                                    lambda where: lance.fts_dataset(where, corpus(index)))
    ds = lance.open_dataset(path)
    if ds.count_rows() != index.num_docs:
        raise lance.LanceError(f"{path}: {ds.count_rows()} rows, the index has {index.num_docs} documents")
    for t in range(index.offsets.size - 1):                 # every posting list into Lance's index cache
        lance.fts_search(ds, query_text(np.array([t])), 1)
    return FtsInstance(ds)


def _queries(arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    offsets = arrays["query_offsets"]
    return [arrays["query_terms"][a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def _timed(inst: FtsInstance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Lance's own time for the call's queries, one query at a time (no answer: that is a second query)."""
    k = int(arrays["k"])
    ns = sum(lance.timed_fts_search(inst.ds, query_text(terms), k) for terms in _queries(arrays))
    return {"lance_ns": np.array([ns], dtype=np.int64)}


def _answer(inst: FtsInstance, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Lance's answers (untimed) in the op's arrays, for the oracle to check. Row ids are document
    ids: the corpus is written as one fragment, in document order."""
    k = int(arrays["k"])
    queries = _queries(arrays)
    out_ids = np.full((len(queries), k), NO_DOC, dtype=np.int64)
    out_scores = np.full((len(queries), k), np.nan, dtype=np.float32)
    counts = np.zeros(len(queries), dtype=np.int64)
    for q, terms in enumerate(queries):
        ids, scores = lance.fts_search(inst.ds, query_text(terms), k)
        out_ids[q, :ids.size], out_scores[q, :ids.size], counts[q] = ids, scores, ids.size
    return {"ids": out_ids, "scores": out_scores, "counts": counts}


# As the PQ arm: the runner asks for Lance's answer only on the timed calls it checks.
OPS = {"speed": _timed, "check": _answer}
