"""take speed anchors: kernels, pyarrow, numpy and Lance itself on identical data, one thread.

The harness's own speed dataset (10^6 rows over 8 fragments: int64, FixedSizeList<f32> of 8, utf8
of 0-40 bytes, 1 % deleted rows) and its request distributions; per combo ``--calls`` fresh
requests, the arms interleaved call by call in a balanced order (common.arm_order):

  baseline   the op the harness times (``target.OPS["speed"]``: output allocation, poison fill, one
             ``take`` call, the keyed digest) with the shipped kernels.py (the port of Lance's loop)
  kernel     the same op with ``--kernel`` (default: the playbook's first keep)
  arrow      numpy plan (``np.unique(return_inverse=True)``, the returned rows, the kept requests)
             then ``pyarrow.compute.take`` of each column (Arrow C++: int64, FixedSizeList, utf8)
  numpy      the same plan, then ``np.take`` per column and the strings by cumsum/repeat (the oracle)

Every arm's answer is checked: the kernels' digests by the harness's own check, arrow's and
numpy's columns against the oracle's.

Lance itself (``--lance``, the default): the same columns written as a Lance dataset of 8
fragments of the same sizes (one append per fragment; no deletions: Lance returns the ~1 % rows
the harness treats as deleted, a 1 % larger answer), then ``ds._take_rows(addresses)`` (row
addresses, the same fragment ids and offsets) timed by wall clock, one CPU thread, files in the
page cache: end to end (planning, the per-fragment reads and decode of the three columns, the
remap and take), at M = 25k, 50k and 100k random requests with ~10 % duplicates; the slope of the
median over M is Lance's cost per requested row, set beside the kernels' slopes at the same sizes.

Run:  python benchmarks/take_anchors.py [--calls 6] [--kernel path/to/kernels.py] [--no-lance]
"""

from __future__ import annotations

from common import ROOT, arm_order, playbook_kernel  # first: one thread and a private numba cache before numpy loads

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from targets.harness.prng import mix_seeds
from targets.harness.worker import load_kernel
from targets.take import inputs, reference, run_experiment, target

FOLDER = ROOT / "targets" / "take"
SLOPE_SIZES = (25_000, 50_000, 100_000)


def numpy_plan(addrs: np.ndarray, ds: dict[str, np.ndarray]) -> np.ndarray:
    """The dataset rows in request order (missing dropped): np.unique's inverse, no Python loop."""
    uniq, inverse = np.unique(addrs, return_inverse=True)
    rows = reference.row_of(uniq, ds["frag_ids"], ds["frag_rows"], ds["deleted"])[inverse]
    return rows[rows >= 0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=6)
    ap.add_argument("--kernel", type=Path)
    ap.add_argument("--no-lance", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="take-anchors-"))
    ds = run_experiment.speed_dataset()
    dim = int(ds["vec"].shape[1])
    base = target.build(load_kernel(str(FOLDER / "kernels.py"), "take_baseline"), {}, ds)
    keep = args.kernel or playbook_kernel(FOLDER, "01-row-table-and-slice-copies.md", tmp, target.KERNEL_API)
    kern = target.build(load_kernel(str(keep), "take_kernel"), {}, ds)
    table = pa.table({"i64": ds["i64"], "vec": pa.FixedSizeListArray.from_arrays(pa.array(ds["vec"].reshape(-1)), dim),
                      "str": pa.Array.from_buffers(pa.string(), ds["deleted"].size,
                                                   [None, pa.py_buffer(ds["str_offsets"]), pa.py_buffer(ds["str_bytes"])])})

    columns = {name: table.column(name).combine_chunks() for name in ("i64", "vec", "str")}

    def arrow(addrs: np.ndarray) -> dict[str, Any]:
        idx = pa.array(numpy_plan(addrs, ds))
        return {name: pc.take(columns[name], idx) for name in ("i64", "vec", "str")}

    def numpy_arm(addrs: np.ndarray) -> dict[str, Any]:
        rows = numpy_plan(addrs, ds)
        off, data = reference.gather_strings(rows, ds["str_offsets"], ds["str_bytes"])
        return {"i64": np.take(ds["i64"], rows), "vec": np.take(ds["vec"], rows, axis=0), "str_offsets": off,
                "str_bytes": data}

    def op(inst: Any) -> Callable[[dict[str, np.ndarray]], Any]:
        return lambda call: target.OPS["speed"](inst, call)

    print(f"load: {os.getloadavg()}")
    print(f"{'combo':24s} {'baseline ms':>12s} {'kernel':>8s} {'arrow':>8s} {'numpy':>8s}   (ratios: baseline time / arm time)")
    for shape, m, dist in inputs.SPEED_COMBOS + inputs.ANCHOR_ONLY_COMBOS:
        w = run_experiment.workload(shape, m, dist, ds)
        calls = w.queries(mix_seeds(7, "anchors"), args.calls)
        arms: list[Callable[[dict[str, np.ndarray]], Any]] = [op(base), op(kern), lambda c: arrow(c["row_addrs"]),
                                                              lambda c: numpy_arm(c["row_addrs"])]
        times = np.zeros((len(calls), len(arms)))
        for i, call in enumerate(calls):
            want = reference.take(call["row_addrs"], ds)
            check = w.verify(call)
            for a in arm_order(i, len(arms)):
                gc.collect()
                t = time.perf_counter()
                out = arms[a](call)
                times[i, a] = time.perf_counter() - t
                if a < 2:
                    assert check(out) is None, (a, check(out))
                elif a == 2:
                    assert np.array_equal(out["i64"].to_numpy(), want["i64"])
                    assert np.array_equal(out["vec"].flatten().to_numpy().reshape(-1, dim), want["vec"])
                    assert out["str"].to_pylist() == [bytes(want["str_bytes"][x:y]).decode() for x, y in
                                                      zip(want["str_offsets"][:-1], want["str_offsets"][1:])]
                else:
                    for name in out:
                        assert np.array_equal(out[name], want[name]), name
        med = np.median(times, axis=0)
        print(f"{shape + '/' + dist:24s} {med[0] * 1e3:12.2f} " + " ".join(f"{med[0] / x:8.2f}" for x in med[1:]))
    if not args.no_lance:
        lance_slopes(ds, base, kern, tmp)
    print(f"load: {os.getloadavg()}")


