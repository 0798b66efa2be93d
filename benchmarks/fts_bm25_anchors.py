"""fts-bm25 anchors: the baseline, the playbook's keep, Lance itself and bm25s on one corpus, side by side.

For each workload asked (default: the four ``100000x3x10`` combos; ``--combos`` takes labels such
as ``300000x3x1000/zipf_mixed``) the harness's own speed index is turned into a corpus Lance can
index: document d is the token ``t<term>`` repeated tf times for each of its terms, padded with a
filler token to its length (``targets/fts_bm25/lance_arm.corpus``, the trial's Lance arm's corpus),
so all four arms score the same corpus. Then, one query at a time (the harness's queries, terms
joined by spaces; the arms interleaved in a balanced order, collector off, this process pinned to
one core):

  baseline   ``target.OPS["speed"]`` on ``targets/fts_bm25/kernels.py`` (the compiled WAND port)
  keep       the same on playbook entry 01 applied to it (or ``--kernel``)
  lance      pylance ``full_text_query`` (whitespace tokenizer, no lower-casing, stemming, stop
             words or folding; one index partition; ``LANCE_CPU_THREADS=1`` as the harness sets it), timed by Lance's own
             operator timer: ``MatchQuery`` ``elapsed_compute`` from ``analyze_plan`` (tokenising
             the query, the posting lists from the index cache, warmed with every term first,
             WAND, the top k); its ~1 ms of
             planning and Python is not counted. Whole-query wall time is printed beside it.
  bm25s      ``bm25s.BM25(method="lucene", k1=1.2, b=0.75)`` on the same token ids (it scores
             every posting at index time and sums columns per query); its scores times (K1 + 1)
             are Lance's BM25.

Each answer is checked against the oracle with the harness's own rule (``run_experiment.judge``:
the count, ties, ``1e-4 + 1e-6·|s|``); Lance's and bm25s's largest score error is printed too.
Prints median µs per query and ratios to the baseline (> 1: faster than the baseline).

Run:  python benchmarks/fts_bm25_anchors.py [--queries 30] [--combos A,B] [--kernel K] [--seed 1]
Needs pylance and bm25s:  pip install pylance bm25s
"""

from __future__ import annotations

from common import ROOT, arm_order, playbook_kernel  # first: one thread and a private numba cache before numpy loads

import argparse
import gc
import importlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from targets.fts_bm25 import inputs, lance_arm, reference, run_experiment, target
from targets.fts_bm25.inputs import Query, SpeedCombo
from targets.harness import lance
from targets.harness.worker import load_kernel

BASELINE = ROOT / "targets" / "fts_bm25" / "kernels.py"
KEEP_ENTRY = ROOT / "targets" / "fts_bm25" / "playbook" / "01-windowed-term-at-a-time.md"
ARMS = ("baseline", "keep", "lance", "bm25s")


def lance_search(texts: list[str], workdir: Path) -> Callable[[np.ndarray, int], tuple]:
    """Lance's search over the corpus as the trial's Lance arm builds it (``lance_arm.corpus``)."""
    ds = lance.fts_dataset(workdir / "corpus.lance", texts)

    def search(terms: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float, float]:
        scanner = ds.scanner(columns=["_score"], with_row_id=True, limit=k, disable_scoring_autoprojection=True,
                             full_text_query=lance_arm.query_text(terms))
        t0 = time.perf_counter_ns()
        table = scanner.to_table()
        wall = (time.perf_counter_ns() - t0) / 1e3
        own = lance.timer_ns(scanner.analyze_plan(), lance.MATCH_QUERY_TIMER) / 1e3
        return (table["_rowid"].to_numpy().astype(np.int64), table["_score"].to_numpy().astype(np.float32), own, wall)
    return search


