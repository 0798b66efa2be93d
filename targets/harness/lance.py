"""Lance itself (pylance) as a measured arm: build a fixture's dataset, query it, read its timers.

Plumbing for the targets Lance can run (functions, no framework). Facts behind each call are in
docs/lance.md; the short version:
  - one IVF partition with a **zero** centroid and the fixture's own PQ codebook, so Lance encodes
    the fixture's vectors (not residuals) to the fixture's codes and answers the same question;
  - ``refine_factor=None`` (no raw-vector re-ranking) and the plan is checked for it;
  - Lance's per-query fixed cost (planning, Python) is ~1 ms, so the arm is timed by Lance's own
    operator timers from ``analyze_plan()``: ``index_search_time`` of ``ANNSubIndex`` (distance
    table + distances + top-k), ``find_partitions_elapsed`` of ``ANNIvfPartition``, or
    ``elapsed_compute`` of full-text search's ``MatchQuery`` (tokenising the query, its posting
    lists, WAND and the top k);
  - full-text search splits on whitespace only (no lower-casing, stemming, stop words or
    folding) and keeps no positions, so a corpus written as token names is indexed token for token.
Parsing is strict: a plan without the timer, with a refine step, or in an unknown unit is an error.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NUM_CENTROIDS = 256
SUB_INDEX_TIMER = ("ANNSubIndex", "index_search_time")
PARTITION_TIMER = ("ANNIvfPartition", "find_partitions_elapsed")
MATCH_QUERY_TIMER = ("MatchQuery", "elapsed_compute")
_UNIT_NS = {"ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
_METRIC = r"{name}=([0-9]+(?:\.[0-9]+)?)(ns|µs|us|ms|s)(?=[,\]])"


class LanceError(Exception):
    """Lance could not be built, queried or read as expected; the arm is unavailable."""


def version() -> str:
    """pylance's version, without importing it (pylance is not fork-safe; the runner forks workers)."""
    import importlib.metadata
    return importlib.metadata.version("pylance")


def _write(path: Path, vectors: np.ndarray) -> Any:
    import lance
    import pyarrow as pa
    if path.exists():
        shutil.rmtree(path)
    dim = vectors.shape[1]
    table = pa.table({"vec": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors).reshape(-1)), dim)})
    return lance.write_dataset(table, str(path))


def pq_dataset(path: Path, vectors: np.ndarray, codebook: np.ndarray, num_sub_vectors: int,
               metric: str = "l2") -> Any:
    """A dataset of ``vectors`` with an IVF_PQ index holding ``codebook`` ([M][256][sd], flat)."""
    ds = _write(path, vectors)
    dim = vectors.shape[1]
    ds.create_index("vec", index_type="IVF_PQ", metric=metric, num_partitions=1, num_sub_vectors=num_sub_vectors,
                    num_bits=8, ivf_centroids=np.zeros((1, dim), np.float32),
                    pq_codebook=codebook.reshape(num_sub_vectors, NUM_CENTROIDS, dim // num_sub_vectors))
    return ds


def open_dataset(path: Path) -> Any:
    import lance
    return lance.dataset(str(path))


def stored_pq_codes(ds: Any, n: int, m: int) -> np.ndarray:
    """Lance's stored PQ codes as [N][M] (its index file keeps them transposed, [M][N])."""
    from lance.file import LanceFileReader
    found = list(Path(ds.uri, "_indices").glob("*/auxiliary.idx"))
    if len(found) != 1:
        raise LanceError(f"expected one auxiliary.idx under {ds.uri}/_indices, found {len(found)}")
    table = LanceFileReader(str(found[0])).read_all().to_table()
    (meta,) = json.loads(table.schema.metadata[b"storage_metadata"])
    if json.loads(meta).get("transposed") is not True:
        raise LanceError("Lance's PQ storage is not transposed: this pylance lays codes out differently")
    if not np.array_equal(table["_rowid"].to_numpy(), np.arange(n)):
        raise LanceError("Lance's PQ storage is not in row order")
    return table["__pq_code"].combine_chunks().values.to_numpy(zero_copy_only=False).reshape(m, n).T


def _nearest(query: np.ndarray, k: int, nprobes: int = 1) -> dict[str, Any]:
    return {"column": "vec", "q": query, "k": k, "nprobes": nprobes, "refine_factor": None}


def _scanner(ds: Any, query: np.ndarray, k: int, nprobes: int) -> Any:
    return ds.scanner(columns=["_distance"], with_row_id=True, disable_scoring_autoprojection=True,
                      nearest=_nearest(query, k, nprobes))


def search(ds: Any, query: np.ndarray, k: int, nprobes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Lance's (row ids, distances) for one query, nearest first."""
    table = _scanner(ds, query, k, nprobes).to_table()
    return table["_rowid"].to_numpy().astype(np.int64), table["_distance"].to_numpy().astype(np.float32)


def timer_ns(plan: str, timer: tuple[str, str]) -> int:
    """One operator metric from an ``analyze_plan()`` text, in ns; strict."""
    node, name = timer
    if "KNNVectorDistance" in plan:
        raise LanceError("Lance's plan re-ranks on raw vectors (a refine step crept in):\n" + plan)
    lines = [line for line in plan.splitlines() if line.strip().startswith(node + ":")]
    if len(lines) != 1:
        raise LanceError(f"expected one {node} in Lance's plan, found {len(lines)}:\n{plan}")
    found = re.findall(_METRIC.format(name=re.escape(name)), lines[0])
    if len(found) != 1:
        raise LanceError(f"expected one {name} on {node} in Lance's plan:\n{plan}")
    value, unit = found[0]
    return max(1, round(float(value) * _UNIT_NS[unit]))


def timed_search(ds: Any, query: np.ndarray, k: int, timer: tuple[str, str] = SUB_INDEX_TIMER,
                 nprobes: int = 1) -> int:
    """Run one query under ``analyze_plan`` and return Lance's own timer for it, in ns."""
    return timer_ns(_scanner(ds, query, k, nprobes).analyze_plan(), timer)


@dataclass(frozen=True)
class Anchor:
    """What a Lance comparison was made with (recorded beside every vs_lance figure)."""

    pylance: str
    cpu: str
    simd: str
    timer: str


def fts_dataset(path: Path, texts: list[str]) -> Any:
    """A dataset of one ``text`` column with an INVERTED index that takes each whitespace-separated
    token as it is."""
    import lance
    import pyarrow as pa
    if path.exists():
        shutil.rmtree(path)
    ds = lance.write_dataset(pa.table({"text": pa.array(texts)}), str(path))
    ds.create_scalar_index("text", "INVERTED", base_tokenizer="whitespace", lower_case=False, stem=False,
                           remove_stop_words=False, ascii_folding=False, with_position=False, num_workers=1)
    return ds


def _fts_scanner(ds: Any, query: str, k: int) -> Any:
    return ds.scanner(columns=["_score"], with_row_id=True, limit=k, disable_scoring_autoprojection=True,
                      full_text_query=query)


def fts_search(ds: Any, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Lance's (row ids, BM25 scores) for one full-text query, best first."""
    table = _fts_scanner(ds, query, k).to_table()
    return table["_rowid"].to_numpy().astype(np.int64), table["_score"].to_numpy().astype(np.float32)


def timed_fts_search(ds: Any, query: str, k: int) -> int:
    """Run one full-text query under ``analyze_plan`` and return ``MatchQuery``'s own time, in ns."""
    return timer_ns(_fts_scanner(ds, query, k).analyze_plan(), MATCH_QUERY_TIMER)