def lance_slopes(ds: dict[str, np.ndarray], base: Any, kern: Any, tmp: Path) -> None:
    import lance
    dim = int(ds["vec"].shape[1])
    uri = str(tmp / "take.lance")
    rows = ds["frag_rows"]
    for k in range(ds["frag_ids"].size):
        lo, hi = int(rows[k]), int(rows[k + 1])
        off = ds["str_offsets"][lo:hi + 1]
        t = pa.table({"i64": ds["i64"][lo:hi],
                      "vec": pa.FixedSizeListArray.from_arrays(pa.array(ds["vec"][lo:hi].reshape(-1)), dim),
                      "str": pa.Array.from_buffers(pa.string(), hi - lo, [None, pa.py_buffer(off - off[0]),
                                                   pa.py_buffer(ds["str_bytes"][int(off[0]):int(off[-1])])])})
        lance.write_dataset(t, uri, mode="append" if k else "create", max_rows_per_file=1 << 30)
    lds = lance.dataset(uri)
    assert [f.fragment_id for f in lds.get_fragments()] == list(range(ds["frag_ids"].size))
    live = {**ds, "deleted": np.zeros_like(ds["deleted"])}
    med: dict[str, list[float]] = {"lance": [], "baseline": [], "kernel": []}
    for m in SLOPE_SIZES:
        reqs = [inputs.request("random_dup", m, ds, mix_seeds(9, m, i)) for i in range(7)]
        calls = [run_experiment.call(r, ds) | {"key": np.array([1, 2], np.uint64)} for r in reqs]
        lists = [r.tolist() for r in reqs]
        got = lds._take_rows(lists[0], columns=["i64", "vec", "str"])          # also the warm-up
        for inst in (base, kern):
            target.OPS["speed"](inst, calls[0])
        want = reference.take(reqs[0], live)
        assert np.array_equal(got.column("i64").to_numpy(), want["i64"])
        t_arm: dict[str, list[float]] = {arm: [] for arm in med}
        for i in range(len(reqs)):
            for a in arm_order(i, 3):
                t = time.perf_counter()
                if a == 0:
                    lds._take_rows(lists[i], columns=["i64", "vec", "str"])
                else:
                    target.OPS["speed"](base if a == 1 else kern, calls[i])
                t_arm[("lance", "baseline", "kernel")[a]].append(time.perf_counter() - t)
        for arm in med:
            med[arm].append(float(np.median(np.array(t_arm[arm]))))
    print("Lance end to end (ds._take_rows, random ~10 % duplicates), median ms at M =", SLOPE_SIZES)
    for arm, v in med.items():
        slope, icpt = np.polyfit(np.array(SLOPE_SIZES, float), np.array(v), 1)
        print(f"  {arm:9s} " + " ".join(f"{x * 1e3:8.2f}" for x in v) + f"   slope {slope * 1e9:7.1f} ns/row, intercept {icpt * 1e3:6.2f} ms")


if __name__ == "__main__":
    main()
