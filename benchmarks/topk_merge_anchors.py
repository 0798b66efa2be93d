"""topk-merge speed anchors: the baseline kernel, a keep and the libraries, on identical data, one thread.

For each of the 16 speed workloads and ``--calls`` fresh calls (a call is a batch of queries, as the
trial times it), times every arm over the same queries, interleaved call by call (in a balanced
order: common.arm_order), and checks every arm's answers against the oracle bit for bit:

  baseline   ``target.OPS["speed"]`` on ``--kernel`` (default: the shipped compiled port of
             DataFusion's TopK), in process
  keep       the same on ``--keep`` (default: the offline playbook's keep, 01, applied to it)
  df_topk    DataFusion (the Python package, the engine Lance embeds): per query, the runs
             registered as one record batch each and ``SELECT d, r FROM t ORDER BY d, r LIMIT k``;
             the time is the ``SortExec: TopK`` operator's own ``elapsed_compute`` from ``EXPLAIN
             ANALYZE`` (what Lance's plan spends in this op; no SQL planning)
  df_query   the same query's wall time from Python (planning and execution set-up included)
  pa_select  pyarrow ``pc.select_k_unstable`` on the query's rows as one table, then a take;
             arrow's sort keys order -0.0 == +0.0 and put every NaN last (not totalOrder), so it
             matches only where those do not occur (all speed data)
  pa_sort    pyarrow ``Table.sort_by([d, r]).slice(0, k)``: a full sort
  heapq_nsm  ``heapq.nsmallest(k, rows)`` over the query's (totalOrder key, row id) tuples: a
             bounded heap in Python, the algorithm DataFusion's TopK runs
  heapq_mrg  ``heapq.merge`` of the runs each sorted first (``sorted``), the first k taken: a k-way
             merge of sorted runs (Lance's runs arrive unsorted, hence the sorts)

Arrow tables and Python tuples are built untimed (in Lance the batches already exist as Arrow).
Prints the median microseconds per call of each arm, each arm's time over the baseline's (the
geomean over workloads last), how many calls each arm answered exactly, and the load average.

Run:  python benchmarks/topk_merge_anchors.py [--calls 5] [--kernel K] [--keep K] [--seed 1]
Needs pyarrow and datafusion (pip install datafusion==50.0.0: the DataFusion Lance d2039d75 pins).
"""

from __future__ import annotations

from common import ROOT, arm_order  # first: one thread and a private numba cache before numpy loads

import argparse
import gc
import heapq
import itertools
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from orchestrator.edit import parse_and_apply
from targets.harness.plan import Workload
from targets.harness.worker import load_kernel
from targets.topk_merge import reference, run_experiment, target

try:
    import datafusion
    import pyarrow as pa
    import pyarrow.compute as pc
except ImportError:
    print("needs pyarrow and datafusion: pip install datafusion==50.0.0", file=sys.stderr)
    sys.exit(2)

KERNEL = ROOT / "targets" / "topk_merge" / "kernels.py"
KEEP_REPLY = ROOT / "targets" / "topk_merge" / "playbook" / "01-fused-pass-replace-top.md"
ARMS = ("baseline", "keep", "df_topk", "df_query", "pa_select", "pa_sort", "heapq_nsm", "heapq_mrg")
ELAPSED = re.compile(r"SortExec: TopK.*?elapsed_compute=([0-9.]+)(ns|µs|ms|s)\b")
UNIT_US = {"ns": 1e-3, "µs": 1.0, "ms": 1e3, "s": 1e6}
Answer = list[tuple[np.ndarray, np.ndarray]]

@dataclass
class Query:
    """One query's inputs in every arm's format (built untimed)."""

    runs: list[tuple[np.ndarray, np.ndarray]]          # per run: (dists, row_ids)
    batches: list[pa.RecordBatch]
    table: pa.Table
    tuples: list[tuple[int, int]]                      # (totalOrder key, row id) per row
    run_tuples: list[list[tuple[int, int]]]


