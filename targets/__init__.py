"""Targets: one folder per Lance kernel, plus the shared plumbing in ``targets.harness``.

Targets are discovered, never registered: a folder ``targets/<name>/`` holding a
``run_experiment.py`` is the target ``<name>`` with ``_`` spelled ``-`` on the command line.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TARGETS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = TARGETS_DIR.parent


@dataclass(frozen=True)
class TargetInfo:
    name: str          # command-line name, e.g. "pq-l2"
    folder: Path       # targets/pq_l2
    module: str        # importable package, e.g. "targets.pq_l2"

    @property
    def kernel_path(self) -> Path:
        return self.folder / "kernels.py"

    def plan(self) -> Any:
        """The target's ``TargetPlan`` (its ``run_experiment.PLAN``), for in-process trials."""
        return importlib.import_module(f"{self.module}.run_experiment").PLAN

    @property
    def lance_runs(self) -> bool:
        """Whether Lance itself can run this target's op (the target has a Lance arm)."""
        return self.plan().lance_params is not None


def discover(targets_dir: Path = TARGETS_DIR) -> dict[str, TargetInfo]:
    found: dict[str, TargetInfo] = {}
    for folder in sorted(targets_dir.iterdir()):
        if folder.is_dir() and (folder / "run_experiment.py").is_file():
            name = folder.name.replace("_", "-")
            found[name] = TargetInfo(name, folder, f"targets.{folder.name}")
    return found


class UnknownTarget(KeyError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(name)
        self.name, self.known = name, known

    def __str__(self) -> str:
        return (f"unknown target {self.name!r}; known targets: {', '.join(self.known) or '(none)'}"
                " (run `orchestrator targets` to list them)")


def get(name: str) -> TargetInfo:
    found = discover()
    if name not in found:
        raise UnknownTarget(name, sorted(found))
    return found[name]
