"""The measurement protocol: correctness first, then paired, interleaved, frozen-rival timing.

``measure_block`` is one timing block over every combo with one set of workers (arms alternate
query by query in a random order); a secret-seeded share of the timed calls is kept and checked
against the oracle afterwards (``verify_pending``), so a kernel cannot be honest only when checked.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from targets.harness.failures import KernelIncorrect, TrialFailure
from targets.harness.plan import Case, ProfileShape, Workload, size_label
from targets.harness.prng import Stream, mix_seeds
from targets.harness.process import Worker

OVERHEAD_PINGS = 9                      # per kernel arm, combo and block, in Lance and profile modes


def run_correctness(worker: Worker, cases: Sequence[Case],
                    check: Callable[[Case, int, dict[str, np.ndarray]], str | None]) -> int:
    """Run every case; raise KernelIncorrect naming the first failing case. Returns calls checked."""
    checked = 0
    for case in cases:
        inst = f"check:{case.name}"
        worker.request({"cmd": "setup", "instance": inst, "params": case.params}, case.arrays,
                       f"building case {case.name}")
        for i, call in enumerate(case.calls):
            _, out, _ = worker.request({"cmd": "call", "instance": inst, "op": "check"}, call,
                                       f"running case {case.name} call {i}")
            problem = check(case, i, out)
            if problem is not None:
                raise KernelIncorrect(f"{worker.label} kernel, case {case.name}, call {i}: {problem}")
            checked += 1
        worker.request({"cmd": "drop", "instance": inst})
    return checked


@dataclass
class SpeedSamples:
    """ns per op for each arm, combo and block, plus the timed calls picked for verification."""

    ns: list[dict[str, list[np.ndarray]]]                      # [arm][combo][block] -> ns array
    counts: list[dict[str, list[np.ndarray]]] = field(default_factory=list)  # same, (queries, 2): cycles, instr
    to_verify: list[tuple[str, dict[str, np.ndarray], list[dict[str, np.ndarray]]]] = field(
        default_factory=list)                                   # (combo, call, outputs per arm)
    jit_seconds: list[float] = field(default_factory=list)     # per arm
    verified: int = 0
    overhead_ns: list[dict[str, list[int]]] = field(default_factory=list)   # [arm][combo][block], Lance mode


def _call(worker: Worker, inst: str, call: dict[str, np.ndarray], what: str, rivals: Sequence[Worker],
          spin_ns: int = 0) -> tuple[dict[str, np.ndarray], int, tuple[int, int]]:
    """One timed call: outputs, ns as the runner saw it, and the worker's (cycles, instructions)
    for it, (-1, -1) without counters. Counters are read outside the timed window. Every rival
    worker is frozen first, so only the timed one can run."""
    _freeze_rivals(worker, rivals)
    message: dict[str, Any] = {"cmd": "call", "instance": inst, "op": "speed"}
    if spin_ns:
        message["spin_ns"] = spin_ns
    before = worker.counters.read() if worker.counters else None
    _, out, ns = worker.request(message, call, what, timed=True)
    if worker.reports_own_time:
        out = dict(out)
        ns = own_time_ns(out.pop("lance_ns", None), worker.label)
    if before is None or worker.counters is None:
        return out, ns, (-1, -1)
    after = worker.counters.read()
    return out, ns, (after[0] - before[0], after[1] - before[1])


def _freeze_rivals(worker: Worker, rivals: Sequence[Worker]) -> None:
    for rival in rivals:
        if rival is not worker:
            rival.freeze()


def own_time_ns(value: object, label: str) -> int:
    """The time an arm reported for its own call (Lance's operator timer), strictly: one positive
    int64 below an hour, or the trial fails."""
    if type(value) is not np.ndarray or value.dtype != np.int64 or value.shape != (1,) or not 0 < value[0] < 3.6e12:
        raise TrialFailure(f"{label} arm: no valid own time for a timed call (got {value!r})")
    return int(value[0])


def call_overhead_ns(worker: Worker, call: dict[str, np.ndarray], rivals: Sequence[Worker], pings: int) -> int:
    """The median round trip of an empty request carrying ``call``'s arrays: what the runner's
    clock adds to a kernel's op (pipes, framing, wake-up). Subtracted only where a kernel is
    compared with an arm that times itself (Lance); kernel-vs-kernel ratios use raw times."""
    _freeze_rivals(worker, rivals)
    rtts = [worker.request({"cmd": "ping"}, call, "measuring the call overhead", timed=True)[2] for _ in range(pings)]
    return int(np.median(rtts))


def measure_block(workers: Sequence[Worker], workloads: Sequence[Workload], seed: int, block: int,
                  queries_per_combo: int, warmup_calls: int, verify_fraction: float,
                  samples: SpeedSamples, spins: Sequence[float] = (), fixed_order: bool = False,
                  freeze: bool = True, overhead: bool = False) -> None:
    """One block: a pass over every combo (in random order) with one set of workers, alternating
    arms query by query in a random order per query. A secret-seeded subset of timed calls is
    kept for verification. ``fixed_order`` (calibration's ablation) drops the randomness of order.
    Each kernel arm's call overhead is measured per combo where an arm times itself (Lance), or
    where ``overhead`` asks for it (profile mode)."""
    # The runner's own collector must not pause between a request and its timed reply: it is off
    # for the block and catches up afterwards, off the clock.
    gc.disable()
    try:
        _measure_block(workers, workloads, seed, block, queries_per_combo, warmup_calls, verify_fraction, samples,
                       spins, fixed_order, workers if freeze else (),
                       overhead or any(worker.reports_own_time for worker in workers))
    finally:
        gc.enable()


def _measure_block(workers: Sequence[Worker], workloads: Sequence[Workload], seed: int, block: int,
                   queries_per_combo: int, warmup_calls: int, verify_fraction: float,
                   samples: SpeedSamples, spins: Sequence[float], fixed_order: bool,
                   rivals: Sequence[Worker], overhead: bool) -> None:
    stream = Stream(mix_seeds(seed, "order", block))
    combo_order = [workloads[i] for i in np.argsort(stream.f32(len(workloads)), kind="stable")]
    for w in (workloads if fixed_order else combo_order):
        # Queries never repeat for a kernel within a trial: each block draws its own.
        calls = w.queries(mix_seeds(seed, "block", block), warmup_calls + queries_per_combo)
        inst = f"speed:{w.combo}"
        # Which arm is built and warmed first is random too: any first-mover effect becomes noise.
        first_movers = list(workers)[::-1] if stream.integers(2, 1)[0] and not fixed_order else list(workers)
        for worker in first_movers:
            worker.request({"cmd": "setup", "instance": inst, "params": {**w.params, **worker.setup_params}},
                           w.arrays, f"building workload {w.combo}")
        # Calibration's injected slowdown: a fraction of the arm's own last call as the runner
        # timed it (without its spin), so the measured effect is the nominal one on average.
        spin = list(spins) or [0.0] * len(workers)
        last_ns = [0] * len(workers)
        for worker in first_movers:
            for i, call in enumerate(calls[:warmup_calls]):       # untimed; numba compiles here
                _, ns, _ = _call(worker, inst, call, f"warming up {w.combo}", rivals)
                last_ns[workers.index(worker)] = ns
                if i == 0:
                    worker.first_call_ns.setdefault(w.combo, ns)
        if overhead:       # measured next to the combo's timed calls, under the same conditions
            for arm, worker in enumerate(workers):
                if not worker.reports_own_time:
                    samples.overhead_ns[arm].setdefault(w.combo, []).append(
                        call_overhead_ns(worker, calls[0], rivals, OVERHEAD_PINGS))
        timed = np.zeros((len(workers), queries_per_combo), dtype=np.int64)
        counts = np.full((len(workers), queries_per_combo, 2), -1, dtype=np.int64)
        flips = stream.integers(2, queries_per_combo)
        check = stream.f32(queries_per_combo) < np.float32(verify_fraction)
        check[stream.integers(queries_per_combo, 1)[0]] = True       # at least one per combo
        against_self_timed = any(worker.reports_own_time for worker in workers)
        for q, call in enumerate(calls[warmup_calls:]):
            arms = list(range(len(workers)))
            if flips[q] and not fixed_order:
                arms.reverse()
            outs: list[dict[str, np.ndarray]] = [{} for _ in workers]
            for arm in arms:
                if against_self_timed and not workers[arm].reports_own_time:
                    # Lance's timer starts after its own per-query planning has warmed its caches;
                    # the kernel gets the same: an untimed call on the previous query first.
                    _call(workers[arm], inst, calls[warmup_calls + q - 1], f"warming {w.combo}", rivals)
                spin_ns = int(spin[arm] * last_ns[arm])
                outs[arm], timed[arm, q], counts[arm, q] = _call(workers[arm], inst, call, f"timing {w.combo}",
                                                                 rivals, spin_ns)
                last_ns[arm] = int(timed[arm, q]) - spin_ns
            if check[q]:
                for arm, worker in enumerate(workers):
                    if worker.reports_own_time:          # its answer, asked for now, untimed
                        outs[arm] = worker.request({"cmd": "call", "instance": inst, "op": "check"}, call,
                                                   f"checking {w.combo}")[1]
                samples.to_verify.append((w.combo, call, outs))
        for arm, worker in enumerate(workers):
            worker.request({"cmd": "drop", "instance": inst})
            samples.ns[arm].setdefault(w.combo, []).append(timed[arm])
            samples.counts[arm].setdefault(w.combo, []).append(counts[arm])


def profile_workloads(shapes: Sequence[ProfileShape], factors: Sequence[str]
                      ) -> list[tuple[ProfileShape, dict[str, int], Workload]]:
    """Every profiled shape's workload at every combination of its factors' values, each its own
    combo (the size is in its distribution's name), so ``measure_block`` times, orders and keeps
    them for verification exactly as it does speed combos."""
    out = []
    for ps in shapes:
        for values in itertools.product(*(ps.values[f] for f in factors)):
            size = dict(zip(factors, values))
            w = ps.workload(size)
            out.append((ps, size, replace(w, distribution=f"{w.distribution}@{size_label(size)}")))
    return out


def jit_seconds(worker: Worker, ns: dict[str, list[np.ndarray]]) -> float:
    """Import time plus each combo's first call in excess of its steady-state median: numba's
    compile (or cache load) cost, paid once per worker process."""
    extra = sum(max(0.0, first - float(np.median(ns[c][-1]))) for c, first in worker.first_call_ns.items())
    return worker.import_seconds + extra / 1e9


def verify_pending(workloads: Sequence[Workload], samples: SpeedSamples, labels: Sequence[str]) -> None:
    """Check the picked timed calls against the oracle, so a kernel cannot be honest when checked
    and fast when timed (it cannot tell which calls are picked)."""
    by_combo = {w.combo: w for w in workloads}
    while samples.to_verify:
        combo, call, outs = samples.to_verify.pop()
        check = by_combo[combo].verify(call)
        for label, out in zip(labels, outs):
            problem = check(out)
            if problem is not None:
                raise KernelIncorrect(f"{label} kernel, timed call on {combo}: {problem}")
        samples.verified += len(outs)


def without_call_overhead(ns: dict[str, list[np.ndarray]], overhead: dict[str, list[int]],
                          combos: Sequence[str]) -> dict[str, list[np.ndarray]]:
    """A kernel arm's times less each block's measured call overhead, for comparison with an arm
    that times itself. Fails closed where the overhead is most of the time: the difference would
    then be mostly noise."""
    out: dict[str, list[np.ndarray]] = {}
    for c in combos:
        out[c] = []
        for block, over in zip(ns[c], overhead[c]):
            if over >= 0.5 * float(np.median(block)):
                raise TrialFailure(f"{c}: the call overhead ({over / 1e3:.0f} us) is over half the kernel's time "
                                   f"({np.median(block) / 1e3:.0f} us); a comparison with Lance's own timer "
                                   "would be mostly noise")
            out[c].append(np.maximum(block - over, 1))
    return out
