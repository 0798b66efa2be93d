"""Tests for targets/pq_l2/reference.py (the oracle), the baseline kernel, and the precision trap."""

from __future__ import annotations

import numpy as np
import pytest

from targets.harness.checks import ABS_TOL, PQ_RTOL, check_array, check_topk
from targets.harness.prng import CORRECTNESS_SEED
from targets.pq_l2 import inputs, kernels, reference, run_experiment
from targets.pq_l2.target import NUM_CENTROIDS, PqShape

from lance_scalar import bits, l2_scalar, rng_pq_case

F32 = np.float32


# --- independent brute force in float64 ------------------------------------------------------------

def brute_table(shape, codebook, query):
    m, sd = shape.num_sub_vectors, shape.sub_dim
    cb = codebook.reshape(m, NUM_CENTROIDS, sd).astype(np.float64)
    q = query.reshape(m, 1, sd).astype(np.float64)
    return ((cb - q) ** 2).sum(-1)                                   # [M, 256]


def brute_distances(shape, codebook, query, codes, n):
    t = brute_table(shape, codebook, query)
    c = codes.reshape(n, shape.num_sub_vectors).astype(np.int64)
    return t[np.arange(shape.num_sub_vectors)[None, :], c].sum(1)


SMALL_SHAPES = [PqShape(64, 8), PqShape(64, 4), PqShape(40, 4), PqShape(80, 4), PqShape(140, 4),
                PqShape(32, 1), PqShape(16, 16), PqShape(96, 2)]          # sub_dim 8,16,10,20,35,32,1,48


def _within(got, ref64):
    return np.all(np.abs(got.astype(np.float64) - ref64) <= 1e-4 + 1e-6 * np.abs(ref64))


@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=lambda s: f"{s.label}-sd{s.sub_dim}")
def test_reference_against_float64_brute_force(shape):
    n = 300
    codebook, query, codes = rng_pq_case(shape, n, seed=shape.dim * 31 + shape.num_sub_vectors)
    table = reference.distance_table(shape, codebook, query)
    assert table.dtype == np.float32 and table.shape == (shape.num_sub_vectors * NUM_CENTROIDS,)
    assert _within(table, brute_table(shape, codebook, query).ravel())
    dist = reference.distances(shape, table, codes, n)
    assert dist.dtype == np.float32 and dist.shape == (n,)
    assert _within(dist, brute_distances(shape, codebook, query, codes, n))


def test_brute_force_comparison_has_teeth():
    # A table off by one sub-space (a classic indexing slip) fails the same bound.
    shape = PqShape(40, 4)
    codebook, query, _ = rng_pq_case(shape, 1, seed=3)
    wrong = reference.distance_table(shape, codebook, np.roll(query, 10))
    assert not _within(wrong, brute_table(shape, codebook, query).ravel())


# --- bit-exact Lance order: l2_scalar::<f32, 16> ----------------------------------------------------


@pytest.mark.parametrize("sd", [1, 8, 10, 15, 16, 17, 20, 32, 35, 48])
@pytest.mark.parametrize("spread", [False, True])
def test_l2_batch_bit_exact_lance_order(sd, spread):
    rng = np.random.default_rng(sd * 7 + spread)
    cents = rng.uniform(-1, 1, (NUM_CENTROIDS, sd)).astype(F32)
    x = rng.uniform(-1, 1, sd).astype(F32)
    if spread:
        cents *= (10.0 ** rng.integers(-3, 4, cents.shape)).astype(F32)
        x *= (10.0 ** rng.integers(-3, 4, sd)).astype(F32)
    got = reference.l2_batch(x, cents)
    assert got.dtype == np.float32 and got.shape == (NUM_CENTROIDS,)
    expected = np.array([l2_scalar(x, c) for c in cents], dtype=F32)
    np.testing.assert_array_equal(bits(got), bits(expected))


