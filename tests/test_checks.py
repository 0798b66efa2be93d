"""Tests for targets/harness/checks.py."""

from __future__ import annotations

import numpy as np
import pytest

from targets.harness.checks import ABS_TOL, PQ_RTOL, check_array, check_topk


# --- check_array ------------------------------------------------------------------------------------

class SubArray(np.ndarray):
    pass


def test_equal_arrays_pass():
    ref = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert check_array("x", ref.copy(), ref) is None
    assert check_array("x", ref.copy(), ref, atol=ABS_TOL, rtol=PQ_RTOL) is None


@pytest.mark.parametrize("got", [
    np.arange(3.0).view(SubArray),
    np.ma.MaskedArray(np.arange(3.0)),
    [0.0, 1.0, 2.0],
    (0.0, 1.0, 2.0),
    np.float64(1.0),
    None,
])
def test_not_a_plain_ndarray_fails(got):
    msg = check_array("out", got, np.arange(3.0))
    assert msg is not None and "out" in msg and "ndarray" in msg


def test_dtype_mismatch_fails():
    ref = np.zeros(4, dtype=np.float32)
    msg = check_array("t", np.zeros(4, dtype=np.float64), ref, atol=1.0)
    assert msg is not None and "dtype" in msg
    assert check_array("t", np.zeros(4, dtype=np.int32), np.zeros(4, dtype=np.int64)) is not None


@pytest.mark.parametrize("shape", [(6,), (3, 2), (1, 2, 3), (2, 3, 1)])
def test_shape_mismatch_fails(shape):
    ref = np.zeros((2, 3), dtype=np.float32)
    msg = check_array("t", np.zeros(shape, dtype=np.float32), ref, atol=1.0)
    assert msg is not None and "shape" in msg


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_fails_and_names_index(bad):
    ref = np.zeros(10, dtype=np.float32)
    got = ref.copy()
    got[7] = bad
    msg = check_array("d", got, ref, atol=1e30, rtol=1e30)
    assert msg is not None and "index 7" in msg


def test_non_finite_in_reference_position_still_fails():
    # A huge tolerance must not let NaN through.
    ref = np.ones((3, 3), dtype=np.float64)
    got = ref.copy()
    got[2, 1] = np.nan
    msg = check_array("d", got, ref, atol=np.inf)
    assert msg is not None and "index 7" in msg


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_atol_boundary(dtype):
    ref = np.array([0.0, 2.0, -3.0], dtype=dtype)
    got = ref.copy()
    got[1] = 2.5                                   # |diff| = 0.5 exactly
    assert check_array("a", got, ref, atol=0.5) is None
    msg = check_array("a", got, ref, atol=np.nextafter(0.5, 0.0))
    assert msg is not None and "index 1" in msg
    got[1] = np.nextafter(dtype(2.5), dtype(3.0))
    assert check_array("a", got, ref, atol=0.5) is not None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rtol_boundary(dtype):
    ref = np.array([1.0, -4.0, 8.0], dtype=dtype)
    got = ref.copy()
    got[1] = -5.0                                  # |diff| = 1 = 0.25 * |ref|
    assert check_array("r", got, ref, rtol=0.25) is None
    msg = check_array("r", got, ref, rtol=np.nextafter(0.25, 0.0))
    assert msg is not None and "index 1" in msg
    got[1] = np.nextafter(dtype(-5.0), dtype(-6.0))
    assert check_array("r", got, ref, rtol=0.25) is not None


def test_combined_tolerance_is_sum():
    ref = np.array([10.0])
    # limit = 0.5 + 0.05 * 10 = 1.0
    assert check_array("c", np.array([11.0]), ref, atol=0.5, rtol=0.05) is None
    assert check_array("c", np.array([11.0]), ref, atol=0.5, rtol=0.0) is not None
    assert check_array("c", np.array([11.0]), ref, atol=0.0, rtol=0.05) is not None


def test_zero_tolerance_float_is_exact():
    ref = np.array([1.0, 2.0], dtype=np.float32)
    got = ref.copy()
    got[0] = np.nextafter(np.float32(1.0), np.float32(2.0))
    msg = check_array("z", got, ref)
    assert msg is not None and "index 0" in msg


def test_worst_index_is_reported():
    ref = np.zeros(5)
    got = np.array([0.0, 0.2, 0.0, 0.9, 0.3])
    msg = check_array("w", got, ref, atol=0.1)
    assert msg is not None and "index 3" in msg and "3 of 5" in msg


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_])
def test_integer_arrays_are_exact(dtype):
    ref = np.array([0, 1, 1, 0, 1], dtype=dtype)
    assert check_array("i", ref.copy(), ref) is None
    got = ref.copy()
    got[3] = 1
    msg = check_array("i", got, ref, atol=100.0, rtol=100.0)
    assert msg is not None and "index 3" in msg


def test_integer_message_names_flat_index():
    ref = np.arange(12, dtype=np.int64).reshape(3, 4)
    got = ref.copy()
    got[2, 1] += 1
    msg = check_array("ids", got, ref)
    assert msg is not None and "ids" in msg and "index 9" in msg


# --- check_topk -------------------------------------------------------------------------------------

REF = np.array([5.0, 0.5, 3.0, 1.0, 9.0, 2.0, 7.0, 4.0], dtype=np.float32)
# sorted: id1 0.5, id3 1.0, id5 2.0, id2 3.0, id7 4.0, id0 5.0, id6 7.0, id4 9.0


def topk(ids, scores, ref=REF, k=3, atol=ABS_TOL, rtol=PQ_RTOL, **kw):
    return check_topk(np.asarray(ids, dtype=np.int64) if not isinstance(ids, np.ndarray) else ids,
                      np.asarray(scores, dtype=np.float32) if not isinstance(scores, np.ndarray) else scores,
                      ref, k, atol=atol, rtol=rtol, **kw)


