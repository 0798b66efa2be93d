"""The trusted trial runner: correctness against an oracle, then timing, in worker processes.

The runner never imports a kernel. It starts one worker per kernel (``targets.harness.worker``),
sends each inputs and requests over pipes, times each request from its side, rebuilds outputs
from raw bytes and judges them with the target's own check functions. In paired mode it
alternates the incumbent's and the candidate's workers query by query (random order per pair,
same queries), over several fresh worker pairs, and reports incumbent/candidate speedups. In
profile mode it times one kernel's op at several sizes per shape and fits the op's split by stage.

This module is the trial's sequence and its command line; the pieces are ``plan`` (what a
target gives), ``failures`` (how a trial fails), ``process`` (workers), ``measure`` (the
protocol), ``summary`` (statistics into the result) and ``machine`` (what it ran on).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import secrets
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from targets.harness import cache, contention, sandbox
from targets.harness.failures import TrialFailure
from targets.harness.files import write_atomic
from targets.harness.machine import cpu_model, lance_anchor, package_version
from targets.harness.measure import (SpeedSamples, jit_seconds, measure_block, profile_workloads, run_correctness,
                                     verify_pending, without_call_overhead)
from targets.harness.plan import ProfileShape, TargetPlan, TrialOptions, Workload
from targets.harness.prng import Stream, mix_seeds
from targets.harness.process import Worker, current_affinity, pick_cpus, set_affinity
from targets.harness.resources import DEFAULT_BUDGET_SECONDS, peak_rss_mb
from targets.harness.result import EXIT_INTERNAL, EXIT_OK, EXIT_TIMEOUT, TrialResult, sign
from targets.harness.summary import rounded, shape_profile, summarise



def trusted_stores(arms: list[tuple[str, Path | None]], trusted: dict[str, Path]) -> dict[str, Path]:
    """Arm label -> the machine-wide numba store of its kernel, for arms running a target's own
    kernel. One arm per store: each arm's uid owns its cache, so in an A/A trial two arms sharing
    one store took it from each other and one recompiled on every worker pair; the second arm
    compiles once per trial in its own scratch, as any kernel does."""
    out: dict[str, Path] = {}
    for label, path in arms:
        if path is not None and (sha := _sha256(path)) in trusted and cache.numba_store(sha) not in out.values():
            out[label] = cache.numba_store(sha)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sessions(plan: TargetPlan, options: TrialOptions, mode: str) -> int:
    """Timing blocks per worker (pair): several in paired and profile modes, one otherwise."""
    if mode == "paired":
        return options.sessions or plan.sessions
    return (options.sessions or plan.profile.blocks) if mode == "profile" and plan.profile else 1


def _default_queries(plan: TargetPlan, mode: str) -> int:
    if mode == "paired":
        return plan.queries_per_combo
    return plan.profile.queries_per_point if mode == "profile" and plan.profile else plan.single_queries_per_combo


def run_trial(plan: TargetPlan, options: TrialOptions,
              on_samples: Callable[[SpeedSamples], None] | None = None) -> TrialResult:
    """Run one trial and return its result; failures become results with exit codes, not raises.
    ``on_samples`` sees the raw timings of a trial that passed (calibration keeps them)."""
    started = time.monotonic()
    deadline = started + options.budget_seconds
    paired = options.against is not None or options.lance
    mode = "paired" if paired else options.mode
    seed = options.seed if options.seed is not None else secrets.randbits(64)
    runner_cpu, worker_cpu = (None, None) if "pinning" in options.ablated else pick_cpus()
    result = TrialResult(
        target=plan.name, mode=mode, exit_code=EXIT_INTERNAL, correctness="not_run",
        arch=platform.machine(), cpu=cpu_model(), python=platform.python_version(),
        numpy=package_version("numpy"), numba=package_version("numba"),
        threads={**sandbox.THREAD_ENV, "worker_cpu": str(worker_cpu), "runner_cpu": str(runner_cpu)},
        passes=3 if mode == "baseline" else 1,
        replicates=(options.replicates or plan.replicates) if paired else 1,
        sessions=_sessions(plan, options, mode),
        queries_per_combo=options.queries_per_combo or _default_queries(plan, mode),
        query_seed=f"{seed:016x}", kernel_sha256=_sha256(options.kernel),
        injected_slowdown=options.injected_slowdown, ablated=list(options.ablated),
        against_sha256=_sha256(options.against) if options.against else "")
    # Taken before pinning: an in-process caller (calibrate) runs many trials, and each must find
    # the process as the previous one found it, free to use every core.
    original_affinity = current_affinity()
    if runner_cpu is not None:
        set_affinity([runner_cpu])
    with tempfile.TemporaryDirectory(prefix="lar-trial-") as tmp:
        scratch = Path(tmp)
        log_dir = options.log_dir or scratch
        log_dir.mkdir(parents=True, exist_ok=True)
        workers: list[Worker] = []
        try:
            _run_phases(plan, options, result, seed, deadline, (scratch, log_dir), workers,
                        (runner_cpu, worker_cpu), on_samples)
            result.exit_code, result.correctness = EXIT_OK, "pass"
        except TrialFailure as exc:
            result.exit_code, result.failure_kind, result.failure = exc.exit_code, exc.kind, str(exc)
            if exc.kind == "incorrect":
                result.correctness = "fail"
        except Exception as exc:  # noqa: BLE001 - a harness bug is reported, never a pass
            result.exit_code, result.failure_kind = EXIT_INTERNAL, "internal"
            result.failure = "".join(traceback.format_exception(exc)).strip()
        finally:
            peaks = [peak_rss_mb()] + [w.peak_mb() for w in workers]
            for w in workers:
                w.kill()
            # One deadline for all the reaping: sixteen stuck workers must not add 16 x 10 s.
            reap_until = time.monotonic() + 10.0
            survivors = [pid for w in workers for pid in w.reap(timeout=max(0.1, reap_until - time.monotonic()))]
            # Not only the trees the runner knows: anything left as a worker's uid or in its namespace.
            # A killed process may take a moment to exit on a loaded machine: look again until the
            # reap deadline before calling it a survivor.
            uids = {w.uid for w in workers if w.uid is not None}
            namespaces = {w.pid_namespace for w in workers if w.pid_namespace is not None}
            left = sandbox.survivors(uids, namespaces)
            while left and time.monotonic() < reap_until:
                time.sleep(0.05)
                left = sandbox.survivors(uids, namespaces)
            survivors += left
            set_affinity(original_affinity)
    if survivors:
        result.exit_code, result.failure_kind = EXIT_INTERNAL, "internal"
        result.failure = f"worker processes survived the kill: {survivors}"
    result.peak_mem_mb = rounded(max(peaks), 1)
    result.total_seconds = rounded(time.monotonic() - started, 3)
    if result.ok and result.total_seconds > options.budget_seconds:
        result.exit_code, result.failure_kind = EXIT_TIMEOUT, "timeout"
        result.failure = f"trial took {result.total_seconds} s, over its budget of {options.budget_seconds:g} s"
    return result


def _run_phases(plan: TargetPlan, options: TrialOptions, result: TrialResult, seed: int, deadline: float,
                dirs: tuple[Path, Path], workers: list[Worker], cpus: tuple[int | None, int | None],
                on_samples: Callable[[SpeedSamples], None] | None) -> None:
    arms: list[tuple[str, Path | None]]
    if options.lance:
        arms = [("lance", None), ("candidate", options.kernel)]
    elif options.against:
        arms = [("incumbent", options.against), ("candidate", options.kernel)]
    else:
        arms = [("kernel", options.kernel)]
    profiled = options.mode == "profile"
    if profiled and (plan.profile is None or len(arms) != 1):
        raise TrialFailure(f"--mode profile times one kernel of a target that declares a profile ({plan.name}: "
                           f"{'no profile' if plan.profile is None else 'give no --against or --against-lance'})")
    runner_cpu, worker_cpu = cpus
    spin = runner_cpu is not None and runner_cpu != worker_cpu

    start_order = Stream(mix_seeds(seed, "start-order"))

    box = sandbox.sandbox_for(unsafe_no_sandbox=not options.sandbox)
    result.sandbox = box.label
    if not box.active and not box.off:
        raise TrialFailure(f"no sandbox for untrusted kernels: {box.unavailable}")
    sandbox.make_bundle(dirs[0], plan.ops_module)
    # Root: each arm gets a uid of its own, so nothing of one arm can touch the other's files.
    uids = {label: sandbox.new_uid() if box.active and box.setpriv and path is not None else None
            for label, path in arms}
    # A kernel must not learn which arm it is: paths it can see are named by a secret alias per
    # arm (the key to the logs is written where no worker can read it).
    aliases = {label: f"w{secrets.token_hex(4)}" for label, _ in arms}
    # A target's own kernel compiles once per machine, not once per trial (sandboxed only: without
    # a sandbox the other arm could write its cache).
    stores = trusted_stores(arms, cache.trusted_kernels() if box.active else {})
    write_atomic(dirs[1] / "arms.json", json.dumps({aliases[label]: label for label, _ in arms}, indent=1) + "\n")
    if options.lance:
        if plan.lance_params is None:
            raise TrialFailure(f"Lance cannot run {plan.name}'s op: there is no Lance arm for this target")
        result.anchor = lance_anchor(plan.lance_timer)

    def start_workers() -> list[Worker]:
        """A fresh process per arm, started in random order; returned in arm order."""
        order = list(range(len(arms)))
        if start_order.integers(2, 1)[0] and "random-order" not in options.ablated:
            order.reverse()
        fresh: dict[int, Worker] = {}
        for i in order:
            label, path = arms[i]
            if path is None:
                fresh[i] = Worker(label, None, plan.lance_ops, *dirs, deadline, worker_cpu, spin, sandbox.Sandbox(off=True),
                                  options.budget_seconds)
                fresh[i].setup_params = {**(plan.lance_params or {}), "lance_cache": str(cache.cache_dir() / "lance")}
            else:
                fresh[i] = Worker(label, path, plan.ops_module, *dirs, deadline, worker_cpu, spin, box,
                                  options.budget_seconds, uids[label], idle_spin="freeze" not in options.ablated,
                                  alias=aliases[label], store=stores.get(label))
            workers.append(fresh[i])
        return [fresh[i] for i in range(len(arms))]

    current = start_workers()                 # workers import while the runner builds fixtures
    t0 = time.monotonic()
    cases = plan.cases(seed)
    if profiled:
        assert plan.profile is not None
        shapes = plan.profile.shapes()
        points = profile_workloads(shapes, list(plan.profile.factors))
        workloads = [w for _, _, w in points]
        result.distributions_tested = list(dict.fromkeys(ps.distribution for ps in shapes))
    else:
        workloads = plan.workloads()
        result.distributions_tested = list(dict.fromkeys(w.distribution for w in workloads))
    result.fixture_seconds = rounded(time.monotonic() - t0, 3)
    result.shapes_tested = list(dict.fromkeys(w.shape for w in workloads))      # as the target declares them
    for w in current:
        w.hello()
    # Correctness first, candidate first: a wrong kernel costs no timing. (Lance is checked where
    # it is built, and on its timed calls like any arm.)
    for w in reversed(current):
        if not w.reports_own_time:
            result.correctness_cases = run_correctness(w, cases, plan.check)
    result.correctness = "pass"
    if profiled:
        _profile(plan, result, seed, current[0], points, contention.Monitor(worker_cpu, runner_cpu))
        return

    passes = result.replicates if len(arms) == 2 else result.passes
    samples = SpeedSamples(ns=[{} for _ in arms], counts=[{} for _ in arms], jit_seconds=[0.0 for _ in arms],
                           overhead_ns=[{} for _ in arms])
    spins = [options.injected_slowdown if label == "incumbent" else 0.0 for label, _ in arms]
    # Said once per trial: either every worker was counted, or the first reason one was not.
    result.counters = next((w.counters_note for w in current if w.counters is None), current[0].counters_note)
    block = 0
    monitor = contention.Monitor(worker_cpu, runner_cpu)
    # Killed workers whose child (bwrap, which exits on its own once the worker is dead) is not yet
    # reaped: each was a zombie until the trial's end, two per pair. They are reaped between steps,
    # off the clock and without waiting (a straggler is left to the final reap, which kills it);
    # a reaper thread would wake on the runner's core during the next pair's timed calls.
    retired: list[Worker] = []
    for rep in range(passes):
        for _ in range(result.sessions):
            monitor.begin(w.pid for w in current if w.pid is not None)
            measure_block(current, workloads, seed, block, result.queries_per_combo,
                          0 if "warmup" in options.ablated else plan.warmup_calls, plan.verify_fraction, samples,
                          spins, fixed_order="random-order" in options.ablated, freeze="freeze" not in options.ablated)
            monitor.end(w.pid for w in current if w.pid is not None)
            result.contention = monitor.summary()
            block += 1
        for arm, w in enumerate(current):
            samples.jit_seconds[arm] += jit_seconds(w, samples.ns[arm])
        # Killed as soon as they are done: a worker's teardown (its namespace, its memory) then
        # overlaps the verification and the next pair's start.
        for w in current:
            w.kill()
        retired += current
        if rep + 1 < passes:
            current = start_workers()         # the next pair boots while this one's calls are verified
        verify_pending(workloads, samples, [label for label, _ in arms])
        retired = [w for w in retired if not w.exited()]
        if rep + 1 < passes:
            for w in current:
                w.hello()
            retired = [w for w in retired if not w.exited()]
    result.verified_calls = samples.verified
    if on_samples is not None:
        on_samples(samples)
    combos = [w.combo for w in workloads]
    if options.lance:
        samples.ns[1] = without_call_overhead(samples.ns[1], samples.overhead_ns[1], combos)
        result.call_overhead_ns = {c: rounded(float(np.median(samples.overhead_ns[1][c])), 1) for c in combos}
    summarise(result, samples, combos, paired=len(arms) == 2, trim=plan.trim)


def _profile(plan: TargetPlan, result: TrialResult, seed: int, worker: Worker,
             points: list[tuple[ProfileShape, dict[str, int], Workload]], monitor: contention.Monitor) -> None:
    """``--mode profile``: blocks over every shape's sizes with the one worker (fresh queries,
    untimed warm-up, sizes in random order, the harness's round trip measured at each), then per
    shape a fit of the median times (``summary.shape_profile``)."""
    assert plan.profile is not None
    workloads = [w for _, _, w in points]
    samples = SpeedSamples(ns=[{}], counts=[{}], jit_seconds=[0.0], overhead_ns=[{}])
    pids = [worker.pid] if worker.pid is not None else []
    for block in range(result.sessions):
        monitor.begin(pids)
        measure_block([worker], workloads, seed, block, result.queries_per_combo, plan.warmup_calls,
                      plan.verify_fraction, samples, overhead=True)
        monitor.end(pids)
    result.contention = monitor.summary()
    result.jit_seconds = rounded(jit_seconds(worker, samples.ns[0]), 3)
    worker.kill()
    verify_pending(workloads, samples, [worker.label])
    result.verified_calls = samples.verified
    for ps in {ps.shape: ps for ps, _, _ in points}.values():
        mine = [(size, w.combo) for p, size, w in points if p is ps]
        overhead = float(np.median([ns for _, combo in mine for ns in samples.overhead_ns[0][combo]]))
        result.profile[ps.shape] = shape_profile(ps, plan.profile.factors, plan.profile.fixed_label,
                                                 [size for size, _ in mine],
                                                 [float(np.median(np.concatenate(samples.ns[0][combo])))
                                                  for _, combo in mine],
                                                 overhead)


# ----------------------------------------------------------------------------- command line

def add_trial_arguments(parser: argparse.ArgumentParser, default_kernel: Path | None) -> None:
    """The options every trial front end shares (run_experiment.py and `orchestrator trial`)."""
    parser.add_argument("--kernel", type=Path, default=default_kernel,
                        help="kernel file under test (default: the target's kernels.py)")
    parser.add_argument("--against", type=Path, help="incumbent kernel: paired, interleaved speedup")
    parser.add_argument("--against-lance", action="store_true",
                        help="paired against Lance itself (pylance, its own operator timer): the vs_lance speedup")
    parser.add_argument("--mode", choices=("single", "baseline", "profile"), default="single",
                        help="without --against: single pass, baseline (3 passes), or profile (the op's time "
                             "split by stage, fitted over sizes)")
    parser.add_argument("--budget-seconds", type=float, default=DEFAULT_BUDGET_SECONDS)
    parser.add_argument("--seed", type=lambda s: int(s, 0), help="query seed (default: secret, random)")
    parser.add_argument("--replicates", type=int, help="fresh worker pairs (paired mode)")
    parser.add_argument("--sessions", type=int, help="timing blocks per worker pair (paired and profile modes)")
    parser.add_argument("--queries", type=int, help="timed queries per combo and block")


def trial_argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the shared trial options, as a message naming the flag, or None."""
    for flag in ("kernel", "against"):
        path = getattr(args, flag, None)           # front ends without --against (calibrate)
        if path is not None and not path.is_file():
            return f"--{flag} {path}: no such file (give the path of a kernels.py to measure)"
    if getattr(args, "against", None) is not None and getattr(args, "against_lance", False):
        return "--against and --against-lance: give one incumbent (a kernels.py, or Lance itself)"
    if getattr(args, "mode", None) == "profile" and (getattr(args, "against", None) or getattr(args, "against_lance", False)):
        return "--mode profile times one kernel: give no --against or --against-lance"
    if args.budget_seconds <= 0:
        return "--budget-seconds must be positive"
    for flag in ("replicates", "sessions", "queries"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            return f"--{flag} must be at least 1"
    return None


def parse_args(argv: Sequence[str] | None, target: str, default_kernel: Path) -> tuple[TrialOptions, Path | None]:
    parser = argparse.ArgumentParser(prog=f"run_experiment ({target})",
                                     description=f"Run one {target} trial: correctness, then timing.")
    add_trial_arguments(parser, default_kernel)
    parser.add_argument("--log-dir", type=Path, help="keep worker logs here")
    parser.add_argument("--unsafe-no-sandbox", action="store_true",
                        help="run kernels WITHOUT the sandbox, with your own rights (trusted kernels only)")
    parser.add_argument("--token-stdin", action="store_true",
                        help="read a per-trial token from stdin and sign the result with it (the daemon's channel)")
    parser.add_argument("--result-json", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    problem = trial_argument_problem(args)
    if problem:
        parser.error(problem)
    token = sys.stdin.readline().strip() if args.token_stdin else ""
    if args.token_stdin and not token:
        # The daemon died before it sent the token: no one would read this trial's result.
        parser.error("--token-stdin: no token on stdin (the daemon that started this trial is gone?)")
    options = TrialOptions(kernel=args.kernel.resolve(), against=args.against.resolve() if args.against else None,
                           lance=args.against_lance, mode=args.mode, budget_seconds=args.budget_seconds, seed=args.seed,
                           replicates=args.replicates, sessions=args.sessions, queries_per_combo=args.queries,
                           log_dir=args.log_dir, sandbox=not args.unsafe_no_sandbox,
                           token=token)
    return options, args.result_json


def main(plan: TargetPlan, argv: Sequence[str] | None, default_kernel: Path) -> int:
    """Entry point for a target's run_experiment.py: prints the result block, exits with its code."""
    sandbox.set_dumpable(False)          # workers of the same user can't read this process's memory
    options, result_json = parse_args(argv, plan.name, default_kernel)
    result = run_trial(plan, options)
    if result_json is not None:
        write_atomic(result_json, sign(result, options.token))
    sys.stdout.write(result.to_block())
    sys.stdout.flush()
    return result.exit_code
