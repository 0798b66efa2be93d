"""The ``orchestrator`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import targets
from orchestrator import config as config_mod
from orchestrator import ledger as ledger_mod
from orchestrator import calibrate as calibrate_mod
from orchestrator import compare
from orchestrator import export as export_mod
from orchestrator import gate, loop, plot, progress, project, report, scaffold, trial, workspace
from orchestrator import prompt as prompt_mod
from orchestrator import provider as provider_mod
from targets.harness import runner, sandbox
from targets.harness.files import write_atomic
from targets.harness.machine import cpu_model
from targets.harness.plan import ABLATIONS

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input: printed as one clear message, exit code 2, nothing written."""


UNSAFE_HELP = "run kernels WITHOUT the sandbox, with your own rights (recorded in the run; trusted kernels only)"


def _sandbox(unsafe: bool) -> sandbox.Sandbox:
    """The sandbox kernels will run in; no sandbox is an error unless the user chose to go without."""
    box = sandbox.sandbox_for(unsafe)
    if not box.active and not box.off:
        raise UsageError(f"no sandbox for untrusted kernels on this machine: {box.unavailable}")
    return box


def _target(name: str) -> targets.TargetInfo:
    try:
        return targets.get(name)
    except targets.UnknownTarget as exc:
        raise UsageError(str(exc)) from None


def cmd_trial(args: argparse.Namespace) -> int:
    sandbox.set_dumpable(False)
    info = _target(args.target)
    problem = runner.trial_argument_problem(args)
    if problem:
        raise UsageError(problem)
    _sandbox(args.unsafe_no_sandbox)
    if args.against_lance and not info.lance_runs:
        raise UsageError(f"--against-lance: Lance cannot run {info.name}'s op here (no Lance arm for this "
                         "target); compare with a kernels.py via --against")
    kernel = (args.kernel or info.kernel_path).resolve()
    against = args.against.resolve() if args.against else None
    try:
        gate_config = config_mod.load(args.config, {}).gate
    except config_mod.ConfigError as exc:
        raise UsageError(str(exc)) from None
    request = trial.TrialRequest(target=info, kernel=kernel, against=against, against_lance=args.against_lance,
                                 mode=args.mode,
                                 budget_seconds=args.budget_seconds, seed=args.seed,
                                 replicates=args.replicates, sessions=args.sessions,
                                 queries_per_combo=args.queries, unsafe_no_sandbox=args.unsafe_no_sandbox)
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="lar-trial-"))
    outcome = trial.run(request, out_dir)
    print(f"trial logs and result.json: {out_dir}", file=sys.stderr)     # stderr: --json stays parseable
    # Paired trials are judged by the daemon's own gate, so a kernel can be judged by hand exactly
    # as the loop would judge it.
    verdict = (gate.judge(outcome.result, gate_config, args.budget_seconds, outcome.error or "", outcome.exit_code)
               if against is not None else None)
    if args.json:
        data = json.loads(outcome.result.to_json()) if outcome.result else {"exit_code": outcome.exit_code,
                                                                            "error": outcome.error}
        if verdict is not None:
            data.update(verdict="keep" if verdict.keep else "discard", reasons=verdict.reasons)
        print(json.dumps(data, indent=2))
        return outcome.exit_code
    if outcome.result is None:
        print(f"trial failed without a result: {outcome.error}", file=sys.stderr)
    else:
        sys.stdout.write(outcome.result.to_block())
        if outcome.result.failure:
            print(f"\n{outcome.result.failure_kind}: {outcome.result.failure}", file=sys.stderr)
    if args.against_lance and outcome.result is not None and outcome.result.speedup_geomean is not None:
        lo, hi = outcome.result.speedup_ci_90pct or (float("nan"), float("nan"))
        print(f"vs Lance: {outcome.result.speedup_geomean:.2f}x [{lo:.2f}, {hi:.2f}] (> 1: the kernel beats "
              f"Lance; {outcome.result.anchor})")
    if verdict is not None:
        print(f"verdict: {'keep' if verdict.keep else 'discard'}")
        for reason in verdict.reasons:
            print(f"  {reason}")
    return outcome.exit_code


