"""Independent cross-check of the pq-l2 oracle (targets/pq_l2/reference.py) against faiss.

faiss stores an 8-bit ProductQuantizer's centroids as [M][256][dsub] and IndexPQ's codes as
[N][M] uint8, the same layouts as the harness fixtures, so both can be copied in unchanged.
Skipped when faiss is not installed (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import pytest

faiss = pytest.importorskip("faiss")

import numpy as np  # noqa: E402

from targets.harness.checks import check_topk  # noqa: E402
from targets.pq_l2 import inputs, reference  # noqa: E402
from targets.pq_l2.target import NUM_CENTROIDS, TOP_K, PqShape  # noqa: E402

ATOL, RTOL = 1e-4, 1e-5
DIST = "clustered"           # the speed distribution whose fixtures are used
NUM_QUERIES = 3
SEED = 20240611


@pytest.fixture(scope="module")
def fixtures() -> dict[str, np.ndarray]:
    return inputs.fixtures()   # on-disk cached; the first build in a fresh cache takes a few seconds


def _combo(fx: dict[str, np.ndarray], shape: PqShape):
    p = f"speed/{shape.label}/{DIST}/"
    queries = inputs.speed_queries(shape, DIST, fx[p + "centres"], SEED, NUM_QUERIES)
    return fx[p + "codebook"], fx[p + "codes_aos"], np.ascontiguousarray(queries, dtype=np.float32)


def _pq(shape: PqShape, codebook: np.ndarray) -> faiss.ProductQuantizer:
    pq = faiss.ProductQuantizer(shape.dim, shape.num_sub_vectors, 8)
    assert (pq.M, pq.ksub, pq.dsub) == (shape.num_sub_vectors, NUM_CENTROIDS, shape.sub_dim)
    faiss.copy_array_to_vector(np.ascontiguousarray(codebook, dtype=np.float32), pq.centroids)
    return pq


def _close(got: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("shape", inputs.SHAPES, ids=lambda s: s.label)
def test_distance_table_matches_faiss(fixtures, shape: PqShape) -> None:
    codebook, _, queries = _combo(fixtures, shape)
    pq = _pq(shape, codebook)
    table_len = shape.num_sub_vectors * NUM_CENTROIDS
    # Batched: for dsub >= 16 (the 256x16 shape) faiss computes this with BLAS as
    # |q|^2 + |c|^2 - 2 q.c, which is not bit-faithful but stays well inside ATOL here.
    batched = np.empty((len(queries), table_len), dtype=np.float32)
    pq.compute_distance_tables(len(queries), faiss.swig_ptr(queries), faiss.swig_ptr(batched))
    for i, q in enumerate(queries):
        ref = reference.distance_table(shape, codebook, q)
        single = np.empty(table_len, dtype=np.float32)      # direct sum of squared differences
        pq.compute_distance_table(faiss.swig_ptr(q), faiss.swig_ptr(single))
        _close(single, ref)
        _close(batched[i], ref)


@pytest.mark.parametrize("shape", inputs.SHAPES, ids=lambda s: s.label)
def test_reference_topk_matches_faiss_index(fixtures, shape: PqShape) -> None:
    codebook, codes, queries = _combo(fixtures, shape)
    n = inputs.SPEED_NUM_VECTORS
    index = faiss.IndexPQ(shape.dim, shape.num_sub_vectors, 8)
    faiss.copy_array_to_vector(np.ascontiguousarray(codebook, dtype=np.float32), index.pq.centroids)
    faiss.copy_array_to_vector(np.ascontiguousarray(codes, dtype=np.uint8), index.codes)
    index.ntotal = n
    index.is_trained = True
    dists, ids = index.search(queries, TOP_K)
    # faiss adds the M table entries in its own order (a SIMD scan in recent versions, groups of 4
    # in older ones) and, for 256x16, from a BLAS-built table (see above), so its scores are not
    # bit-equal to Lance's m-ascending sum. The largest relative gap seen is ~4e-6 (256x16,
    # clustered), inside RTOL = 1e-5, so check_topk needs no looser tolerance.
    for i, q in enumerate(queries):
        ref_dists = reference.distances(shape, reference.distance_table(shape, codebook, q), codes, n)
        assert check_topk(ids[i], dists[i], ref_dists, TOP_K, atol=ATOL, rtol=RTOL) is None
        # And the reference's own top-10 has faiss's k-th best distances, rank by rank.
        _close(dists[i], reference.top_k(ref_dists, TOP_K)[1])
