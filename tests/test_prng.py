"""Tests for targets/harness/prng.py against published values and an independent scalar SplitMix64."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from targets.harness import prng

M64 = 0xFFFFFFFFFFFFFFFF
GAMMA = 0x9E3779B97F4A7C15


# --- independent scalar reference (Vigna's splitmix64.c, written out with Python ints) ----------

def scalar_finalize(z: int) -> int:
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return (z ^ (z >> 31)) & M64


def scalar_splitmix64(seed: int, n: int) -> list[int]:
    """The stateful generator: state += gamma; output = finalize(state)."""
    state = seed & M64
    out = []
    for _ in range(n):
        state = (state + GAMMA) & M64
        out.append(scalar_finalize(state))
    return out


def scalar_mix_seeds(*parts: int | str) -> int:
    acc = 0
    for part in parts:
        if isinstance(part, str):
            ing = int.from_bytes(hashlib.sha256(part.encode("utf-8")).digest()[:8], "little")
        else:
            ing = part & M64
        acc = scalar_finalize((acc + GAMMA + scalar_finalize(ing)) & M64)
    return acc


def scalar_f32(u: int) -> np.float32:
    return np.float32((u >> 40) / 2.0**24)


SEEDS = [0, 1, 42, 0xDEADBEEF, M64, prng.CORRECTNESS_SEED, prng.SPEED_SEED, -1, 1 << 63]


# --- SplitMix64 -------------------------------------------------------------------------------------

def test_splitmix64_published_values_seed0():
    out = prng.splitmix64(0, 3)
    assert out.dtype == np.uint64
    assert [int(x) for x in out] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_scalar_reference_matches_published_values():
    # Guards the test's own reference.
    assert scalar_splitmix64(0, 3) == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


@pytest.mark.parametrize("seed", SEEDS)
def test_splitmix64_matches_scalar(seed):
    expected = scalar_splitmix64(seed, 300)
    assert [int(x) for x in prng.splitmix64(seed, 300)] == expected


@pytest.mark.parametrize("seed", [0, 7, 0xC0FFEE, M64])
@pytest.mark.parametrize("start,n", [(0, 1), (1, 5), (17, 40), (250, 50), (299, 1)])
def test_splitmix64_start_offset_is_a_slice(seed, start, n):
    expected = scalar_splitmix64(seed, start + n)[start:]
    assert [int(x) for x in prng.splitmix64(seed, n, start)] == expected


def test_splitmix64_large_start_is_pure_function_of_index():
    # Output i depends only on (seed, i): state after i+1 steps is seed + (i+1)*gamma.
    seed, i = 12345, 10**12 + 7
    expected = scalar_finalize(seed + (i + 1) * GAMMA)
    assert int(prng.splitmix64(seed, 1, i)[0]) == expected
    assert int(prng.splitmix64(seed, 3, i - 1)[1]) == expected


def test_splitmix64_zero_length():
    assert prng.splitmix64(5, 0).size == 0


def test_mix64_is_the_finalizer():
    for x in [0, 1, GAMMA, M64, 0x0123456789ABCDEF, -5]:
        assert prng.mix64(x) == scalar_finalize(x & M64)


# --- mix_seeds --------------------------------------------------------------------------------------

def test_mix_seeds_deterministic():
    assert prng.mix_seeds(1, "a", 2) == prng.mix_seeds(1, "a", 2)


@pytest.mark.parametrize("a,b", [(1, 2), (0, 1), ("data", "query"), (prng.CORRECTNESS_SEED, "x")])
def test_mix_seeds_order_sensitive(a, b):
    assert prng.mix_seeds(a, b) != prng.mix_seeds(b, a)


@pytest.mark.parametrize("a", [0, 1, 12345, "same", M64])
def test_mix_seeds_equal_parts_do_not_collapse(a):
    assert prng.mix_seeds(a, a) != 0
    assert prng.mix_seeds(a, a) != prng.mix_seeds(a)


def test_mix_seeds_distinguishes_str_and_parts():
    assert prng.mix_seeds("ab") != prng.mix_seeds("a", "b")
    assert prng.mix_seeds("a") != prng.mix_seeds("b")


@pytest.mark.parametrize("parts", [(0,), (1, 2), ("value",), (prng.CORRECTNESS_SEED, "128x16", "gaussian"),
                                   (M64, -1, "x", 0), ("ünïcode",)])
def test_mix_seeds_matches_scalar(parts):
    assert prng.mix_seeds(*parts) == scalar_mix_seeds(*parts)


GOLDEN_MIX = 0xF89B50E8C64B7F28        # from the scalar code above, pinned
GOLDEN_MIX_VALUE = 0x07C850B757BC1BEC


def test_mix_seeds_pinned_golden_value():
    # Computed from the documented algorithm with the scalar code above (sha256 of the UTF-8
    # string, first 8 bytes little-endian; acc = finalize(acc + gamma + finalize(ingredient))).
    assert scalar_mix_seeds(0xC0FFEEC0DEBEEFFE, "128x16", "gaussian") == GOLDEN_MIX
    assert prng.mix_seeds(0xC0FFEEC0DEBEEFFE, "128x16", "gaussian") == GOLDEN_MIX
    assert prng.mix_seeds("value") == GOLDEN_MIX_VALUE


def test_mix_seeds_result_in_u64_range():
    for parts in [(M64, M64), ("x" * 1000,), (-(1 << 70),)]:
        v = prng.mix_seeds(*parts)
        assert 0 <= v <= M64


# --- next_f32 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 99, M64])
def test_next_f32_matches_scalar(seed):
    raw = scalar_splitmix64(seed, 500)
    expected = np.array([scalar_f32(u) for u in raw], dtype=np.float32)
    got = prng.next_f32(seed, 500)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(prng.next_f32(seed, 100, 400), expected[400:])


def test_next_f32_range():
    u = prng.next_f32(3, 200_000)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.005
    # Exactly representable multiples of 2^-24.
    assert np.all((u.astype(np.float64) * 2**24) == np.round(u.astype(np.float64) * 2**24))


def test_next_f32_top_value_below_one():
    # The largest possible value (top 24 bits all ones) must still be < 1 in float32.
    assert np.float32(((1 << 24) - 1) / 2.0**24) < 1.0
    assert float(scalar_f32(M64)) < 1.0


# --- next_normal ------------------------------------------------------------------------------------

def scalar_normal(seed: int, n: int, start: int = 0) -> np.ndarray:
    raw = scalar_splitmix64(seed, 2 * (start + n))[2 * start:]
    out = []
    for i in range(n):
        u1 = float(scalar_f32(raw[2 * i]))
        u2 = float(scalar_f32(raw[2 * i + 1]))
        r = math.sqrt(-2.0 * math.log(max(u1, 2.0**-25)))
        out.append(r * math.cos(2.0 * math.pi * u2))
    return np.array(out, dtype=np.float32)


@pytest.mark.parametrize("seed,start", [(0, 0), (17, 0), (17, 33), (M64, 5)])
def test_next_normal_box_muller_matches_scalar(seed, start):
    got = prng.next_normal(seed, 200, start)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, scalar_normal(seed, 200, start), rtol=1e-6, atol=1e-6)


def test_next_normal_start_is_slice():
    full = prng.next_normal(4, 100)
    np.testing.assert_array_equal(prng.next_normal(4, 30, 70), full[70:])


def test_next_normal_moments():
    x = prng.next_normal(2024, 100_000).astype(np.float64)
    assert np.all(np.isfinite(x))
    assert abs(x.mean()) < 0.02
    assert abs(x.var() - 1.0) < 0.03
    z = (x - x.mean()) / x.std()
    assert abs((z**3).mean()) < 0.05
    assert abs((z**4).mean() - 3.0) < 0.15
    assert 0.66 < np.mean(np.abs(x) < 1.0) < 0.70      # 68.27 %


# --- Stream -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,args", [("u64", ()), ("f32", ()), ("normal", ()), ("integers", (1000,))])
@pytest.mark.parametrize("split", [0, 1, 3, 7, 10])
def test_stream_two_chunks_equal_one(method, args, split):
    total = 10
    whole = getattr(prng.Stream(77), method)(*args, total)
    s = prng.Stream(77)
    a = getattr(s, method)(*args, split)
    b = getattr(s, method)(*args, total - split)
    np.testing.assert_array_equal(np.concatenate([a, b]), whole)


def test_stream_u64_matches_scalar_across_calls():
    s = prng.Stream(31337)
    got = np.concatenate([s.u64(4), s.u64(0), s.u64(9)])
    assert [int(x) for x in got] == scalar_splitmix64(31337, 13)
    assert s.position == 13


def test_stream_normal_after_odd_position_does_not_reuse_draws():
    s = prng.Stream(5)
    first = s.u64(1)                                    # consumes output 0
    normals = s.normal(3)                               # must use outputs >= 1, even-aligned
    np.testing.assert_array_equal(normals, prng.next_normal(5, 3, 1))
    assert s.position == 8
    nxt = s.u64(1)
    assert int(nxt[0]) == scalar_splitmix64(5, 9)[8]
    assert int(first[0]) == scalar_splitmix64(5, 1)[0]


@pytest.mark.parametrize("high", [1, 2, 3, 7, 256, 1000, 2**31 + 11, 2**32])
def test_stream_integers_in_range(high):
    vals = prng.Stream(9).integers(high, 5000)
    assert vals.dtype == np.int64
    assert vals.min() >= 0 and vals.max() < high
    if high == 1:
        assert np.all(vals == 0)


def test_stream_integers_matches_scalar_multiply_shift():
    high = 1000
    raw = scalar_splitmix64(11, 200)
    expected = [((u >> 32) * high) >> 32 for u in raw]
    assert prng.Stream(11).integers(high, 200).tolist() == expected


def test_stream_integers_roughly_uniform():
    vals = prng.Stream(123).integers(10, 100_000)
    counts = np.bincount(vals, minlength=10)
    assert counts.size == 10
    assert np.all(np.abs(counts - 10_000) < 500)


def test_stream_uniform_range_and_dtype():
    v = prng.Stream(8).uniform(-1.0, 1.0, 50_000)
    assert v.dtype == np.float32
    assert v.min() >= -1.0 and v.max() < 1.0
    assert abs(float(v.mean())) < 0.02