def test_lance_order_matters_so_bit_test_has_teeth():
    # On wide-range data, other summation orders give different f32 bits for some centroids,
    # so the bit-exact test above does check the order, not just the value.
    rng = np.random.default_rng(0)
    sd = 40
    cents = (rng.uniform(-1, 1, (NUM_CENTROIDS, sd)) * 10.0 ** rng.integers(-3, 4, (NUM_CENTROIDS, sd))).astype(F32)
    x = (rng.uniform(-1, 1, sd) * 10.0 ** rng.integers(-3, 4, sd)).astype(F32)
    expected = np.array([l2_scalar(x, c) for c in cents], dtype=F32)
    diff = cents - x
    sequential = np.zeros(NUM_CENTROIDS, dtype=F32)
    for d in range(sd):
        sequential += diff[:, d] * diff[:, d]
    lanes_first = np.array([l2_scalar(x[::-1], c[::-1]) for c in cents], dtype=F32)
    assert np.any(bits(sequential) != bits(expected))
    assert np.any(bits(lanes_first) != bits(expected))


@pytest.mark.parametrize("shape", [PqShape(40, 4), PqShape(64, 2), PqShape(72, 2)], ids=lambda s: s.label)
def test_distance_table_and_distances_bit_exact(shape):
    n = 50
    codebook, query, codes = rng_pq_case(shape, n, seed=5, scale_spread=True)
    m, sd = shape.num_sub_vectors, shape.sub_dim
    cb = codebook.reshape(m, NUM_CENTROIDS, sd)
    q = query.reshape(m, sd)
    table = reference.distance_table(shape, codebook, query)
    expected = np.array([[l2_scalar(q[i], cb[i, k]) for k in range(NUM_CENTROIDS)] for i in range(m)],
                        dtype=F32).ravel()
    np.testing.assert_array_equal(bits(table), bits(expected))
    # compute_pq_distance: f32 accumulator from 0, sub-vectors in ascending order.
    dist = reference.distances(shape, table, codes, n)
    c = codes.reshape(n, m)
    exp_dist = []
    for row in range(n):
        acc = F32(0.0)
        for i in range(m):
            acc = F32(acc + table[i * NUM_CENTROIDS + int(c[row, i])])
        exp_dist.append(acc)
    np.testing.assert_array_equal(bits(dist), bits(np.array(exp_dist, dtype=F32)))


# --- the baseline kernel ----------------------------------------------------------------------------