def _provider(config: config_mod.RunConfig, info: targets.TargetInfo) -> provider_mod.Provider:
    try:
        return provider_mod.from_config(config, info.folder)
    except provider_mod.ModelError as exc:
        raise UsageError(str(exc)) from None


def cmd_loop(args: argparse.Namespace) -> int:
    overrides = {k: getattr(args, k) for k in ("target", "model", "base_url", "max_attempts", "max_hours", "max_cost_usd",
                                                 "stop_after_rejects", "repair_turns", "trial_budget_seconds",
                                                 "min_effect", "unsafe_no_sandbox", "vs_lance")}
    resuming = args.resume is not None
    run_dir = None
    try:
        config = config_mod.load(args.config, overrides)
        if resuming:
            # A resumed run keeps its stored config unless --config or a flag changes it.
            name = _target(config.target).name
            run_dir = report.find_run(args.resume, name) if args.resume else report.latest_run(name)
            stored = ledger_mod.Ledger(run_dir).run_info()["config"]
            config = config_mod.load(args.config, overrides, config_mod.from_dict(stored))
    except (config_mod.ConfigError, ledger_mod.LedgerError, report.ReportError) as exc:
        raise UsageError(str(exc)) from None
    ready = _ready(config, resuming, on_cluster=args.ray is not None)
    ray = _cluster(args)
    run = _open(ready, run_dir)
    if ray is not None:
        from orchestrator import cluster, parallel
        run.slots = cluster.Slots(ray)
        run.slots.watch(run.ledger.dir)
        width = args.parallel or ray.slot_count()
        print(f"cluster {args.ray}: {ray.slot_count()} trial slot(s); {width} attempt(s) in flight", flush=True)
        try:
            return parallel.run_parallel(run, width)
        finally:
            ray.shutdown()
    run.status = progress.LiveStatus(run.ledger.dir, progress.Status(run.run_id, ready.info.name, ready.label,
                                                                      sandbox=ready.box.label))
    run.log = run.status.log
    return loop.run_loop(run)


@dataclass(frozen=True)
class Ready:
    """A run that passed every check that can be made before it exists."""

    config: config_mod.RunConfig
    info: targets.TargetInfo
    box: sandbox.Sandbox
    provider: provider_mod.Provider

    @property
    def label(self) -> str:
        return "offline playbook (no LLM)" if self.provider.name == "offline" else self.provider.model


def _ready(config: config_mod.RunConfig, resuming: bool, on_cluster: bool = False) -> Ready:
    """Every check before a run exists: a refusal leaves nothing behind."""
    if on_cluster and config.unsafe_no_sandbox:
        raise UsageError("--unsafe-no-sandbox is for this machine only: measurement nodes always run the sandbox")
    info = _target(config.target)
    try:
        repo = workspace.find_repo(project.ROOT)
    except workspace.WorkspaceError as exc:
        raise UsageError(str(exc)) from None
    kernel_rel = workspace.relative_kernel(repo, info.kernel_path)
    if not resuming and repo.head.is_valid() and not repo.git.ls_tree("HEAD", "--", kernel_rel):
        raise UsageError(f"{kernel_rel} is not committed, and a run branches from HEAD; commit the target "
                         f"first (git add targets/{info.folder.name} && git commit)")
    try:                                            # a broken template is refused before the run exists
        loop.check_prompt(info)
    except (prompt_mod.PromptError, OSError) as exc:
        raise UsageError(f"the prompt cannot be built: {exc}") from None
    return Ready(config, info, _sandbox(config.unsafe_no_sandbox), _provider(config, info))


