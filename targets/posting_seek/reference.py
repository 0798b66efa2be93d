"""posting-seek's oracle, written to be trusted by reading.

The cursor's rules: it starts fresh (on the first entry); an op of -1 (``RESET``) makes it fresh
again and yields -1; an op d >= 0 seeks to ``base + d`` where base is the doc the previous op
returned (0 when fresh): the result is the first doc at or after that target, or -1 when there is
none, and then the cursor is exhausted and every seek yields -1 until a reset. A seek never moves
the cursor back (the target is never below its current doc), so "the first doc at or after the
target" is a binary search over the whole list.

``simulate`` runs the rules one op at a time. ``expected`` checks a claimed sequence without a
loop: it takes each step's base from the *claimed* previous result and computes what that step
must return. Up to the first step where claim and expectation differ, every claimed result is
right (by induction from the fresh start), so that step's expectation is the true result there
and the sequences agree everywhere only if the claim is exactly right.
"""

from __future__ import annotations

import numpy as np

RESET = -1


def first_at_or_after(doc_ids: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The first doc >= each target (int64), or -1 where there is none. Targets are clipped to
    uint32 (no doc is negative or above 2**31) so the search runs on the list as stored, uncopied."""
    pos = np.searchsorted(doc_ids, np.clip(targets, 0, (1 << 32) - 1).astype(np.uint32), side="left")
    hit = pos < doc_ids.size
    out = np.full(targets.shape, -1, dtype=np.int64)
    out[hit] = doc_ids[pos[hit]]
    return out


def simulate(doc_ids: np.ndarray, ops: np.ndarray) -> np.ndarray:
    """Every op's result, one op at a time (slow: for tests and small sequences)."""
    out = np.empty(ops.size, dtype=np.int64)
    fresh, exhausted, base = True, False, 0
    for i, op in enumerate(ops.tolist()):
        if op == RESET:
            fresh, exhausted, base = True, False, 0
            out[i] = -1
            continue
        if exhausted:
            out[i] = -1
            continue
        doc = int(first_at_or_after(doc_ids, np.array([(0 if fresh else base) + op]))[0])
        fresh = False
        if doc < 0:
            exhausted = True
        base = doc
        out[i] = doc
    return out


def expected(doc_ids: np.ndarray, ops: np.ndarray, claimed: np.ndarray) -> np.ndarray:
    """What each step must return given the claimed result of the step before it."""
    prev = np.concatenate([[-1], claimed[:-1]]).astype(np.int64)
    prev_op = np.concatenate([[RESET], ops[:-1]])
    fresh = (prev == -1) & (prev_op == RESET)             # at the start or right after a reset
    exhausted = (prev == -1) & (prev_op != RESET)         # the step before found nothing
    targets = np.where(fresh, 0, prev) + np.maximum(ops, 0)
    out = first_at_or_after(doc_ids, targets)
    out[(ops == RESET) | exhausted] = -1
    return out