def test_topk_correct_passes():
    assert topk([1, 3, 5], [0.5, 1.0, 2.0]) is None
    assert topk([1], [0.5], k=1) is None
    assert topk(np.argsort(REF), np.sort(REF), k=8) is None


def test_topk_k_larger_than_n_wants_all():
    assert topk(np.argsort(REF), np.sort(REF), k=20) is None
    assert topk([1, 3, 5], [0.5, 1.0, 2.0], k=20) is not None


@pytest.mark.parametrize("third", [5, 6])
def test_topk_tie_at_kth_rank_accepts_either(third):
    ref = np.array([9.0, 0.5, 8.0, 1.0, 7.0, 2.0, 2.0, 6.0], dtype=np.float32)
    assert topk([1, 3, third], [0.5, 1.0, 2.0], ref=ref) is None


def test_topk_near_tie_within_tolerance_accepted():
    ref = np.array([0.5, 1.0, 100.0, 100.00005], dtype=np.float32)
    assert topk([0, 1, 3], [0.5, 1.0, 100.00005], ref=ref, atol=1e-4) is None
    assert topk([0, 1, 3], [0.5, 1.0, 100.00005], ref=ref, atol=1e-6, rtol=0.0) is not None


def test_topk_missing_clear_winner_fails():
    # id 1 (best) is left out; id 2 (4th best) takes its place.
    msg = topk([3, 5, 2], [1.0, 2.0, 3.0])
    assert msg is not None and "id" in msg


def test_topk_tie_does_not_excuse_missing_clear_winner():
    ref = np.array([9.0, 0.5, 8.0, 1.0, 7.0, 2.0, 2.0, 6.0], dtype=np.float32)
    assert topk([5, 6, 3], [2.0, 2.0, 1.0], ref=ref) is not None


def test_topk_id_not_making_cut_fails():
    msg = topk([1, 3, 4], [0.5, 1.0, 9.0])
    assert msg is not None and "4" in msg


def test_topk_duplicates_fail():
    msg = topk([1, 1, 3], [0.5, 0.5, 1.0])
    assert msg is not None and "duplicate" in msg


@pytest.mark.parametrize("bad", [-1, 8, 1000])
def test_topk_out_of_range_fails(bad):
    msg = topk([1, 3, bad], [0.5, 1.0, 2.0])
    assert msg is not None and "range" in msg


@pytest.mark.parametrize("ids,scores", [([1, 3], [0.5, 1.0]), ([1, 3, 5, 2], [0.5, 1.0, 2.0, 3.0]),
                                        ([1, 3, 5], [0.5, 1.0]), ([], [])])
def test_topk_wrong_length_fails(ids, scores):
    assert topk(ids, scores) is not None


def test_topk_unsorted_scores_fail():
    msg = topk([3, 1, 5], [1.0, 0.5, 2.0])
    assert msg is not None and "order" in msg


def test_topk_reported_score_differs_fails():
    msg = topk([1, 3, 5], [0.5, 1.0, 2.01])
    assert msg is not None and "differs" in msg
    # Tolerance boundary: a difference inside atol is fine.
    assert topk([1, 3, 5], [0.5, 1.0, 2.0 + 5e-5]) is None


def test_topk_scores_swapped_between_ids_fail():
    # Sorted scores and the right set of ids, but the scores are attached to the wrong ids.
    ref = np.array([1.0, 2.0, 3.0, 10.0], dtype=np.float32)
    assert topk([1, 0, 2], [1.0, 2.0, 3.0], ref=ref) is not None


def test_topk_nan_score_fails():
    msg = topk([1, 3, 5], [0.5, np.nan, 2.0])
    assert msg is not None and "non-finite" in msg
    assert topk([1, 3, 5], [0.5, 1.0, np.inf]) is not None


def test_topk_float_ids_fail():
    assert topk(np.array([1.0, 3.0, 5.0]), [0.5, 1.0, 2.0]) is not None


@pytest.mark.parametrize("ids,scores", [([1, 3, 5], [[0.5, 1.0, 2.0]]), ([[1, 3, 5]], [0.5, 1.0, 2.0])])
def test_topk_not_1d_fails(ids, scores):
    assert topk(np.array(ids), np.array(scores, dtype=np.float32)) is not None


def test_topk_lists_fail():
    assert check_topk([1, 3, 5], np.array([0.5, 1.0, 2.0]), REF, 3, atol=1e-4, rtol=0) is not None


def test_topk_higher_is_better():
    # best: id4 9.0, id6 7.0, id0 5.0
    assert topk([4, 6, 0], [9.0, 7.0, 5.0], higher_is_better=True) is None
    assert topk([4, 6, 0], [9.0, 7.0, 5.0]) is not None               # wrong direction
    assert topk([1, 3, 5], [0.5, 1.0, 2.0], higher_is_better=True) is not None
    assert topk([0, 6, 4], [5.0, 7.0, 9.0], higher_is_better=True) is not None   # ascending order
    assert topk([4, 6, 7], [9.0, 7.0, 4.0], higher_is_better=True) is not None   # id 7 misses the cut


def test_topk_higher_is_better_tie():
    ref = np.array([9.0, 3.0, 3.0, 0.0], dtype=np.float32)
    assert topk([0, 1], [9.0, 3.0], ref=ref, k=2, higher_is_better=True) is None
    assert topk([0, 2], [9.0, 3.0], ref=ref, k=2, higher_is_better=True) is None
    assert topk([1, 2], [3.0, 3.0], ref=ref, k=2, higher_is_better=True) is not None
