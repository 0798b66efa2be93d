"""predicate inputs: batches, the programs P1-P4, the correctness battery and the speed workloads,
all from seeded SplitMix64.

A batch (target.py) has five columns: ``a`` int64, ``b`` int32 low-cardinality codes, ``x``/``y``
float32, ``s`` utf8 strings, each with an Arrow validity bitmap. The programs (research §2.10):

* P1 ``a >= l0 AND a < l1`` (an int64 range; the speed literals give 1 % or 50 % selectivity);
* P2 ``b IN (l0..l4)`` (5 values over 100 codes: ~5 %);
* P3 ``x >= f0 AND x < f1 AND y IS NOT NULL AND y > f2`` (a float32 conjunction with IS NOT NULL);
* P4 ``(a < l0 OR NOT b = l1) AND NOT x > f0`` (an OR/NOT mix over 10 %-null columns).

Battery (each case named, several calls each, a patched call among them): ints, int64 extremes,
IN lists with duplicates and absent values, floats with NaN (``>``, ``=``, ``!=`` against finite
and NaN literals; -NaN too), -0.0/+0.0, ±inf, strings (empty, multi-byte UTF-8, the poison byte
inside a character), an all-null column, all-valid, an empty batch, one row, selectivity 0, 100 %
(the copy-all path) and ~90 % (the slices path), Kleene AND/OR/NOT truth tables over every
(true, false, null) pair, a partial last bitmap word; plus one fresh case from the trial seed.
Speed: batches of 524,288 rows (one per combo) and one of 8,192 rows (DataFusion's batch size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from targets.harness import cache
from targets.harness.prng import CORRECTNESS_SEED, SPEED_SEED, Stream, mix_seeds
from targets.predicate import reference
from targets.predicate.target import (AND, COL_A, COL_B, COL_S, COL_X, COL_Y, EQ, GE, GT, IN, IS_NOT_NULL, IS_NULL,
                                      LT, NE, NOT, OR)

_SOURCES = (Path(__file__), Path(__file__).with_name("reference.py"), Path(__file__).with_name("target.py"),
            Path(__file__).parent.parent / "harness" / "prng.py")

A_RANGE = 1 << 40
CODES = 100
SPEED_ROWS = 1 << 19
BATCH_ROWS = 8192
PROBES = 2048                                     # sample positions per buffer per timed call
SPEED_PATCH_ROWS = 16


def _prog(*rows: tuple[int, ...]) -> np.ndarray:
    return np.array([(list(r) + [0, 0, 0])[:4] for r in rows], dtype=np.int32)


PROGRAMS = {
    "p1": _prog((GE, COL_A, 0), (LT, COL_A, 1), (AND,)),
    "p2": _prog((IN, COL_B, 0, 5)),
    "p3": _prog((GE, COL_X, 0), (LT, COL_X, 1), (AND,), (IS_NOT_NULL, COL_Y), (AND,), (GT, COL_Y, 2), (AND,)),
    "p4": _prog((LT, COL_A, 0), (EQ, COL_B, 1), (NOT,), (OR,), (GT, COL_X, 0), (NOT,), (AND,)),
}


# --- batches ---------------------------------------------------------------------------------------

def strings(stream: Stream, n: int, max_len: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """``n`` ASCII strings of 0..max_len letters: (int32 offsets [n+1], bytes)."""
    lengths = stream.integers(max_len + 1, n)
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    data = (97 + stream.integers(26, int(off[-1]))).astype(np.uint8)
    return off.astype(np.int32), data


def strings_from(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    raw = [v.encode("utf-8") for v in values]
    off = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in raw], out=off[1:])
    return off.astype(np.int32), np.frombuffer(b"".join(raw), dtype=np.uint8).copy()


def make_batch(n: int, seed: int, null_rate: float = 0.1, sorted_a: bool = False) -> dict[str, np.ndarray]:
    """A batch of ``n`` rows: a uniform in [0, 2**40), b codes in [0, 100), x/y uniform [0, 1),
    ASCII strings; every column null at ``null_rate``."""
    st = Stream(mix_seeds(seed, "batch", n))
    a = (st.u64(n) >> np.uint64(24)).astype(np.int64)
    if sorted_a:
        a.sort()
    off, data = strings(st, n)
    valid = st.f32(5 * n).reshape(5, n) >= np.float32(null_rate)
    return {"a": a, "b": st.integers(CODES, n).astype(np.int32), "x": st.f32(n), "y": st.f32(n),
            "s_offsets": off, "s_bytes": data, "validity": reference.pack_validity(valid)}


def set_valid(batch: dict[str, np.ndarray], col: int, valid: np.ndarray) -> None:
    v = reference.unpack_validity(batch["validity"], batch["a"].size)
    v[col] = valid
    batch["validity"] = reference.pack_validity(v)


# --- calls -----------------------------------------------------------------------------------------

def call(lits_i: Any = (), lits_f: Any = (),
         patch: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {"lits_i": np.array(lits_i, dtype=np.int64).reshape(-1), "lits_f": np.array(lits_f, dtype=np.float32).reshape(-1)}
    out.update(patch if patch is not None else no_patch())
    return out


def no_patch() -> dict[str, np.ndarray]:
    return {"patch_pos": np.zeros(0, dtype=np.int64), "patch_a": np.zeros(0, dtype=np.int64),
            "patch_b": np.zeros(0, dtype=np.int32), "patch_x": np.zeros(0, dtype=np.float32),
            "patch_y": np.zeros(0, dtype=np.float32)}


def patch(n: int, seed: int, rows: int) -> dict[str, np.ndarray]:
    """Fresh values for ``rows`` distinct rows of a, b, x, y (distributed as the batch)."""
    if n == 0 or rows == 0:
        return no_patch()
    st = Stream(seed)
    pos = np.unique(st.integers(n, rows))
    k = pos.size
    return {"patch_pos": pos, "patch_a": (st.u64(k) >> np.uint64(24)).astype(np.int64),
            "patch_b": st.integers(CODES, k).astype(np.int32), "patch_x": st.f32(k), "patch_y": st.f32(k)}


def literals(prog: str, seed: int, selectivity: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Fresh literals for a P1-P4 program over a ``make_batch`` batch."""
    st = Stream(seed)
    if prog == "p1":
        width = int(selectivity * A_RANGE)
        lo = int(st.u64(1)[0] >> np.uint64(24)) % max(1, A_RANGE - width + 1)
        return np.array([lo, lo + width], dtype=np.int64), np.zeros(0, dtype=np.float32)
    if prog == "p2":
        codes = np.sort(st.u64(CODES).argsort()[:5])     # 5 distinct codes
        return codes.astype(np.int64), np.zeros(0, dtype=np.float32)
    if prog == "p3":
        lo, y = st.uniform(0.0, 0.5, 2)
        return np.zeros(0, dtype=np.int64), np.array([lo, lo + np.float32(0.5), y], dtype=np.float32)
    if prog == "p4":
        q = int(st.integers(A_RANGE >> 20, 1)[0]) << 20
        return (np.array([q // 3, int(st.integers(CODES, 1)[0])], dtype=np.int64),
                st.uniform(0.2, 0.8, 1).astype(np.float32))
    raise ValueError(prog)


# --- the battery -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatteryCase:
    name: str
    arrays: dict[str, np.ndarray]                  # the batch and its program
    calls: list[dict[str, np.ndarray]]


NAN = np.float32(np.nan)
NEG_NAN = np.array([0xFFC00000], dtype=np.uint32).view(np.float32)[0]
INF = np.float32(np.inf)


def _with(batch: dict[str, np.ndarray], program: np.ndarray) -> dict[str, np.ndarray]:
    return {**batch, "program": program}


def _floats_batch(seed: int, special: list[float], n: int = 300) -> dict[str, np.ndarray]:
    b = make_batch(n, seed, 0.1)
    st = Stream(mix_seeds(seed, "special"))
    vals = np.array(special, dtype=np.float32)
    b["x"] = np.where(st.f32(n) < 0.5, vals[st.integers(vals.size, n)], b["x"]).astype(np.float32)
    b["y"] = np.where(st.f32(n) < 0.5, vals[st.integers(vals.size, n)], b["y"]).astype(np.float32)
    return b


def _kleene_batch(seed: int) -> dict[str, np.ndarray]:
    """Every (left, right) pair of (true, false, null) for left = ``a < 10``, right = ``b = 3``,
    repeated and shuffled."""
    pairs = [(la, lb) for la in (5, 20, None) for lb in (3, 4, None)] * 15
    order = Stream(mix_seeds(seed, "kleene")).u64(len(pairs)).argsort()
    pairs = [pairs[i] for i in order]
    n = len(pairs)
    b = make_batch(n, seed, 0.0)
    b["a"] = np.array([p[0] or 0 for p in pairs], dtype=np.int64)
    b["b"] = np.array([p[1] or 0 for p in pairs], dtype=np.int32)
    set_valid(b, COL_A, np.array([p[0] is not None for p in pairs]))
    set_valid(b, COL_B, np.array([p[1] is not None for p in pairs]))
    return b


def battery(seed: int = CORRECTNESS_SEED) -> list[BatteryCase]:
    s = lambda *parts: mix_seeds(seed, *parts)            # noqa: E731
    cases: list[BatteryCase] = []

    def add(name: str, batch: dict[str, np.ndarray], program: np.ndarray, calls: list[dict[str, np.ndarray]]) -> None:
        n = batch["a"].size
        calls = calls + [{**calls[0], **patch(n, s(name, "patch"), 8)}]
        cases.append(BatteryCase(name, _with(batch, program), calls))

    p1, p2, p3, p4 = (PROGRAMS[k] for k in ("p1", "p2", "p3", "p4"))
    b = make_batch(2000, s("ints"), 0.1)
    add("ints_range", b, p1, [call(literals("p1", s("i1"), 0.01)[0]), call(literals("p1", s("i2"), 0.5)[0])])
    b = make_batch(2000, s("in"), 0.1)
    add("ints_in_list", b, p2, [call([3, 3, 99, -1, 1 << 40]), call(literals("p2", s("in2"))[0])])
    b = make_batch(500, s("ext"), 0.05)
    imin, imax = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    b["a"][::7] = imin
    b["a"][3::7] = imax
    add("int64_extremes", b, p1, [call([imin, imax]), call([imin, imin + 1]), call([imax, imax])])
    specials = [np.nan, NEG_NAN, 1.0, -1.0, 0.0, -0.0, np.inf, -np.inf, 3.4e38, 1e-45]
    fb = _floats_batch(s("nan"), specials)
    add("floats_nan_gt", fb, _prog((GT, COL_X, 0)), [call([], [1.0]), call([], [NAN]), call([], [-INF]), call([], [NEG_NAN])])
    add("floats_nan_eq", fb, _prog((EQ, COL_X, 0)), [call([], [NAN]), call([], [0.0]), call([], [NEG_NAN])])
    add("floats_nan_ne_le", fb, _prog((NE, COL_X, 0), (GE, COL_Y, 1), (OR,)),
        [call([], [NAN, NAN]), call([], [1.0, INF])])
    add("floats_lt_nan", fb, _prog((LT, COL_X, 0), (GE, COL_Y, 0), (AND,)), [call([], [NAN]), call([], [-0.0])])
    zb = _floats_batch(s("zero"), [0.0, -0.0, 1e-45, -1e-45])
    add("signed_zero", zb, _prog((LT, COL_X, 0), (EQ, COL_Y, 1), (OR,)),
        [call([], [0.0, -0.0]), call([], [-0.0, 0.0]), call([], [1e-45, -1e-45])])
    ib = _floats_batch(s("inf"), [np.inf, -np.inf, 3.4e38, -3.4e38, 0.0])
    add("infinities", ib, p3, [call([], [-INF, INF, -INF]), call([], [INF, INF, 3.4e38]), call([], [-3.4e38, 3.4e38, 0.0])])
    words = ["", "a", "é", "中文", "😀x", "¥", "", "naïve", "Ω≈ç√", "plain-ascii-longer-string"]
    sb = make_batch(400, s("str"), 0.1)
    st = Stream(s("strpick"))
    sb["s_offsets"], sb["s_bytes"] = strings_from([words[i] for i in st.integers(len(words), 400)])
    add("strings_utf8", sb, _prog((IS_NOT_NULL, COL_S), (LT, COL_A, 0), (AND,)),
        [call([A_RANGE // 2]), call([A_RANGE]), call([0])])
    add("strings_is_null", sb, _prog((IS_NULL, COL_S),), [call()])
    nb = make_batch(700, s("allnull"), 0.1)
    set_valid(nb, COL_X, np.zeros(700, dtype=bool))
    add("all_null_column", nb, _prog((IS_NULL, COL_X), (LT, COL_A, 0), (AND,), (GT, COL_X, 0), (OR,)),
        [call([A_RANGE // 3], [0.5]), call([0], [-INF])])
    add("all_null_p3", nb, p3, [call([], [-INF, INF, -INF])])
    vb = make_batch(1500, s("valid"), 0.0)
    add("all_valid", vb, p4, [call(*literals("p4", s("v1"))), call(*literals("p4", s("v2")))])
    add("empty_batch", make_batch(0, s("empty")), p1, [call([0, A_RANGE])])
    ob = make_batch(1, s("one"), 0.0)
    add("one_row", ob, p4, [call([A_RANGE, 0], [2.0]), call([0, int(ob["b"][0])], [-1.0])])
    sel = make_batch(1000, s("sel"), 0.1)
    add("select_none", sel, p1, [call([A_RANGE, A_RANGE + 5]), call([10, 5])])
    add("select_all", make_batch(1000, s("all"), 0.0), p1, [call([0, A_RANGE])])
    add("select_most", sel, p1, [call([0, A_RANGE]), call([A_RANGE // 20, A_RANGE])])
    kb = _kleene_batch(s("kleene"))
    for name, prog in (("kleene_and", _prog((LT, COL_A, 0), (EQ, COL_B, 1), (AND,))),
                       ("kleene_or", _prog((LT, COL_A, 0), (EQ, COL_B, 1), (OR,))),
                       ("kleene_not_and", _prog((LT, COL_A, 0), (EQ, COL_B, 1), (AND,), (NOT,))),
                       ("kleene_not_or", _prog((LT, COL_A, 0), (NOT,), (EQ, COL_B, 1), (NOT,), (OR,), (NOT,)))):
        add(name, kb, prog, [call([10, 3])])
    add("or_not_nulls10", make_batch(5000, s("p4"), 0.1), p4, [call(*literals("p4", s("p4a"))), call(*literals("p4", s("p4b")))])
    add("floats_and_not_null", make_batch(3000, s("p3"), 0.1), p3, [call(*literals("p3", s("p3a"))), call(*literals("p3", s("p3b")))])
    add("partial_word", make_batch(64 * 3 + 17, s("pw"), 0.1), p4, [call(*literals("p4", s("pwa")))])
    add("sorted_clustered", make_batch(4000, s("sorted"), 0.02, sorted_a=True), p1,
        [call(literals("p1", s("so1"), 0.3)[0])])
    ib = make_batch(800, s("ina"), 0.1)
    ib["a"][::3] = (np.arange(ib["a"][::3].size) % 5).astype(np.int64)
    add("in_on_int64", ib, _prog((IN, COL_A, 0, 3), (NE, COL_B, 3), (AND,)),
        [call([1, 2, 3, 3])])
    return cases


BATTERY_NAMES = tuple(c.name for c in battery())


def fresh_case(seed: int) -> BatteryCase:
    """A random batch (0-4,000 rows, any null rate) and one of P1-P4 with fresh literals."""
    st = Stream(mix_seeds(seed, "fresh"))
    n = int(st.integers(4001, 1)[0])
    prog = ("p1", "p2", "p3", "p4")[int(st.integers(4, 1)[0])]
    batch = make_batch(n, mix_seeds(seed, "fresh-batch"), float(st.f32(1)[0]) * 0.5)
    calls = [call(*literals(prog, mix_seeds(seed, "lits", i), float(st.f32(1)[0]))) for i in range(2)]
    calls.append({**calls[0], **patch(n, mix_seeds(seed, "fresh-patch"), 16)})
    return BatteryCase(f"fresh/{prog}", _with(batch, PROGRAMS[prog]), calls)


# --- speed -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpeedCombo:
    shape: str                                    # program and selectivity
    distribution: str
    prog: str
    selectivity: float
    rows: int
    null_rate: float


SPEED_COMBOS = (
    SpeedCombo("p1-range-sel1", "uniform", "p1", 0.01, SPEED_ROWS, 0.01),
    SpeedCombo("p1-range-sel50", "uniform", "p1", 0.5, SPEED_ROWS, 0.01),
    SpeedCombo("p2-in5", "codes100", "p2", 0.0, SPEED_ROWS, 0.01),
    SpeedCombo("p3-float-and", "nulls5", "p3", 0.0, SPEED_ROWS, 0.05),
    SpeedCombo("p4-or-not", "nulls10", "p4", 0.0, SPEED_ROWS, 0.1),
    SpeedCombo("p4-or-not-8192", "nulls10", "p4", 0.0, BATCH_ROWS, 0.1),
)


def speed_batch(combo: SpeedCombo) -> dict[str, np.ndarray]:
    return _with(make_batch(combo.rows, mix_seeds(SPEED_SEED, combo.shape), combo.null_rate), PROGRAMS[combo.prog])


def speed_calls(combo: SpeedCombo, seed: int, count: int) -> list[dict[str, np.ndarray]]:
    out = []
    for i in range(count):
        cs = mix_seeds(seed, "speed", combo.shape, combo.distribution, combo.rows, i)
        c = call(*literals(combo.prog, mix_seeds(cs, "lits"), combo.selectivity),
                 patch=patch(combo.rows, mix_seeds(cs, "patch"), SPEED_PATCH_ROWS))
        c["probe"] = (Stream(mix_seeds(cs, "probe")).u64(PROBES) >> np.uint64(32)).astype(np.uint32)
        out.append(c)
    return out


def _all_speed() -> dict[str, np.ndarray]:
    out = {}
    for combo in SPEED_COMBOS:
        for k, v in speed_batch(combo).items():
            out[f"{combo.shape}/{k}"] = v
    return out


def speed_fixtures() -> dict[str, np.ndarray]:
    key = cache.fixture_key(*_SOURCES, SPEED_SEED, np.__version__)
    return cache.cached_arrays("predicate", key, _all_speed)


def speed_arrays(fx: dict[str, np.ndarray], combo: SpeedCombo) -> dict[str, np.ndarray]:
    prefix = f"{combo.shape}/"
    return {k[len(prefix):]: v for k, v in fx.items() if k.startswith(prefix)}