def bm25s_search(texts: list[str], vocab: int) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    bm25s = importlib.import_module("bm25s")          # untyped: Any
    tokenized = importlib.import_module("bm25s.tokenization").Tokenized

    names = {f"t{t}": t for t in range(vocab)} | {lance_arm.FILLER: vocab}
    docs = [[names[token] for token in text.split(" ")] for text in texts]
    retriever = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    retriever.index(tokenized(ids=docs, vocab=names), show_progress=False)

    def search(terms: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids, scores = retriever.retrieve([[f"t{t}" for t in terms]], k=k, show_progress=False, n_threads=1)
        return ids[0].astype(np.int64), (scores[0] * np.float32(reference.K1_PLUS_1)).astype(np.float32)
    return search


def kernel_search(path: Path, index: reference.Index) -> Callable[[Query], dict[str, np.ndarray]]:
    kernel = target.build(load_kernel(str(path)), run_experiment._params(index), inputs.index_arrays(index))
    return lambda query: target.OPS["speed"](kernel, run_experiment.request(query))


def as_answer(ids: np.ndarray, scores: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """A library's answer in the op's arrays: only its positive scores are matches (bm25s returns
    zero-scored documents when fewer than k match)."""
    keep = scores > 0
    ids, scores = ids[keep][:k], scores[keep][:k]
    out: dict[str, np.ndarray] = {"ids": np.full((1, k), target.NO_DOC, dtype=np.int64),
                                  "scores": np.full((1, k), np.nan, dtype=np.float32),
                                  "counts": np.array([ids.size], dtype=np.int64)}
    out["ids"][0, :ids.size], out["scores"][0, :ids.size] = ids, scores
    return out


def score_error(index: reference.Index, terms: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> float:
    """The largest relative error of a library's scores against the oracle's for the same documents."""
    ref = reference.score_all(index, terms)
    pos = np.searchsorted(ref.docs, ids[scores > 0])
    mine = ref.scores[pos].astype(np.float64)
    return float(np.max(np.abs(scores[scores > 0] - mine) / mine)) if mine.size else 0.0


@dataclass
class Row:
    combo: str
    us: dict[str, float]
    lance_wall_us: float
    passed: dict[str, int]
    queries: int
    lance_error: float
    bm25s_error: float


def run_combo(combo: SpeedCombo, keep: Path, queries: int, seed: int, arms: tuple[str, ...]) -> Row:
    index = inputs.fixture_index(inputs.fixtures(), combo)
    vocab = index.offsets.size - 1
    texts = lance_arm.corpus(index)
    with tempfile.TemporaryDirectory() as tmp:
        search_lance = lance_search(texts, Path(tmp))
        bm25 = bm25s_search(texts, vocab)
        base, fast = kernel_search(BASELINE, index), kernel_search(keep, index)
        # one query per call: the harness's batches, split
        single = [inputs.batch([q.terms[a:b].tolist()], q.k) for q in inputs.speed_batches(combo, seed, queries)
                  for a, b in zip(q.offsets[:-1], q.offsets[1:])][:queries]
        times = np.full((len(single), len(ARMS)), np.nan)
        walls = np.zeros(len(single))
        passed = dict.fromkeys(ARMS, 0)
        errors = {"lance": 0.0, "bm25s": 0.0}
        for q in single[:2]:                                    # warm-up: numba, caches
            base(q), fast(q), search_lance(q.terms, q.k), bm25(q.terms, q.k)
        for t in range(vocab):                                  # every posting list into Lance's index cache
            search_lance(np.array([t]), 1)
        gc.disable()
        try:
            for i, q in enumerate(single):
                outs: dict[str, dict[str, np.ndarray]] = {}
                for j in arm_order(i, len(ARMS)):
                    arm = ARMS[j]
                    if arm not in arms:
                        continue
                    t0 = time.perf_counter_ns()
                    if arm == "baseline":
                        outs[arm] = base(q)
                    elif arm == "keep":
                        outs[arm] = fast(q)
                    elif arm == "lance":
                        ids, scores, own, walls[i] = search_lance(q.terms, q.k)
                        outs[arm] = as_answer(ids, scores, q.k)
                        errors["lance"] = max(errors["lance"], score_error(index, q.terms, ids, scores))
                    else:
                        ids, scores = bm25(q.terms, q.k)
                        outs[arm] = as_answer(ids, scores, q.k)
                        errors["bm25s"] = max(errors["bm25s"], score_error(index, q.terms, ids, scores))
                    elapsed = (time.perf_counter_ns() - t0) / 1e3
                    times[i, j] = own if arm == "lance" else elapsed
                call = run_experiment.request(q)
                for arm, out in outs.items():
                    problem = run_experiment.judge(out, index, call)
                    passed[arm] += problem is None
                    if problem is not None and passed[arm] == 0 and i == 0:
                        print(f"  {arm} differs from the oracle: {problem}", file=sys.stderr)
        finally:
            gc.enable()
    med = np.array([np.median(times[:, j]) if arm in arms else np.nan for j, arm in enumerate(ARMS)])
    return Row(inputs.combo_label(combo), dict(zip(ARMS, med.tolist())), float(np.median(walls)), passed,
               len(single), errors["lance"], errors["bm25s"])


def load() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=30, help="queries per workload (default 30)")
    ap.add_argument("--combos", default="100000x3x10", help="workload labels or prefixes, comma-separated")
    ap.add_argument("--kernel", type=Path, help="the kernel timed as 'keep' (default: playbook entry 01)")
    ap.add_argument("--seed", type=int, default=1, help="seed for the queries (default 1)")
    ap.add_argument("--arms", default=",".join(ARMS),
                    help="arms to time, comma-separated (default all; bm25s's ~0.1 s per query with its large "
                         "allocations disturbs Lance's timer: drop it for Lance's numbers)")
    args = ap.parse_args(argv)
    try:
        bm25s = importlib.import_module("bm25s")
        import lance as pylance
    except ImportError as exc:
        print(f"{exc.name} is not installed: pip install pylance bm25s", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    with tempfile.TemporaryDirectory() as tmp:
        keep = args.kernel or playbook_kernel(BASELINE.parent, KEEP_ENTRY.name, Path(tmp))
        wanted = [c for c in inputs.SPEED_COMBOS if any(inputs.combo_label(c).startswith(p) for p in args.combos.split(","))]
        print(f"pylance {pylance.__version__}, bm25s {bm25s.__version__}; load average at start {load()}")
        print("µs per query (median); ratio = baseline µs / arm µs (> 1: faster than the baseline); "
              "pass = answers the oracle's check accepts")
        header = (f"{'workload':28s} {'baseline':>9s} {'keep':>9s} {'lance':>9s} {'bm25s':>9s} {'lance wall':>10s}  "
                  f"{'keep/base':>9s} {'lance/base':>10s} {'bm25s/base':>10s}  {'keep/lance':>10s}  pass b/k/l/s  "
                  "lance err  bm25s err")
        print(header)
        ratios: dict[str, list[float]] = {"keep": [], "lance": [], "bm25s": [], "keep_vs_lance": []}
        for combo in wanted:
            row = run_combo(combo, keep, args.queries, args.seed, tuple(args.arms.split(",")))
            us = row.us
            for arm in ("keep", "lance", "bm25s"):
                ratios[arm].append(us["baseline"] / us[arm])
            ratios["keep_vs_lance"].append(us["lance"] / us["keep"])
            print(f"{row.combo:28s} {us['baseline']:9.1f} {us['keep']:9.1f} {us['lance']:9.1f} {us['bm25s']:9.1f} "
                  f"{row.lance_wall_us:10.1f}  {us['baseline'] / us['keep']:8.2f}x {us['baseline'] / us['lance']:9.2f}x "
                  f"{us['baseline'] / us['bm25s']:9.2f}x  {us['lance'] / us['keep']:9.2f}x  "
                  + "/".join(str(row.passed[a]) for a in ARMS) + f" of {row.queries}  "
                  f"{row.lance_error:.2e}   {row.bm25s_error:.2e}", flush=True)
        geo = {name: float(np.exp(np.nanmean(np.log(v)))) if np.any(np.isfinite(v)) else np.nan
               for name, v in ratios.items()}
        print(f"geomean: keep/base {geo['keep']:.2f}x, lance/base {geo['lance']:.2f}x, bm25s/base {geo['bm25s']:.2f}x, "
              f"keep vs lance {geo['keep_vs_lance']:.2f}x; load average at end {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