def _open(ready: Ready, run_dir: Path | None, prefix: str = "") -> loop.Run:
    """The run started (or resumed from ``run_dir``) and announced."""
    try:
        run = (loop.resume(run_dir, ready.config, ready.info, ready.provider) if run_dir is not None
               else loop.start(ready.config, ready.info, ready.provider))
    except (ledger_mod.LedgerError, workspace.WorkspaceError) as exc:     # the lock is released
        raise UsageError(f"cannot {'resume' if run_dir is not None else 'start'} the run: {exc}") from None
    sandbox.set_dumpable(False)   # the API key in this process's environment stays out of same-user reach
    run.ledger.update_run_info(sandbox=ready.box.label)
    if ready.box.off:
        run.warnings.append("kernels run WITHOUT the sandbox (--unsafe-no-sandbox); see docs/security.md")
    print(f"{prefix}run {run.run_id}: target {ready.info.name}, model {ready.label}, branch {run.ws.branch}, "
          f"sandbox {ready.box.label}", flush=True)
    for warning in run.warnings:
        print(f"{prefix}warning: {warning}", file=sys.stderr, flush=True)
    return run


def _cluster(args: argparse.Namespace) -> Any:
    """With --ray, the connected cluster (before the run exists: a refusal leaves nothing behind)."""
    if args.ray is None:
        if args.parallel is not None:
            raise UsageError("--parallel runs attempts side by side on a cluster: give --ray ADDRESS too")
        return None
    if args.parallel is not None and args.parallel < 1:
        raise UsageError(f"--parallel {args.parallel}: must be at least 1")
    return _connect(args.ray)


def _connect(address: str) -> Any:
    from orchestrator import cluster
    try:
        return cluster.Cluster(address)
    except cluster.ClusterError as exc:
        raise UsageError(str(exc)) from None


def _prefixed(prefix: str) -> Callable[[str], None]:
    """A fleet loop's log: every line says which loop it is."""
    def log(text: str) -> None:
        print(prefix + text.replace("\n", "\n" + prefix), flush=True)
    return log


def cmd_fleet(args: argparse.Namespace) -> int:
    from orchestrator import cluster, fleet, parallel
    try:
        spec = fleet.load(args.file)
    except fleet.FleetError as exc:
        raise UsageError(str(exc)) from None
    ready = [_ready(loop_spec.config, resuming=False, on_cluster=True) for loop_spec in spec.loops]
    ray = _connect(spec.address)
    slots = cluster.Slots(ray)
    runs: list[parallel.RunInFlight] = []
    try:
        for i, (loop_spec, r) in enumerate(zip(spec.loops, ready)):
            prefix = f"[{i + 1}:{r.info.name}] "
            try:
                run = _open(r, None, prefix)
            except UsageError:
                for opened in runs:
                    opened.ending = "another loop of the fleet could not start"
                    opened.close()
                raise
            run.slots = slots
            slots.watch(run.ledger.dir)
            run.log = _prefixed(prefix)
            runs.append(parallel.RunInFlight(run, loop_spec.parallel or fleet.fair_share(ray.slot_count(),
                                                                                          len(spec.loops))))
        print(f"fleet on {spec.address}: {ray.slot_count()} trial slot(s), {len(runs)} loop(s), "
              f"{', '.join(str(r.parallel) for r in runs)} attempt(s) in flight", flush=True)
        codes = parallel.drive(runs)
    finally:
        ray.shutdown()
    return max(codes)


