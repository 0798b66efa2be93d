"""The ``orchestrator`` command line."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import targets
from orchestrator import trial
from targets.harness.resources import DEFAULT_BUDGET_SECONDS

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input: printed as one clear message, exit code 2, nothing written."""


def _target(name: str) -> targets.TargetInfo:
    try:
        return targets.get(name)
    except targets.UnknownTarget as exc:
        raise UsageError(str(exc)) from None


def _existing_file(path: Path | None, flag: str) -> Path | None:
    if path is None:
        return None
    if not path.is_file():
        raise UsageError(f"{flag} {path}: no such file (give the path of a kernels.py to measure)")
    return path.resolve()


def cmd_trial(args: argparse.Namespace) -> int:
    info = _target(args.target)
    kernel = _existing_file(args.kernel, "--kernel") or info.kernel_path
    against = _existing_file(args.against, "--against")
    if args.budget_seconds <= 0:
        raise UsageError("--budget-seconds must be positive")
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="lar-trial-"))
    for flag in ("replicates", "sessions", "queries"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UsageError(f"--{flag} must be at least 1")
    request = trial.TrialRequest(target=info, kernel=kernel, against=against, mode=args.mode,
                                 budget_seconds=args.budget_seconds, seed=args.seed,
                                 replicates=args.replicates, sessions=args.sessions,
                                 queries_per_combo=args.queries)
    outcome = trial.run(request, out_dir)
    if outcome.result is None:
        print(f"trial failed without a result: {outcome.error}", file=sys.stderr)
        return outcome.exit_code
    sys.stdout.write(outcome.result.to_json() if args.json else outcome.result.to_block())
    if outcome.result.failure and not args.json:
        print(f"\n{outcome.result.failure_kind}: {outcome.result.failure}", file=sys.stderr)
    return outcome.exit_code


def _capsule_status(name: str) -> str:
    capsule = targets.PROJECT_ROOT / "docs" / "targets" / f"{name}.md"
    try:
        for line in capsule.read_text().splitlines():
            if line.lower().startswith("status:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return "no capsule"
    return "no status line in capsule"


def cmd_targets(args: argparse.Namespace) -> int:
    found = targets.discover()
    width = max((len(n) for n in found), default=6)
    for name, info in found.items():
        print(f"{name:<{width}}  {info.folder.relative_to(targets.PROJECT_ROOT)}  {_capsule_status(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator",
                                     description="LLM-driven, measurement-gated optimisation of Lance kernels.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("trial", help="measure a kernel: correctness, then (paired) timing")
    p.add_argument("--target", required=True, help="target name, e.g. pq-l2 (see `orchestrator targets`)")
    p.add_argument("--kernel", type=Path, help="kernel under test (default: the target's kernels.py)")
    p.add_argument("--against", type=Path, help="incumbent kernel: paired, interleaved speedup")
    p.add_argument("--mode", choices=("single", "baseline"), default="single",
                   help="without --against: single pass, or baseline (3 passes)")
    p.add_argument("--budget-seconds", type=float, default=DEFAULT_BUDGET_SECONDS)
    p.add_argument("--seed", type=lambda s: int(s, 0), help="query seed (default: secret, random)")
    p.add_argument("--replicates", type=int, help="fresh worker pairs (paired mode)")
    p.add_argument("--sessions", type=int, help="timing blocks per worker pair (paired mode)")
    p.add_argument("--queries", type=int, help="timed queries per combo and block")
    p.add_argument("--out-dir", type=Path, help="keep the trial's logs and result.json here")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_trial)

    p = sub.add_parser("targets", help="list the targets and their status")
    p.set_defaults(func=cmd_targets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
