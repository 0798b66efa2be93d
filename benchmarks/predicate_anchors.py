"""predicate speed anchors: the kernels, DataFusion, pyarrow and pylance on identical batches, one thread.

For each speed workload (the harness's own batches: P1-P4 over 524,288 rows, P4 over 8,192) and
``--calls`` fresh calls (fresh literals and patched rows, as the harness sends them), the arms run
call by call in a balanced order (common.arm_order):

  baseline    the op the harness times (``target.OPS["speed"]``: poison, one ``filter`` call) with
              the shipped kernels.py (the port of DataFusion's FilterExec loops)
  kernel      the same op with ``--kernel`` (default: the playbook's keep, entry 01)
  datafusion  ``SELECT a, b, x, y, s FROM t WHERE <the predicate as SQL>`` over the batch registered
              in memory (one partition, one thread: ``target_partitions=1``), collected; wall time
              (planning included: a few hundred microseconds)
  pyarrow     ``Table.filter(<the predicate as a pyarrow.compute expression>)`` (Arrow C++; speed
              only: its float comparisons are IEEE, not totalOrder, so NaN rows differ)
  lance       pylance ``dataset.to_table(filter=<SQL>)`` on a Lance dataset of the same columns
              (written once per workload, read from the page cache): the whole scan, decode included

Answers are checked: the kernels' by the harness's own check; DataFusion's and Lance's selected
row count and ``a`` column against the oracle; pyarrow's count is printed beside the oracle's.

Run:  python benchmarks/predicate_anchors.py [--calls 6] [--kernel path/to/kernels.py] [--no-lance]
"""

from __future__ import annotations

from common import ROOT, arm_order, playbook_kernel  # first: one thread and a private numba cache before numpy loads

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from targets.harness.worker import load_kernel
from targets.predicate import inputs, reference, run_experiment, target
from targets.predicate.target import AND, COLUMNS, EQ, GE, GT, IN, IS_NOT_NULL, IS_NULL, LE, LT, NE, NOT

SQL_OPS = {LT: "<", LE: "<=", GT: ">", GE: ">=", EQ: "=", NE: "<>"}


def to_sql(program: np.ndarray, li: np.ndarray, lf: np.ndarray) -> str:
    st: list[str] = []
    for op, col, slot, count in program.tolist():
        c = COLUMNS[col]
        if op in SQL_OPS:
            lit = str(int(li[slot])) if col < 2 else f"CAST('{float(lf[slot])!r}' AS FLOAT)"
            st.append(f"({c} {SQL_OPS[op]} {lit})")
        elif op == IN:
            st.append(f"({c} IN ({', '.join(str(int(v)) for v in li[slot:slot + count])}))")
        elif op in (IS_NULL, IS_NOT_NULL):
            st.append(f"({c} IS {'' if op == IS_NULL else 'NOT '}NULL)")
        elif op == NOT:
            st.append(f"(NOT {st.pop()})")
        else:
            r, lt = st.pop(), st.pop()
            st.append(f"({lt} {'AND' if op == AND else 'OR'} {r})")
    return st[0]


def to_expr(program: np.ndarray, li: np.ndarray, lf: np.ndarray) -> pc.Expression:
    st: list[pc.Expression] = []
    for op, col, slot, count in program.tolist():
        f = pc.field(COLUMNS[col])
        if op in SQL_OPS:
            v = pa.scalar(int(li[slot]), pa.int64()) if col < 2 else pa.scalar(float(lf[slot]), pa.float32())
            st.append({LT: f < v, LE: f <= v, GT: f > v, GE: f >= v, EQ: f == v, NE: f != v}[op])
        elif op == IN:
            st.append(f.isin(pa.array(li[slot:slot + count].astype(np.int64))))
        elif op in (IS_NULL, IS_NOT_NULL):
            st.append(f.is_null() if op == IS_NULL else f.is_valid())
        elif op == NOT:
            st.append(~st.pop())
        else:
            r, lt = st.pop(), st.pop()
            st.append(lt & r if op == AND else lt | r)
    return st[0]