def run_search(kernel, query, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One ``search`` into buffers filled as the harness fills them (ids -1, distances NaN)."""
    ids, dists = np.full(k, -1, dtype=np.int64), np.full(k, np.nan, dtype=F32)
    kernel.search(query, k, ids, dists)
    return ids, dists


@pytest.mark.slow
@pytest.mark.parametrize("shape", [PqShape(128, 16), PqShape(40, 4), PqShape(72, 2)],
                         ids=lambda s: f"{s.label}-sd{s.sub_dim}")
def test_baseline_kernel_is_a_bit_exact_port(shape):
    # Lance's loops, Lance's order: every distance bit-equal to the oracle's, ordered by
    # (distance, row id) as the scanner's sort does, for k = N and for a top-10.
    n = 500
    codebook, query, codes = rng_pq_case(shape, n, seed=17)
    k = kernels.PqKernel(shape, codebook, codes, n)
    ref = reference.distances(shape, reference.distance_table(shape, codebook, query), codes, n)
    order = np.lexsort((np.arange(n), ref))
    for top in (n, 10, 1):
        ids, dists = run_search(k, query, top)
        np.testing.assert_array_equal(ids, order[:top])
        np.testing.assert_array_equal(bits(dists), bits(ref[order[:top]]))
        assert check_topk(ids, dists, ref, top, atol=ABS_TOL, rtol=PQ_RTOL) is None


def test_baseline_kernel_orders_ties_by_row_id():
    # Rows with identical codes tie exactly; the max-heap keeps the first rows it met, and the
    # result lists each tie in row order.
    shape = PqShape(40, 4)
    codebook, query, codes = rng_pq_case(shape, 64, seed=23)
    rows = codes.reshape(64, 4)
    rows[1::2] = rows[0::2]                              # rows 2i and 2i+1 are the same vector
    k = kernels.PqKernel(shape, codebook, rows.reshape(-1), 64)
    ref = reference.distances(shape, reference.distance_table(shape, codebook, query), rows.reshape(-1), 64)
    ids, dists = run_search(k, query, 64)
    np.testing.assert_array_equal(ids, np.lexsort((np.arange(64), ref)))
    ids, _ = run_search(k, query, 7)                     # the 4th pair is cut in two: its first row stays
    np.testing.assert_array_equal(ids, np.lexsort((np.arange(64), ref))[:7])


# --- the precision trap -----------------------------------------------------------------------------

def expanded_table(shape, codebook, query):
    """The q² + c² − 2·q·c rewrite, all in float32 (what a 'fast' kernel might do)."""
    m, sd = shape.num_sub_vectors, shape.sub_dim
    cb = codebook.reshape(m, NUM_CENTROIDS, sd)
    q = query.reshape(m, sd)
    qq = np.einsum("md,md->m", q, q).astype(F32)
    cc = np.einsum("mkd,mkd->mk", cb, cb).astype(F32)
    qc = np.einsum("mkd,md->mk", cb, q).astype(F32)
    return (qq[:, None] + cc - F32(2.0) * qc).astype(F32).ravel()


@pytest.fixture(scope="module")
def battery():
    return inputs.fixtures()


def top_k(dists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.lexsort((np.arange(dists.size), dists))[:k]
    return ids, dists[ids]


@pytest.mark.parametrize("shape", inputs.SHAPES, ids=lambda s: s.label)
def test_expanded_rewrite_fails_on_large_dynamic_range_near_centroid_query(battery, shape):
    p = f"battery/{shape.label}/large_dynamic_range/"
    codebook, query = battery[p + "codebook"], battery[p + "query_1"]
    ref = reference.distance_table(shape, codebook, query)
    rewrite = expanded_table(shape, codebook, query)
    # The rewrite is algebraically the same table (loose check against float64) ...
    b64 = brute_table(shape, codebook, query).ravel()
    assert np.allclose(rewrite, b64, rtol=1e-3, atol=np.abs(b64).max() * 1e-5)
    # ... but with the production tolerance its table is far off (cancellation on tiny entries) ...
    msg = check_array("table", rewrite, ref, atol=ABS_TOL, rtol=PQ_RTOL)
    assert msg is not None and "out of tolerance" in msg
    # ... and the trial's own check of the case rejects a kernel built on it (the table is not an
    # output any more, so the error must show in the distances of the search).
    [case] = [c for c in run_experiment.cases(inputs, CORRECTNESS_SEED)
              if c.name == f"{shape.label}/large_dynamic_range"]
    n = inputs.CORRECTNESS_NUM_VECTORS
    codes = case.arrays["codes_aos"]
    verdicts = []
    for call, arrays in enumerate(case.calls):
        dists = reference.distances(shape, expanded_table(shape, codebook, arrays["query"]), codes, n)
        ids, top = top_k(dists, int(arrays["k"]))
        verdicts.append(run_experiment.check(case, call, {"topk_ids": ids, "topk_dists": top}))
    assert any(v is not None and "differs from reference" in v for v in verdicts), verdicts
    # While the faithful baseline kernel passes the same check on every call.
    k = kernels.PqKernel(shape, codebook, codes, n)
    for call, arrays in enumerate(case.calls):
        ids, top = run_search(k, arrays["query"], int(arrays["k"]))
        assert run_experiment.check(case, call, {"topk_ids": ids, "topk_dists": top}) is None


def test_reference_near_centroid_distance_is_accurate(battery):
    # On the trap case the reference itself stays within the bound of the exact float64 value.
    shape = inputs.SHAPES[0]
    p = f"battery/{shape.label}/large_dynamic_range/"
    ref = reference.distance_table(shape, battery[p + "codebook"], battery[p + "query_1"])
    b64 = brute_table(shape, battery[p + "codebook"], battery[p + "query_1"]).ravel()
    assert _within(ref, b64)
