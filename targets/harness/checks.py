"""Output checks shared by every target's oracle: exact type, dtype and shape, finiteness,
float closeness under a combined absolute/relative bound or per-element bounds, and top-K with
tie tolerance (one tolerance for all candidates, or one each)."""

from __future__ import annotations

import numpy as np

# The original's bound, plus a small relative term: numpy may legally reorder float sums, and at
# magnitudes of 1e3..1e7 a pure 1e-4 absolute bound rejects reorderings that lose nothing.
# Lossy rewrites (u8 tables; q²+c²−2qc at large magnitudes) miss it by orders of magnitude.
ABS_TOL = 1e-4
PQ_RTOL = 1e-6


def check_array(name: str, got: object, ref: np.ndarray, *, atol: float = 0.0,
                rtol: float = 0.0) -> str | None:
    """None when ``got`` is a plain ndarray equal to ``ref`` (within tolerance for floats)."""
    if type(got) is not np.ndarray:
        return f"{name}: expected a plain numpy.ndarray, got {type(got).__name__}"
    if got.dtype != ref.dtype:
        return f"{name}: dtype {got.dtype} (expected {ref.dtype})"
    if got.shape != ref.shape:
        return f"{name}: shape {got.shape} (expected {ref.shape})"
    if np.issubdtype(ref.dtype, np.floating):
        bad = ~np.isfinite(got)
        if bad.any():
            i = int(np.flatnonzero(bad.ravel())[0])
            return f"{name}: non-finite value {got.ravel()[i]!r} at index {i} ({int(bad.sum())} in all)"
        g64, r64 = got.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
        err = np.abs(g64 - r64)
        limit = atol + rtol * np.abs(r64)
        over = err > limit
        if over.any():
            i = int(np.argmax(err - limit))
            return (f"{name}: {int(over.sum())} of {err.size} values out of tolerance; worst at index {i}: "
                    f"got {g64[i]!r}, reference {r64[i]!r}, |diff| {err[i]:.3g} > {limit[i]:.3g} "
                    f"(atol {atol:g} + rtol {rtol:g}·|ref|)")
        return None
    if not np.array_equal(got, ref):
        i = int(np.flatnonzero((got != ref).ravel())[0])
        return f"{name}: differs at index {i}: got {got.ravel()[i]!r}, reference {ref.ravel()[i]!r}"
    return None


def check_topk(ids: object, scores: object, ref_scores: np.ndarray, k: int, *, atol: float,
               rtol: float, higher_is_better: bool = False) -> str | None:
    """Top-K consistency allowing ties: ids may differ where reference scores tie within tolerance.

    ``ref_scores`` holds the reference score of every candidate. Rules: length ``min(k, n)``,
    unique in-range ids, every id close enough to make the cut, every clear winner present, every
    reported score close to the reference score of its id, and scores ordered best first.
    """
    for label, arr in (("topk ids", ids), ("topk scores", scores)):
        if type(arr) is not np.ndarray or arr.ndim != 1:
            return f"{label}: expected a 1-d numpy.ndarray"
    assert isinstance(ids, np.ndarray) and isinstance(scores, np.ndarray)
    n = ref_scores.size
    want = min(k, n)
    if ids.size != want or scores.size != want:
        return f"topk: {ids.size} ids and {scores.size} scores (expected {want})"
    if not np.issubdtype(ids.dtype, np.integer):
        return f"topk ids: dtype {ids.dtype} is not an integer type"
    if np.any(ids < 0) or np.any(ids >= n):
        return "topk ids: id out of range"
    if np.unique(ids).size != ids.size:
        return "topk ids: duplicate id"
    if not np.all(np.isfinite(scores)):
        return "topk scores: non-finite score"
    ref = ref_scores.astype(np.float64)
    sign = -1.0 if higher_is_better else 1.0          # work in "lower is better"
    ref_low = sign * ref
    kth = np.partition(ref_low, want - 1)[want - 1]
    tol = atol + rtol * abs(kth)
    mine = ref_low[ids]
    if np.any(mine > kth + tol):
        i = int(np.argmax(mine))
        return f"topk: id {int(ids[i])} (reference score {ref[ids[i]]!r}) does not make the top {want}"
    clear = np.flatnonzero(ref_low < kth - tol)
    missing = np.setdiff1d(clear, ids)
    if missing.size:
        return f"topk: id {int(missing[0])} (reference score {ref[missing[0]]!r}) is missing"
    got = scores.astype(np.float64)
    diff = np.abs(got - ref[ids])
    limit = atol + rtol * np.abs(ref[ids])
    if np.any(diff > limit):
        i = int(np.argmax(diff - limit))
        return f"topk: score {got[i]!r} for id {int(ids[i])} differs from reference {ref[ids[i]]!r}"
    low = sign * got
    if np.any(np.diff(low) < -limit[1:]):
        return "topk: scores are not ordered best first"
    return None