def queries_of(pool: dict[str, np.ndarray], call: dict[str, np.ndarray]) -> list[Query]:
    dists, row_ids = reference.patched(pool["dists"], pool["row_ids"], call)
    out = []
    for blocks in call["runs"]:
        runs = [(dists[b, :pool["lengths"][b]], row_ids[b, :pool["lengths"][b]]) for b in blocks]
        batches = [pa.record_batch([pa.array(d), pa.array(r)], names=["d", "r"]) for d, r in runs]
        run_tuples = [list(zip(reference.total_order_key(d).tolist(), r.tolist())) for d, r in runs]
        out.append(Query(runs, batches, pa.Table.from_batches(batches), list(itertools.chain(*run_tuples)),
                         run_tuples))
    return out


def from_tuples(rows: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.array([r[0] for r in rows], dtype=np.uint32)
    bits = np.where(keys >= np.uint32(0x80000000), keys ^ np.uint32(0x80000000), ~keys).astype(np.uint32)
    return bits.view(np.float32), np.array([r[1] for r in rows], dtype=np.uint64)


class DataFusionArm:
    """Per query: the runs as one registered table of record batches, ORDER BY d, r LIMIT k."""

    def __init__(self, k: int) -> None:
        self.ctx = datafusion.SessionContext(datafusion.SessionConfig().with_target_partitions(1))
        self.sql = f"SELECT d, r FROM t ORDER BY d, r LIMIT {k}"

    def query(self, q: Query) -> tuple[np.ndarray, np.ndarray]:
        self.ctx.register_record_batches("t", [q.batches])
        try:
            batches = self.ctx.sql(self.sql).collect()
        finally:
            self.ctx.deregister_table("t")
        if not batches:
            return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.uint64)
        table = pa.Table.from_batches(batches)
        return table.column("d").to_numpy(), table.column("r").to_numpy()

    def operator_us(self, q: Query) -> float:
        """The TopK operator's own elapsed_compute for this query (EXPLAIN ANALYZE, run untimed)."""
        self.ctx.register_record_batches("t", [q.batches])
        try:
            plan = self.ctx.sql("EXPLAIN ANALYZE " + self.sql).collect()[0].column(1)[0].as_py()
        finally:
            self.ctx.deregister_table("t")
        found = ELAPSED.search(plan)
        if found is None:
            raise RuntimeError(f"no TopK elapsed_compute in the plan:\n{plan}")
        return float(found.group(1)) * UNIT_US[found.group(2)]


def exact(answer: Answer, expected: Answer) -> bool:
    return len(answer) == len(expected) and all(
        np.array_equal(d.view(np.uint32), ed.view(np.uint32)) and np.array_equal(r, er)
        for (d, r), (ed, er) in zip(answer, expected))


def kernel_answer(out: dict[str, np.ndarray]) -> Answer:
    return [(out["dists"][q, :n], out["row_ids"][q, :n]) for q, n in enumerate(out["counts"])]


