"""Tests for targets/pq_l2/inputs.py (determinism, chunk invariance, distributions) and the shared
PQ trainer and encoder it uses (targets/harness/pq_fixtures.py)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from targets.harness import pq_fixtures
from targets.harness.prng import CORRECTNESS_SEED, Stream, mix_seeds
from targets.pq_l2 import inputs
from targets.pq_l2.target import NUM_CENTROIDS, PqShape

KINDS = inputs.CORRECTNESS_KINDS + ("clustered",)


@functools.lru_cache(maxsize=1)
def all_fixtures():
    return inputs.fixtures()          # once per session (cached on disk too)


def _centres(kind, dim):
    return inputs.centres_for(123, dim) if kind == "clustered" else None


# --- generate: determinism and chunk invariance -----------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_generate_deterministic_and_seeded(kind):
    c = _centres(kind, 24)
    a = inputs.generate(kind, 7, 50, 24, c)
    b = inputs.generate(kind, 7, 50, 24, c)
    assert a.dtype == np.float32 and a.shape == (50, 24)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, inputs.generate(kind, 8, 50, 24, c))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("a", [1, 333, 512, 700])
def test_generate_prefix_invariance_across_internal_chunks(kind, a):
    # dim 2048 -> generate works in internal chunks of 512 rows, so 1300 rows span three chunks.
    dim, rows, seed = 2048, 1300, 99
    c = _centres(kind, dim)
    whole = inputs.generate(kind, seed, rows, dim, c)
    np.testing.assert_array_equal(inputs.generate(kind, seed, a, dim, c), whole[:a])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split", [1, 17, 40])
def test_generate_equals_two_row_chunks(kind, split):
    # Drawing rows [0:split] and then [split:rows] from the same sub-streams gives the same array
    # as generating at once (the documented chunking contract).
    seed, rows, dim = 4242, 64, 12
    c = _centres(kind, dim)
    streams = {name: Stream(mix_seeds(seed, name)) for name in ("value", "mask", "pick", "scale")}
    first = inputs._generate_rows(kind, streams, split, dim, c)
    second = inputs._generate_rows(kind, streams, rows - split, dim, c)
    np.testing.assert_array_equal(np.concatenate([first, second]), inputs.generate(kind, seed, rows, dim, c))


def test_generate_unknown_kind():
    with pytest.raises(ValueError):
        inputs.generate("bimodal", 1, 4, 4)


# --- distributions ----------------------------------------------------------------------------------

N_ROWS, DIM = 1000, 128            # 128k values each


def _values(kind):
    return inputs.generate(kind, 2024, N_ROWS, DIM, _centres(kind, DIM)).astype(np.float64).ravel()


def test_uniform_distribution():
    v = _values("uniform")
    assert v.min() >= -1.0 and v.max() <= 1.0
    assert v.min() < -0.999 and v.max() > 0.999
    assert abs(v.mean()) < 0.01
    assert abs(v.var() - 1.0 / 3.0) < 0.01
    assert abs(np.mean(v < 0.0) - 0.5) < 0.01


def test_sparse_distribution():
    v = _values("sparse")
    assert abs(np.mean(v == 0.0) - 0.90) < 0.005
    nz = v[v != 0.0]
    assert nz.min() >= -1.0 and nz.max() <= 1.0
    assert abs(nz.mean()) < 0.03


def test_mostly_zero_distribution():
    v = _values("mostly_zero")
    assert abs(np.mean(v == 0.0) - 0.99) < 0.002
    nz = v[v != 0.0]
    assert 0.8 < nz.std() < 1.2


def test_gaussian_distribution():
    v = _values("gaussian")
    assert abs(v.mean()) < 0.01
    assert abs(v.std() - 1.0) < 0.01


def test_large_dynamic_range_distribution():
    v = np.abs(_values("large_dynamic_range"))
    nz = v[v > 0]
    assert np.quantile(nz, 0.01) < 1e-3
    assert np.quantile(nz, 0.99) > 1e3
    # A third of the values on each of the scales 1e-3, 1, 1e3.
    small, big = np.mean(v < 0.05), np.mean(v > 50.0)
    assert abs(small - (1 / 3 + 1 / 3 * 0.0399)) < 0.01          # 1e-3-scale values + |z|<0.05 of scale 1
    assert abs(big - (1 / 3 * 0.9601)) < 0.01                    # |z|>0.05 of the 1e3 scale
    assert 1e3 < v.max() < 1e4


def test_clustered_rows_sit_near_their_centres():
    centres = inputs.centres_for(5, 16)
    assert centres.shape == (inputs.NUM_CLUSTERS, 16) and centres.dtype == np.float32
    x = inputs.generate("clustered", 6, 400, 16, centres).astype(np.float64)
    d = np.sqrt(((x[:, None, :] - centres[None].astype(np.float64)) ** 2).sum(-1)).min(1)
    # Noise 0.1 per coordinate -> distance about 0.1*sqrt(16) = 0.4.
    assert abs(np.median(d) - 0.4) < 0.05
    assert np.unique(d.round(6)).size > 100


# --- fresh cases ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", inputs.SHAPES, ids=lambda s: s.label)
@pytest.mark.parametrize("kind", inputs.CORRECTNESS_KINDS)
def test_fresh_case_shapes_and_determinism(shape, kind):
    a = inputs.fresh_case(shape, kind, 11)
    b = inputs.fresh_case(shape, kind, 11)
    c = inputs.fresh_case(shape, kind, 12)
    expect = {"codebook": (np.float32, (shape.num_sub_vectors * NUM_CENTROIDS * shape.sub_dim,)),
              "codes_aos": (np.uint8, (inputs.CORRECTNESS_NUM_VECTORS * shape.num_sub_vectors,)),
              "query_0": (np.float32, (shape.dim,)), "query_1": (np.float32, (shape.dim,))}
    assert set(a) == set(expect)
    for name, (dtype, shp) in expect.items():
        assert a[name].dtype == dtype and a[name].shape == shp, name
        assert a[name].flags.c_contiguous
        np.testing.assert_array_equal(a[name], b[name])
        # Another seed gives other arrays (compared as bytes: a mostly_zero query may be all zeros
        # under both seeds, differing only in the signs of its zeros).
        assert a[name].tobytes() != c[name].tobytes(), name
        if dtype == np.float32:
            assert np.all(np.isfinite(a[name]))


def test_fresh_case_codes_cover_all_centroids():
    codes = inputs.fresh_case(inputs.SHAPES[0], "gaussian", 3)["codes_aos"]
    assert np.unique(codes).size == NUM_CENTROIDS


def test_fresh_case_codebook_layout():
    # Centroid k of sub-space m is sub-vector m of the k-th freshly generated vector.
    shape = PqShape(32, 4)
    case = inputs.fresh_case(shape, "uniform", 21)
    base = mix_seeds(21, "fresh", shape.label, "uniform")
    vectors = inputs.generate("uniform", mix_seeds(base, "codebook"), NUM_CENTROIDS, shape.dim)
    cb = case["codebook"].reshape(4, NUM_CENTROIDS, 8)
    for m in range(4):
        for k in (0, 1, 200, 255):
            np.testing.assert_array_equal(cb[m, k], vectors[k, m * 8:(m + 1) * 8])


# --- fixed fixtures ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", inputs.SHAPES, ids=lambda s: s.label)
def test_fixture_shapes_and_dtypes(shape):
    f = all_fixtures()
    m, sd = shape.num_sub_vectors, shape.sub_dim
    for kind in inputs.CORRECTNESS_KINDS:
        p = f"battery/{shape.label}/{kind}/"
        assert f[p + "codebook"].dtype == np.float32 and f[p + "codebook"].shape == (m * NUM_CENTROIDS * sd,)
        assert f[p + "codes_aos"].dtype == np.uint8
        assert f[p + "codes_aos"].shape == (inputs.CORRECTNESS_NUM_VECTORS * m,)
        for q in ("query_0", "query_1"):
            assert f[p + q].dtype == np.float32 and f[p + q].shape == (shape.dim,)
        assert np.all(np.isfinite(f[p + "codebook"]))
    for dist in inputs.SPEED_DISTRIBUTIONS:
        p = f"speed/{shape.label}/{dist}/"
        assert f[p + "codebook"].dtype == np.float32 and f[p + "codebook"].shape == (m * NUM_CENTROIDS * sd,)
        assert f[p + "codes_aos"].dtype == np.uint8
        assert f[p + "codes_aos"].shape == (inputs.SPEED_NUM_VECTORS * m,)
        assert f[p + "centres"].shape == (inputs.NUM_CLUSTERS, shape.dim)


def test_fixture_keys_complete():
    f = all_fixtures()
    expected = {f"battery/{s.label}/{k}/{n}" for s in inputs.SHAPES for k in inputs.CORRECTNESS_KINDS
                for n in ("codebook", "codes_aos", "query_0", "query_1")}
    expected |= {f"speed/{s.label}/{d}/{n}" for s in inputs.SHAPES for d in inputs.SPEED_DISTRIBUTIONS
                 for n in ("codebook", "codes_aos", "centres")}
    assert set(f) == expected


def test_fixture_battery_case_matches_direct_generation():
    # The cached fixture for the smallest case equals a direct rebuild (the cache stores what the
    # generators make).
    shape = inputs.SHAPES[0]
    direct = inputs._case_arrays(shape, "uniform", CORRECTNESS_SEED)
    f = all_fixtures()
    for name, arr in direct.items():
        np.testing.assert_array_equal(f[f"battery/{shape.label}/uniform/{name}"], arr)


# --- codebook training and encoding -----------------------------------------------------------------

def _quant_error(shape, codebook, data):
    m, sd = shape.num_sub_vectors, shape.sub_dim
    cb = codebook.reshape(m, NUM_CENTROIDS, sd).astype(np.float64)
    sub = data.reshape(-1, m, sd).astype(np.float64)
    d = ((sub[:, :, None, :] - cb[None]) ** 2).sum(-1)           # [N, M, 256]
    return d.min(-1).sum()


def _nearest64(shape, codebook, data):
    m, sd = shape.num_sub_vectors, shape.sub_dim
    cb = codebook.reshape(m, NUM_CENTROIDS, sd).astype(np.float64)
    sub = data.reshape(-1, m, sd).astype(np.float64)
    return ((sub[:, :, None, :] - cb[None]) ** 2).sum(-1)


@pytest.mark.parametrize("kind", ["clustered", "gaussian"])
def test_train_codebook_reduces_quantisation_error(kind, monkeypatch):
    shape = PqShape(16, 4)
    data = inputs.generate(kind, 31, 1500, 16, _centres(kind, 16))
    errors = []
    for iters in range(4):
        monkeypatch.setattr(pq_fixtures, "LLOYD_ITERATIONS", iters)
        cb = pq_fixtures.train_codebook(shape, data, Stream(77))
        assert cb.dtype == np.float32 and cb.shape == (4 * NUM_CENTROIDS * 4,)
        errors.append(_quant_error(shape, cb, data))
    # errors[0] is the random init (rows of the data); Lloyd never makes it worse, and helps.
    assert all(b <= a * (1 + 1e-6) for a, b in zip(errors, errors[1:]))
    assert errors[2] < 0.9 * errors[0]


def test_train_codebook_init_uses_data_rows(monkeypatch):
    shape = PqShape(8, 2)
    data = inputs.generate("uniform", 3, 600, 8)
    monkeypatch.setattr(pq_fixtures, "LLOYD_ITERATIONS", 0)
    cb = pq_fixtures.train_codebook(shape, data, Stream(5)).reshape(2, NUM_CENTROIDS, 4)
    sub = data.reshape(-1, 2, 4)
    for m in range(2):
        rows = {tuple(r) for r in sub[:, m]}
        assert all(tuple(c) in rows for c in cb[m])


@pytest.mark.parametrize("kind", inputs.CORRECTNESS_KINDS)
def test_encode_picks_nearest_centroid(kind):
    shape = PqShape(32, 4)
    data = inputs.generate(kind, 5, 600, 32)
    # A codebook not made from these rows, so nearest is a real search.
    codebook = inputs.fresh_case(shape, kind, 9)["codebook"]
    codes = pq_fixtures.encode(shape, codebook, data)
    assert codes.dtype == np.uint8 and codes.shape == (600 * 4,) and codes.flags.c_contiguous
    codes = codes.reshape(600, 4).astype(np.int64)                      # AoS [N][M]
    d = _nearest64(shape, codebook, data)
    best = d.min(-1)
    chosen = np.take_along_axis(d, codes[:, :, None], -1)[..., 0]
    # Exactly the float64 nearest, except genuine near-ties.
    tie_ok = chosen - best <= 1e-6 * (best + 1e-12)
    assert np.all((codes == d.argmin(-1)) | tie_ok)
    assert np.mean(codes == d.argmin(-1)) > 0.99


def test_encode_layout_is_aos():
    shape = PqShape(8, 2)
    cb = np.zeros((2, NUM_CENTROIDS, 4), dtype=np.float32)
    cb[0, :, 0] = np.arange(NUM_CENTROIDS)          # sub-space 0: centroid k at (k, 0, 0, 0)
    cb[1, :, 1] = -np.arange(NUM_CENTROIDS)         # sub-space 1: centroid k at (0, -k, 0, 0)
    data = np.zeros((3, 8), dtype=np.float32)
    data[:, 0] = [5, 17, 250]
    data[:, 5] = [-1, -2, -3]
    codes = pq_fixtures.encode(shape, cb.reshape(-1), data)
    assert codes.tolist() == [5, 1, 17, 2, 250, 3]


# --- near-centroid query ----------------------------------------------------------------------------

def _assert_near_some_centroid(shape, codebook, query):
    m, sd = shape.num_sub_vectors, shape.sub_dim
    cb = codebook.reshape(m, NUM_CENTROIDS, sd).astype(np.float64)
    q = query.reshape(m, sd).astype(np.float64)
    dist = np.sqrt(((cb - q[:, None, :]) ** 2).sum(-1))               # [M, 256]
    norm = np.sqrt((cb ** 2).sum(-1))
    ok = dist <= 1e-2 * norm + 1e-4
    assert np.all(ok.any(axis=1)), np.flatnonzero(~ok.any(axis=1))


@pytest.mark.parametrize("shape", inputs.SHAPES, ids=lambda s: s.label)
@pytest.mark.parametrize("kind", inputs.CORRECTNESS_KINDS)
def test_near_centroid_query_fresh(shape, kind):
    case = inputs.fresh_case(shape, kind, 17)
    _assert_near_some_centroid(shape, case["codebook"], case["query_1"])


@pytest.mark.parametrize("shape", inputs.SHAPES, ids=lambda s: s.label)
@pytest.mark.parametrize("kind", inputs.CORRECTNESS_KINDS)
def test_near_centroid_query_battery(shape, kind):
    f = all_fixtures()
    p = f"battery/{shape.label}/{kind}/"
    _assert_near_some_centroid(shape, f[p + "codebook"], f[p + "query_1"])


def test_near_centroid_query_is_not_exactly_a_centroid():
    shape = PqShape(64, 4)
    codebook = inputs.fresh_case(shape, "gaussian", 2)["codebook"]
    q = inputs.near_centroid_query(shape, codebook, Stream(8))
    cb = codebook.reshape(4, NUM_CENTROIDS, 16)
    assert q.dtype == np.float32 and q.shape == (64,)
    for m in range(4):
        assert not np.any(np.all(cb[m] == q[m * 16:(m + 1) * 16], axis=1))
    # Deterministic in its stream.
    np.testing.assert_array_equal(q, inputs.near_centroid_query(shape, codebook, Stream(8)))
    assert not np.array_equal(q, inputs.near_centroid_query(shape, codebook, Stream(9)))


def test_speed_queries_shape_and_seed():
    shape = inputs.SHAPES[0]
    centres = inputs.centres_for(1, shape.dim)
    a = inputs.speed_queries(shape, "clustered", centres, 5, 7)
    assert a.shape == (7, shape.dim) and a.dtype == np.float32
    np.testing.assert_array_equal(a, inputs.speed_queries(shape, "clustered", centres, 5, 7))
    assert not np.array_equal(a, inputs.speed_queries(shape, "clustered", centres, 6, 7))
    np.testing.assert_array_equal(inputs.speed_queries(shape, "clustered", centres, 5, 3), a[:3])
