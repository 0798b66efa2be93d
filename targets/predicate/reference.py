"""The oracle: plain numpy, explicit three-valued truth tables, IEEE-754 totalOrder for floats.

Every node of the postfix program evaluates to two bool arrays (value, known); NULL is ``known =
False``. Truth tables (SQL / Arrow Kleene logic): ``a AND b`` is false if either side is a known
false, true if both are known true, else NULL; ``a OR b`` is true if either side is a known true,
false if both are known false, else NULL; ``NOT NULL`` is NULL. A comparison or IN is NULL where its
column is null. ``IS [NOT] NULL`` is never NULL. The filter keeps the rows whose result is a known
true (NULL counts as false, DataFusion's ``prep_null_mask_filter``).

Floats compare by IEEE-754 totalOrder, as arrow-ord does (``f32::total_cmp``): -NaN < -inf < ... <
-0.0 < +0.0 < ... < +inf < +NaN, and a NaN equals a NaN of the same bits. The oracle gets there
through the classic radix-sort key (flip every bit of a negative float, the sign bit of a
positive one; then compare as unsigned), not the kernel's signed-xor trick.
"""

from __future__ import annotations

import numpy as np

from targets.predicate.target import (AND, COL_S, COLUMNS, EQ, GE, GT, IN, IS_NOT_NULL, IS_NULL, LE, LT, NE, NOT,
                                      OR, VALUE_DTYPES, words_for)


def unpack_validity(validity: np.ndarray, n: int) -> np.ndarray:
    """bool [5, N] from the Arrow bitmaps (uint64 words, LSB first)."""
    bits = np.unpackbits(np.ascontiguousarray(validity).view(np.uint8).reshape(validity.shape[0], -1), axis=1,
                         bitorder="little")
    return bits[:, :n].astype(bool)


def pack_validity(valid: np.ndarray) -> np.ndarray:
    """uint64 [C, ceil(N/64)] Arrow bitmaps from bool [C, N]; bits past N are 0."""
    c, n = valid.shape
    packed = np.packbits(valid.astype(np.uint8), axis=1, bitorder="little")
    out = np.zeros((c, words_for(n) * 8), dtype=np.uint8)
    out[:, :packed.shape[1]] = packed
    return out.view(np.uint64).reshape(c, words_for(n))


def total_order_key(values: np.ndarray) -> np.ndarray:
    """uint32 keys whose unsigned order is float32 totalOrder."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    negative = (bits & np.uint32(0x8000_0000)) != 0
    return np.where(negative, ~bits, bits | np.uint32(0x8000_0000))


def _compare(op: int, left: np.ndarray, right: np.ndarray | np.generic) -> np.ndarray:
    if op == LT:
        return left < right
    if op == LE:
        return left <= right
    if op == GT:
        return left > right
    if op == GE:
        return left >= right
    if op == EQ:
        return left == right
    if op == NE:
        return left != right
    raise ValueError(op)


def evaluate(program: np.ndarray, columns: dict[str, np.ndarray], valid: np.ndarray, lits_i: np.ndarray,
             lits_f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value, known) bool [N] of the program's result."""
    stack: list[tuple[np.ndarray, np.ndarray]] = []
    for op, col, slot, count in program.tolist():
        if op in (AND, OR):
            bv, bk = stack.pop()
            av, ak = stack.pop()
            a_true, a_false = ak & av, ak & ~av
            b_true, b_false = bk & bv, bk & ~bv
            if op == AND:
                is_true, is_false = a_true & b_true, a_false | b_false
            else:
                is_true, is_false = a_true | b_true, a_false & b_false
            stack.append((is_true, is_true | is_false))
        elif op == NOT:
            v, k = stack.pop()
            stack.append((k & ~v, k))
        elif op in (IS_NULL, IS_NOT_NULL):
            v = ~valid[col] if op == IS_NULL else valid[col].copy()
            stack.append((v, np.ones_like(v)))
        elif op == IN:
            vals = columns[COLUMNS[col]].astype(np.int64)
            stack.append((np.isin(vals, lits_i[slot:slot + count]) & valid[col], valid[col].copy()))
        else:
            name = COLUMNS[col]
            if VALUE_DTYPES[name].kind == "f":
                left, right = total_order_key(columns[name]), total_order_key(lits_f[slot:slot + 1])[0]
            else:
                left, right = columns[name].astype(np.int64), np.int64(lits_i[slot])
            stack.append((_compare(op, left, right) & valid[col], valid[col].copy()))
    (value, known), = stack
    return value & known, known


def select(arrays: dict[str, np.ndarray], lits_i: np.ndarray, lits_f: np.ndarray) -> np.ndarray:
    """The selected rows (int64 indices, ascending) of a batch under its program."""
    n = arrays["a"].size
    valid = unpack_validity(arrays["validity"], n)
    value, known = evaluate(arrays["program"], arrays, valid, lits_i, lits_f)
    return np.flatnonzero(value & known)


def filtered(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """The selected rows of every column: value arrays, string offsets and bytes, validity words."""
    n = arrays["a"].size
    out = {name: arrays[name][rows] for name in VALUE_DTYPES}
    off = arrays["s_offsets"].astype(np.int64)
    lengths = (off[1:] - off[:-1])[rows]
    new_off = np.zeros(rows.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_off[1:])
    out["s_offsets"] = new_off.astype(np.int32)
    data = arrays["s_bytes"]
    if rows.size:
        starts = off[:-1][rows]
        idx = np.repeat(starts - new_off[:-1], lengths) + np.arange(int(new_off[-1]))
        out["s_bytes"] = data[idx]
    else:
        out["s_bytes"] = np.zeros(0, dtype=np.uint8)
    valid = unpack_validity(arrays["validity"], n)
    out["validity"] = pack_validity(valid[:, rows])
    assert COL_S == 4
    return out


def with_patch(arrays: dict[str, np.ndarray], call: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch as the kernel sees it during ``call`` (its patched rows applied)."""
    out = dict(arrays)
    pos = call["patch_pos"]
    if pos.size:
        for name in VALUE_DTYPES:
            out[name] = arrays[name].copy()
            out[name][pos] = call[f"patch_{name}"]
    return out