def _effects(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--effects {text!r}: expected comma-separated fractions, e.g. 0,0.02,0.05,0.10") from None


def cmd_calibrate(args: argparse.Namespace) -> int:
    sandbox.set_dumpable(False)
    info = _target(args.target)
    try:
        gate_config = config_mod.load(args.config, {"min_effect": args.min_effect}).gate
    except config_mod.ConfigError as exc:
        raise UsageError(str(exc)) from None
    problem = runner.trial_argument_problem(args)
    if problem:
        raise UsageError(problem)
    box = _sandbox(args.unsafe_no_sandbox)
    options = calibrate_mod.CalibrationOptions(
        target=info, kernel=(args.kernel or info.kernel_path).resolve(), trials=args.trials,
        effects=_effects(args.effects), replicates=args.replicates, sessions=args.sessions,
        queries_per_combo=args.queries, budget_seconds=args.budget_seconds, gate=gate_config,
        ablations=tuple(a.strip() for a in args.ablate.split(",") if a.strip()), sandbox=box.active)
    problem = calibrate_mod.problem(options)
    if problem:
        raise UsageError(problem)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = project.runs_dir(info.name) / "calibration" / stamp
    total = options.trials * len(options.effects) * len(options.variants)
    print(f"calibrating {info.name}: {total} paired trials of {options.kernel.name} against itself, "
          f"effects {', '.join(f'{e:g}' for e in options.effects)}, variants {', '.join(options.variants)}; "
          f"writing {out_dir}", flush=True)
    machine = f"{cpu_model()}, {os.cpu_count()} cpus, sandbox {box.label}"
    try:
        if sys.stdout.isatty():
            with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()) as bar:
                task = bar.add_task("trials", total=total)

                def show(done: int, _: int, rec: calibrate_mod.TrialRecord) -> None:
                    bar.update(task, completed=done, description=_trial_line(rec))
                data = calibrate_mod.calibrate(options, out_dir, machine, show)
        else:
            data = calibrate_mod.calibrate(options, out_dir, machine, lambda done, n, rec: print(
                f"[{done}/{n}] {_trial_line(rec)}", flush=True))
    except KeyboardInterrupt:
        print(f"\ninterrupted; partial results in {out_dir}", file=sys.stderr)
        return 130
    print((out_dir / "summary.md").read_text())
    print(f"written: {out_dir / 'calibration.json'} and summary.md")
    return 0 if all(g["met"] for g in data["summary"]["goals"]) else 1


def _trial_line(rec: calibrate_mod.TrialRecord) -> str:
    what = f"effect {rec.effect:g}" + ("" if rec.variant == calibrate_mod.FULL else f", no {rec.variant}")
    est = rec.estimates.get("paired")
    if est is None:
        return f"{what}: failed ({rec.failure and rec.failure.splitlines()[0]})"
    return f"{what}: speedup {est.speedup:.4f} [{est.lo:.4f}, {est.hi:.4f}] in {rec.seconds:.1f} s"