def table(arrays: dict[str, np.ndarray]) -> pa.Table:
    n = arrays["a"].size
    valid = reference.unpack_validity(arrays["validity"], n)
    cols = {name: pa.array(arrays[name], mask=~valid[i]) for i, name in enumerate(COLUMNS[:4])}
    bitmap = pa.py_buffer(np.packbits(valid[4], bitorder="little").tobytes())
    cols["s"] = pa.StringArray.from_buffers(n, pa.py_buffer(arrays["s_offsets"].tobytes()),
                                            pa.py_buffer(arrays["s_bytes"].tobytes()), bitmap)
    return pa.table(cols)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=6)
    ap.add_argument("--kernel", help="default: the playbook's keep (entry 01)")
    ap.add_argument("--no-lance", action="store_true")
    args = ap.parse_args()
    import datafusion
    lance = None if args.no_lance else __import__("lance")
    base_mod = load_kernel(str(ROOT / "targets/predicate/kernels.py"), "pred_base")
    keep = args.kernel or str(playbook_kernel(ROOT / "targets/predicate", "01-wide-string-copies.md",
                                              Path(tempfile.mkdtemp(prefix="pred-keep-")), target.KERNEL_API))
    kern_mod = load_kernel(keep, "pred_kernel")
    print(f"load: {os.getloadavg()}  pyarrow {pa.__version__}  datafusion {datafusion.__version__}"
          f"{'' if lance is None else '  pylance ' + lance.__version__}")
    print(f"{'combo':30s} {'arm':10s} {'median ms':>10s} {'vs baseline':>12s}")
    fx = inputs.speed_fixtures()
    for combo in inputs.SPEED_COMBOS:
        arrays = inputs.speed_arrays(fx, combo)
        work = run_experiment.workload(combo, arrays)
        insts = {"baseline": target.build(base_mod, {}, arrays), "kernel": target.build(kern_mod, {}, arrays)}
        tmp = tempfile.mkdtemp(prefix="pred-lance-")
        calls = work.queries(11, args.calls + 1)
        times: dict[str, list[float]] = {}
        for i, call in enumerate(calls):
            batch = reference.with_patch(arrays, call)
            rows = reference.select(batch, call["lits_i"], call["lits_f"])
            tbl = table(batch)
            sql = to_sql(batch["program"], call["lits_i"], call["lits_f"])
            ctx = datafusion.SessionContext(datafusion.SessionConfig().with_target_partitions(1)
                                            .with_batch_size(8192))
            ctx.register_record_batches("t", [tbl.to_batches()])
            ds = None
            if lance is not None:
                ds = lance.write_dataset(tbl, os.path.join(tmp, f"c{i}"), mode="overwrite")

            check = work.verify(call)                   # the oracle, off the clock

            def run_op(name: str, call: dict[str, np.ndarray] = call) -> Callable[[], None]:
                out = target.OPS["speed"](insts[name], call)

                def after() -> None:
                    problem = check(out)
                    assert problem is None, (name, problem)
                return after

            def run_df() -> Callable[[], None]:
                res = ctx.sql(f"SELECT a, b, x, y, s FROM t WHERE {sql}").to_arrow_table()
                return lambda: _same(res, rows, batch, "datafusion")

            def run_pa() -> Callable[[], None]:
                res = tbl.filter(to_expr(batch["program"], call["lits_i"], call["lits_f"]))
                def after() -> None:
                    if res.num_rows != rows.size:
                        print(f"  pyarrow selected {res.num_rows}, the oracle {rows.size} (IEEE floats)")
                return after

            def run_lance() -> Callable[[], None]:
                assert ds is not None
                res = ds.to_table(filter=sql)
                return lambda: _same(res, rows, batch, "lance")

            arms: dict[str, Callable[[], Callable[[], None]]] = {"baseline": lambda: run_op("baseline"),
                                                     "kernel": lambda: run_op("kernel"),
                                                     "datafusion": run_df, "pyarrow": run_pa}
            if ds is not None:
                arms["lance"] = run_lance
            names = list(arms)
            for j in arm_order(i, len(names)):
                t0 = time.perf_counter()
                after = arms[names[j]]()
                dt = time.perf_counter() - t0
                after()
                if i:                                    # the first call warms every arm up
                    times.setdefault(names[j], []).append(dt)
        base = float(np.median(times["baseline"]))
        for name, ts in times.items():
            med = float(np.median(ts))
            print(f"{combo.shape + '/' + combo.distribution:30s} {name:10s} {med * 1e3:10.3f} {base / med:11.2f}x")
        subprocess.run(["rm", "-rf", tmp], check=False)
    print(f"load: {os.getloadavg()}")


def _same(res: pa.Table, rows: np.ndarray, batch: dict[str, np.ndarray], what: str) -> None:
    a = res.column("a").to_numpy(zero_copy_only=False)
    assert res.num_rows == rows.size, (what, res.num_rows, rows.size)
    valid = reference.unpack_validity(batch["validity"], batch["a"].size)[0][rows]
    assert np.array_equal(np.nan_to_num(a[valid].astype(np.float64)), batch["a"][rows][valid].astype(np.float64)), what


if __name__ == "__main__":
    main()
