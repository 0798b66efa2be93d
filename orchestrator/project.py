"""Where the project is: the checkout whose code runs, and the places in it the daemon reads and
writes (``runs/``, ``HARNESS.md``, ``prompts/``, ``docs/``).

The installed code decides: targets, the harness and the kernels are read from it, so its runs
belong beside it. Run inside *another* checkout of this project, a command would read one
checkout's kernels and write the other's ``runs/`` and branches; ``check_cwd`` refuses that.
"""

from __future__ import annotations

from pathlib import Path

from targets import PROJECT_ROOT

ROOT = PROJECT_ROOT
RUNS = ROOT / "runs"
HARNESS = ROOT / "HARNESS.md"
PROMPTS = ROOT / "prompts"
CAPSULES = ROOT / "docs" / "targets"


class WrongCheckout(Exception):
    """The working directory is inside a checkout other than the one whose code is running."""


def runs_dir(target: str) -> Path:
    """Where a target's runs live: ``runs/<target>/<run-id>/``."""
    return RUNS / target


def checkout_of(path: Path) -> Path | None:
    """The checkout of this project that holds ``path`` (as git finds its repository), or None."""
    for folder in (path, *path.parents):
        if (folder / "HARNESS.md").is_file() and (folder / "orchestrator" / "__init__.py").is_file() \
                and (folder / "targets" / "__init__.py").is_file():
            return folder
    return None


def check_cwd(cwd: Path | None = None) -> None:
    """Refuse to run from inside another checkout than the installed one (a run's own worktree
    under ``runs/`` is part of this one)."""
    here = checkout_of((cwd or Path.cwd()).resolve())
    root = ROOT.resolve()
    if here is None or here == root or here.is_relative_to(root / "runs"):
        return
    raise WrongCheckout(
        f"you are in {here}, a checkout of lance-autoresearch, but this `orchestrator` runs the code of {root} "
        f"(where it was installed from), so its runs and branches would go there. Run `python -m orchestrator ...` "
        f"from {here}, install that checkout (`pip install -e {here}`), or cd to {root}")