def check_within(name: str, got: object, ref: np.ndarray, tol: np.ndarray) -> str | None:
    """None when ``got`` is a plain finite ndarray of ``ref``'s dtype and shape with
    |got − ref| ≤ tol element by element (for summation-aware bounds that differ per element)."""
    if type(got) is not np.ndarray:
        return f"{name}: expected a plain numpy.ndarray, got {type(got).__name__}"
    if got.dtype != ref.dtype or got.shape != ref.shape:
        return f"{name}: dtype {got.dtype} shape {got.shape} (expected {ref.dtype} {ref.shape})"
    bad = ~np.isfinite(got)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        return f"{name}: non-finite value {got[i]!r} at index {i} ({int(bad.sum())} in all)"
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    over = err > tol
    if over.any():
        i = int(np.argmax(err / tol))
        return (f"{name}: {int(over.sum())} of {err.size} values out of tolerance; worst at index {i}: got "
                f"{float(got[i])!r}, reference {float(ref[i])!r}, |diff| {err[i]:.3g} > {tol[i]:.3g} "
                "(summation-aware bound)")
    return None


def check_ranked(ids: object, values: object, ref: np.ndarray, tol: np.ndarray, want: int) -> str | None:
    """The ``want`` smallest of ``ref`` (one reference value per candidate), each value allowed
    ``tol`` of its own: unique in-range ids, each close enough to make the cut, every clear
    winner present (ids may differ where values tie within tolerance), each reported value within
    tolerance of its id's reference, ascending.

    Sound bounds: at least ``want`` references lie at or below the reference cut ``kth``, so the
    kernel's own ``want``-th value is at most ``max(ref + tol)`` over them; a candidate certainly
    below every reference at or beyond the cut must be present.
    """
    for label, arr in (("ids", ids), ("values", values)):
        if type(arr) is not np.ndarray or arr.ndim != 1:
            return f"{label}: expected a 1-d numpy.ndarray, got {type(arr).__name__}"
    assert isinstance(ids, np.ndarray) and isinstance(values, np.ndarray)
    if ids.size != want or values.size != want:
        return f"{ids.size} ids and {values.size} values (expected {want})"
    if not np.issubdtype(ids.dtype, np.integer):
        return f"ids: dtype {ids.dtype} is not an integer type"
    if np.any(ids < 0) or np.any(ids >= ref.size):
        return f"ids: id out of range (0..{ref.size - 1})"
    if np.unique(ids).size != ids.size:
        return "ids: duplicate id"
    if not np.all(np.isfinite(values)):
        return "values: non-finite value"
    r = ref.astype(np.float64)
    kth = np.partition(r, want - 1)[want - 1]
    upto, beyond = r <= kth, r >= kth
    ceiling = np.max(r[upto] + tol[upto])
    floor = np.min(r[beyond] - tol[beyond])
    mine = ids.astype(np.intp)
    late = r[mine] - tol[mine] > ceiling
    if late.any():
        i = int(mine[np.argmax(late)])
        return f"id {i} (reference {r[i]!r}) does not make the top {want}"
    missing = np.setdiff1d(np.flatnonzero(r + tol < floor), mine)
    if missing.size:
        i = int(missing[0])
        return f"id {i} (reference {r[i]!r}) is missing from the top {want}"
    got = values.astype(np.float64)
    off = np.abs(got - r[mine]) > tol[mine]
    if off.any():
        j = int(np.argmax(off))
        return (f"value {float(values[j])!r} for id {int(mine[j])} differs from the reference "
                f"{r[mine[j]]!r} by more than {tol[mine[j]]:.3g}")
    if np.any(np.diff(got) < 0):
        j = int(np.flatnonzero(np.diff(got) < 0)[0])
        return f"values: not ascending at position {j + 1} ({float(values[j])!r} then {float(values[j + 1])!r})"
    return None