def arm_functions(kernels: dict[str, ModuleType], w: Workload, k: int, df: DataFusionArm
                  ) -> dict[str, Callable[[dict[str, np.ndarray], list[Query]], tuple[float, Answer]]]:
    """Each arm: (call, its queries) -> (microseconds, answer)."""
    def kernel_arm(module: ModuleType) -> Callable[[dict[str, np.ndarray], list[Query]], tuple[float, Answer]]:
        inst = target.build(module, w.params, w.arrays)

        def run(call: dict[str, np.ndarray], _: list[Query]) -> tuple[float, Answer]:
            t0 = time.perf_counter_ns()
            out = target.OPS["speed"](inst, call)
            return (time.perf_counter_ns() - t0) / 1e3, kernel_answer(out)
        return run

    def per_query(fn: Callable[[Query], tuple[np.ndarray, np.ndarray]]
                  ) -> Callable[[dict[str, np.ndarray], list[Query]], tuple[float, Answer]]:
        def run(_: dict[str, np.ndarray], queries: list[Query]) -> tuple[float, Answer]:
            answer, total = [], 0
            for q in queries:
                t0 = time.perf_counter_ns()
                answer.append(fn(q))
                total += time.perf_counter_ns() - t0
            return total / 1e3, answer
        return run

    def df_topk(_: dict[str, np.ndarray], queries: list[Query]) -> tuple[float, Answer]:
        return sum(df.operator_us(q) for q in queries), [df.query(q) for q in queries]

    def pa_select(q: Query) -> tuple[np.ndarray, np.ndarray]:
        idx = pc.select_k_unstable(q.table, k, sort_keys=[("d", "ascending"), ("r", "ascending")])
        top = q.table.take(idx)
        return top.column("d").to_numpy(), top.column("r").to_numpy()

    def pa_sort(q: Query) -> tuple[np.ndarray, np.ndarray]:
        top = q.table.sort_by([("d", "ascending"), ("r", "ascending")]).slice(0, k)
        return top.column("d").to_numpy(), top.column("r").to_numpy()

    def heapq_nsm(q: Query) -> tuple[np.ndarray, np.ndarray]:
        return from_tuples(heapq.nsmallest(k, q.tuples))

    def heapq_mrg(q: Query) -> tuple[np.ndarray, np.ndarray]:
        return from_tuples(list(itertools.islice(heapq.merge(*(sorted(r) for r in q.run_tuples)), k)))

    return {"baseline": kernel_arm(kernels["baseline"]), "keep": kernel_arm(kernels["keep"]), "df_topk": df_topk,
            "df_query": per_query(df.query), "pa_select": per_query(pa_select), "pa_sort": per_query(pa_sort),
            "heapq_nsm": per_query(heapq_nsm), "heapq_mrg": per_query(heapq_mrg)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=5, help="timed calls per workload (default 5)")
    ap.add_argument("--kernel", type=Path, default=KERNEL, help="the baseline kernels.py (default: shipped)")
    ap.add_argument("--keep", type=Path, default=None, help="a kept kernels.py (default: playbook 01 applied)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the calls (default 1)")
    args = ap.parse_args(argv)
    keep_path = args.keep
    if keep_path is None:
        keep_path = Path(tempfile.mkdtemp(prefix="topk-keep-")) / "kernels.py"
        keep_path.write_text(parse_and_apply(KEEP_REPLY.read_text(), args.kernel.read_text()).new_text)
    kernels = {"baseline": load_kernel(str(args.kernel), "topk_baseline_kernels"),
               "keep": load_kernel(str(keep_path), "topk_keep_kernels")}
    load_before = os.getloadavg()
    print(f"baseline {args.kernel}  keep {keep_path}  datafusion {datafusion.__version__}  pyarrow {pa.__version__}  "
          f"{args.calls} calls/workload  1 thread  load {load_before[0]:.2f}")
    print(f"{'workload':<30}" + "".join(f"{a:>11}" for a in ARMS) + "   (median us per call; exact calls)")
    ratios: dict[str, list[float]] = {a: [] for a in ARMS}
    for w in run_experiment.workloads():
        k = int(w.params["k"])
        calls = w.queries(args.seed, args.calls + 1)
        prepared = [(call, queries_of(w.arrays, call)) for call in calls]
        arms = arm_functions(kernels, w, k, DataFusionArm(k))
        times = np.empty((args.calls, len(ARMS)))
        agreed = dict.fromkeys(ARMS, 0)
        for name in ARMS:                                   # warm-up: numba, DataFusion's first plan
            arms[name](*prepared[0])
        gc.disable()
        try:
            for i, (call, queries) in enumerate(prepared[1:]):
                expected = run_experiment.expected_for(w.arrays, call, k)
                for j in arm_order(i, len(ARMS)):
                    us, answer = arms[ARMS[j]](call, queries)
                    times[i, j] = us
                    agreed[ARMS[j]] += exact(answer, expected)
        finally:
            gc.enable()
        med = np.median(times, axis=0)
        for name, value in zip(ARMS, med):
            ratios[name].append(value / med[0])
        print(f"{w.combo:<30}" + "".join(f"{v:>11.0f}" for v in med) + "   "
              + " ".join(f"{agreed[a]}/{args.calls}" for a in ARMS))
    print(f"{'arm / baseline (geomean)':<30}"
          + "".join(f"{np.exp(np.mean(np.log(ratios[a]))):>11.3f}" for a in ARMS))
    load_after = os.getloadavg()
    print(f"load average {load_before[0]:.2f} -> {load_after[0]:.2f} (2 cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
