"""The pq-l2 oracle checked against Lance itself (pylance): on every battery case, Lance's codes
equal the fixture's, every `_distance` Lance returns (k = N) is within the target's tolerance of
the oracle's, and Lance's top-10 is tie-consistent with the oracle's.

Lance is given the fixture's own codebook and a zero IVF centroid (one partition): with any other
centroid it would encode residuals and answer a different question (docs: ../shared/lance-anchor.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest
from lance.file import LanceFileReader

from targets.harness.checks import ABS_TOL, PQ_RTOL, check_array, check_topk
from targets.harness.prng import CORRECTNESS_SEED, mix_seeds
from targets.pq_l2 import inputs, reference
from targets.pq_l2.target import NUM_CENTROIDS, TOP_K, PqShape


def lance_index(tmp: Path, shape: PqShape, vectors: np.ndarray, codebook: np.ndarray):
    table = pa.table({"vec": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), shape.dim)})
    ds = lance.write_dataset(table, tmp / f"{shape.label}.lance")
    ds.create_index("vec", index_type="IVF_PQ", num_partitions=1, num_sub_vectors=shape.num_sub_vectors, num_bits=8,
                    ivf_centroids=np.zeros((1, shape.dim), np.float32),
                    pq_codebook=codebook.reshape(shape.num_sub_vectors, NUM_CENTROIDS, shape.sub_dim))
    return ds


def lance_codes(ds, n: int, m: int) -> np.ndarray:
    """Lance's stored PQ codes as [N][M] (it keeps them transposed, [M][N], in the index file)."""
    (aux,) = Path(ds.uri, "_indices").glob("*/auxiliary.idx")
    table = LanceFileReader(str(aux)).read_all().to_table()
    (meta,) = json.loads(table.schema.metadata[b"storage_metadata"])
    assert json.loads(meta)["transposed"] is True
    assert np.array_equal(table["_rowid"].to_numpy(), np.arange(n))
    return table["__pq_code"].combine_chunks().values.to_numpy(zero_copy_only=False).reshape(m, n).T


def lance_search(ds, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scanner = ds.scanner(columns=["_distance"], with_row_id=True, disable_scoring_autoprojection=True,
                         nearest={"column": "vec", "q": query, "k": k, "nprobes": 1, "refine_factor": None})
    plan = scanner.explain_plan()
    assert "ANNSubIndex" in plan and "KNNVectorDistance" not in plan, plan     # no raw-vector refine
    table = scanner.to_table()
    return table["_rowid"].to_numpy().astype(np.int64), table["_distance"].to_numpy()


@pytest.mark.parametrize("shape", inputs.SHAPES, ids=lambda s: s.label)
def test_the_oracle_agrees_with_lance_on_the_battery(shape: PqShape, tmp_path: Path) -> None:
    fixtures = inputs.fixtures()
    n = inputs.CORRECTNESS_NUM_VECTORS
    for kind in inputs.CORRECTNESS_KINDS:
        key = f"battery/{shape.label}/{kind}"
        codebook, codes = fixtures[f"{key}/codebook"], fixtures[f"{key}/codes_aos"]
        base = mix_seeds(CORRECTNESS_SEED, shape.label, kind)
        vectors = inputs.generate(kind, mix_seeds(base, "data"), n, shape.dim)     # the rows the codes encode
        ds = lance_index(tmp_path / kind, shape, vectors, codebook)
        assert np.array_equal(lance_codes(ds, n, shape.num_sub_vectors), codes.reshape(n, shape.num_sub_vectors)), kind
        for name in ("query_0", "query_1"):
            query = fixtures[f"{key}/{name}"]
            oracle = reference.distances(shape, reference.distance_table(shape, codebook, query), codes, n)
            ids, dists = lance_search(ds, query, n)
            assert sorted(ids) == list(range(n)), (kind, name)
            by_row = np.empty(n, np.float32)
            by_row[ids] = dists
            problem = check_array(f"lance {kind} {name} distances", by_row, oracle, atol=ABS_TOL, rtol=PQ_RTOL)
            assert problem is None, problem
            top_ids, top_dists = lance_search(ds, query, TOP_K)
            problem = check_topk(top_ids, top_dists.astype(np.float32), oracle, TOP_K, atol=ABS_TOL, rtol=PQ_RTOL)
            assert problem is None, f"{kind} {name}: {problem}"