def cmd_status(args: argparse.Namespace) -> int:
    if args.target:
        _target(args.target)
    print(report.status_table(report.all_runs(args.target)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    info = _target(args.target)
    if args.compare:
        if args.run:
            raise UsageError("--compare compares every run of the target; leave out --run")
        views = report.all_runs(info.name)
        if not views:
            raise UsageError(f"no runs of {info.name} under {report.runs_root()} to compare; start one with "
                             f"`orchestrator loop --target {info.name}`")
        print(compare.comparison_table(info.name, compare.compare_runs(views)))
        return 0
    try:
        run_dir = report.find_run(args.run, info.name) if args.run else report.latest_run(info.name)
        view = report.load_run(run_dir)
    except report.ReportError as exc:
        raise UsageError(str(exc)) from None
    png = plot.render(report.progress_points(view.history), f"{view.target} run {view.run_id} ({view.state})",
                      view.history.lance_level)
    comparison = compare.comparison_html(info.name, compare.compare_runs(report.all_runs(info.name)), view.run_id)
    write_atomic(run_dir / "progress.png", png)
    write_atomic(run_dir / "report.html", report.html_report(view, png, comparison))
    t = report.totals(view)
    print(f"run {view.run_id} ({view.state}): {t['attempts']} attempts, {t['keeps']} kept"
          + (f", {t['in_flight']} in flight" if t["in_flight"] else ""))
    print(f"written: {run_dir / 'report.html'}\n         {run_dir / 'progress.png'}")
    return 0


def cmd_candidates(args: argparse.Namespace) -> int:
    if args.target:
        _target(args.target)
    if args.min_speedup is not None and args.min_speedup <= 0:
        raise UsageError("--min-speedup must be positive, e.g. 1.10 for a 10% speedup")
    print(report.candidates_table(report.candidates(report.all_runs(args.target), args.min_speedup), args.min_speedup))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    try:
        out, check = export_mod.export(args.ref, args.out, verify=not args.no_verify,
                                       budget_seconds=args.budget_seconds)
    except report.ReportError as exc:
        raise UsageError(str(exc)) from None
    print(f"exported to {out}: kernels.py, kernels.patch, logs/, progress.png, UPSTREAM.md")
    print(f"re-verification: {check.summary}")
    return 0 if check.reproduces or args.no_verify else 1


def cmd_new_target(args: argparse.Namespace) -> int:
    try:
        created = scaffold.create(args.name, project.ROOT)
    except scaffold.ScaffoldError as exc:
        raise UsageError(str(exc)) from None
    print(f"created target {args.name}:")
    for path in created:
        print(f"  {path.relative_to(project.ROOT)}")
    module = args.name.replace("-", "_")
    print(f"\nIt runs now: `orchestrator trial --target {args.name}` and `python -m pytest tests/test_{module}.py`; "
          f"commit it, then `orchestrator loop --target {args.name} --model offline` (a run branches from HEAD).\n")
    print(scaffold.checklist(project.ROOT))
    return 0


def _capsule_status(name: str) -> str:
    capsule = project.CAPSULES / f"{name}.md"
    try:
        lines = capsule.read_text().splitlines()
    except OSError:
        return "no capsule"
    for i, line in enumerate(lines):
        if line.lower().startswith("status:"):
            paragraph = [line.split(":", 1)[1].strip()]        # wrapped status lines run to a blank line
            for more in lines[i + 1:]:
                if not more.strip() or more.startswith("#"):
                    break
                paragraph.append(more.strip())
            return " ".join(paragraph)
    return "no status line in capsule"


def cmd_targets(args: argparse.Namespace) -> int:
    found = targets.discover()
    width = max((len(n) for n in found), default=6)
    for name, info in found.items():
        print(f"{name:<{width}}  {info.folder.relative_to(project.ROOT)}  {_capsule_status(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator",
                                     description="LLM-driven, measurement-gated optimisation of Lance kernels.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("trial", help="measure a kernel: correctness, then (paired) timing")
    p.add_argument("--target", required=True, help="target name, e.g. pq-l2 (see `orchestrator targets`)")
    runner.add_trial_arguments(p, None)
    p.add_argument("--config", type=Path, help="run config whose gate thresholds judge a paired trial")
    p.add_argument("--out-dir", type=Path, help="keep the trial's logs and result.json here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--unsafe-no-sandbox", action="store_true", help=UNSAFE_HELP)
    p.set_defaults(func=cmd_trial)

    p = sub.add_parser("loop", help="run the autoresearch loop until a budget, the playbook or a signal stops it")
    p.add_argument("--target", help="target name, e.g. pq-l2")
    p.add_argument("--model", help="claude, gpt, anthropic:<id>, openai:<id>, openai-compatible:<id>, "
                                   "offline (the target's playbook, no LLM) or script:FILE")
    p.add_argument("--base-url", help="API base URL (e.g. a local vLLM/Ollama server for openai-compatible:<id>)")
    p.add_argument("--config", type=Path, help="YAML file with any of the options below")
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--max-hours", type=float)
    p.add_argument("--max-cost-usd", type=float)
    p.add_argument("--stop-after-rejects", type=int, help="stop after N discards in a row")
    p.add_argument("--repair-turns", type=int, help="turns to fix a reply that does not apply (default 2)")
    p.add_argument("--trial-budget-seconds", type=float)
    p.add_argument("--min-effect", type=float, help="keep only if the CI lower bound beats 1 + this (0.01)")
    p.add_argument("--resume", nargs="?", const="", metavar="RUN_ID",
                   help="continue a run (default: the target's latest)")
    p.add_argument("--unsafe-no-sandbox", action="store_true", default=None, help=UNSAFE_HELP)
    p.add_argument("--no-vs-lance", dest="vs_lance", action="store_false", default=None,
                   help="do not measure keeps against Lance itself (faster; no upstream-candidate verdicts)")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="run trials on the measurement nodes of a Ray cluster (an address, auto, or local; "
                        "see docs/scaling.md)")
    p.add_argument("--parallel", type=int, default=None,
                   help="with --ray: attempts in flight at once (default: the cluster's trial slots)")
    p.set_defaults(func=cmd_loop)

    p = sub.add_parser("fleet", help="several loops (targets x models) at once on one Ray cluster, sharing its nodes")
    p.add_argument("file", type=Path, help="fleet YAML: `ray: ADDRESS` and `loops:` (see docs/scaling.md)")
    p.set_defaults(func=cmd_fleet)

    p = sub.add_parser("calibrate", help="measure the gate's false-keep rate and detection power on this machine")
    p.add_argument("--target", required=True, help="target name, e.g. pq-l2")
    p.add_argument("--kernel", type=Path, help="kernel to measure against itself (default: the target's kernels.py)")
    p.add_argument("--trials", type=int, default=100, help="paired trials per effect size (default 100)")
    p.add_argument("--effects", default="0,0.02,0.05,0.10",
                   help="injected slowdowns of the incumbent arm; 0 is the A/A case (default 0,0.02,0.05,0.10)")
    p.add_argument("--min-effect", type=float, help="the gate's min_effect to judge by (default: config or 0.01)")
    p.add_argument("--config", type=Path, help="run config whose gate settings to judge by")
    p.add_argument("--replicates", type=int, help="fresh worker pairs per trial (default: the target's)")
    p.add_argument("--sessions", type=int, help="timing blocks per worker pair")
    p.add_argument("--queries", type=int, help="timed queries per combo and block")
    p.add_argument("--budget-seconds", type=float, default=120.0)
    p.add_argument("--ablate", default="", metavar="FEATURES",
                   help=f"also run every effect with one of these switched off, to show what it buys: "
                        f"{','.join(ABLATIONS)}")
    p.add_argument("--unsafe-no-sandbox", action="store_true", help=UNSAFE_HELP)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("status", help="list runs: running or not, attempt and phase, keeps, best, cost")
    p.add_argument("--target", help="only this target's runs")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("report", help="write report.html and progress.png into a run's directory")
    p.add_argument("--target", required=True, help="target name, e.g. pq-l2")
    p.add_argument("--run", help="run id (default: the target's latest run)")
    p.add_argument("--compare", action="store_true",
                   help="print the target's runs side by side instead: what changed in program.md and the prompts "
                        "since the run before, keep rate, tokens, cost per keep, best speedup")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("candidates", help="upstream candidates across runs: keeps that beat Lance itself")
    p.add_argument("--target", help="only this target's runs")
    p.add_argument("--min-speedup", type=float,
                   help="list keeps by speedup over their run's baseline instead (e.g. 1.10), Lance or not")
    p.set_defaults(func=cmd_candidates)

    p = sub.add_parser("export", help="package a kept kernel for upstream: patch, logs, plot, checklist")
    p.add_argument("ref", metavar="RUN_ID[:ATTEMPT]", help="the run, and the kept attempt (default: its best)")
    p.add_argument("--out", type=Path, required=True, help="a new or empty directory")
    p.add_argument("--no-verify", action="store_true", help="skip the fresh trial against the baseline")
    p.add_argument("--budget-seconds", type=float, default=120.0, help="time budget of the re-verification trial")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("new-target", help="create a working target folder to fill in (see docs/adding-a-target.md)")
    p.add_argument("name", help="the new target's name, e.g. bm25 (the folder is targets/<name with _ for ->)")
    p.set_defaults(func=cmd_new_target)

    p = sub.add_parser("targets", help="list the targets and their status")
    p.set_defaults(func=cmd_targets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        try:
            project.check_cwd()
        except project.WrongCheckout as exc:
            raise UsageError(str(exc)) from None
        return args.func(args)
    except UsageError as exc:
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
