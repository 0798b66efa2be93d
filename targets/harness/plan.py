"""What a target gives the runner and how a trial is asked for: plain data, no base class.

A target's ``run_experiment.py`` builds a ``TargetPlan`` of ``Case``s and ``Workload``s from these
types; front ends (``run_experiment.py``, ``orchestrator trial``, calibrate) describe one trial
with ``TrialOptions``. Nothing here runs anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from targets.harness.resources import DEFAULT_BUDGET_SECONDS


@dataclass(frozen=True)
class Case:
    """One correctness case: inputs to build a kernel, then one request per call."""

    name: str
    params: dict[str, Any]
    arrays: dict[str, np.ndarray]
    calls: list[dict[str, np.ndarray]]


@dataclass(frozen=True)
class Workload:
    """One speed combo (shape x distribution)."""

    shape: str
    distribution: str
    params: dict[str, Any]
    arrays: dict[str, np.ndarray]
    queries: Callable[[int, int], list[dict[str, np.ndarray]]]        # (seed, count) -> calls
    # call -> the check of one arm's outputs for it (failure message or None): the oracle runs
    # once per call, the runner applies the check to every arm and names the arm that fails.
    verify: Callable[[dict[str, np.ndarray]], Callable[[dict[str, np.ndarray]], str | None]]

    @property
    def combo(self) -> str:
        return f"{self.shape}/{self.distribution}"


@dataclass(frozen=True)
class ProfileShape:
    """One shape's profile: the op timed at every combination of its factors' values."""

    shape: str
    distribution: str                                  # the speed distribution it is profiled on
    values: dict[str, tuple[int, ...]]                 # factor -> the sizes it is timed at
    at: dict[str, int]                                 # the speed workload's own size: shares are taken there
    # A size (factor -> value) -> this shape's workload at it, named as the shape (not the size).
    workload: Callable[[dict[str, int]], Workload]


def size_label(size: dict[str, int]) -> str:
    """A profile size as text, e.g. ``num_vectors=5000,k=10``: its combo's and its point's name."""
    return ",".join(f"{factor}={value}" for factor, value in size.items())


@dataclass(frozen=True)
class ProfileSpec:
    """``--mode profile``: the op's time split by stage, measured from outside by the slope method.

    The kernel owns the whole op and may fuse its stages, so nothing inside it is timed: the same
    op is timed at several sizes of what each stage scales with, and per shape the runner fits
    ``t = fixed + sum(slope_f * f)`` by least squares. ``fixed`` is the intercept less the harness's
    round trip of an empty request (reported on its own), each slope is one stage's cost per unit.
    """

    factors: dict[str, str]                   # factor -> the label of its slope's stage
    fixed_label: str                          # the intercept's stage, e.g. "distance table + fixed"
    shapes: Callable[[], list[ProfileShape]]  # built on the runner's side while the worker boots
    # Timed queries per size and block; the fit uses the median over all blocks. Each block is a
    # pass over every size in random order, so a burst of other work spoils part of a size's
    # samples, not all of them.
    queries_per_point: int = 11
    blocks: int = 3


@dataclass(frozen=True)
class TargetPlan:
    """Everything the runner needs from a target: plain data and functions, no base class."""

    name: str
    ops_module: str                                        # imported by workers: build(), OPS
    cases: Callable[[int], list[Case]]                     # trial seed -> battery + fresh cases
    check: Callable[[Case, int, dict[str, np.ndarray]], str | None]
    workloads: Callable[[], list[Workload]]
    queries_per_combo: int = 8                 # per block in paired mode
    single_queries_per_combo: int = 32         # per pass in single/baseline mode (absolute times)
    warmup_calls: int = 2
    replicates: int = 8                        # fresh worker pairs (paired mode)
    sessions: int = 2                          # timing blocks per pair, each over every combo
    verify_fraction: float = 0.25              # share of timed calls re-checked against the oracle
    # Trimming (20%, within and across blocks) halved the A/A spread: see docs/robustness.md.
    trim: float = 0.2
    # Lance itself as an arm (``--against-lance``): the Lance ops module's extra setup params
    # (e.g. its metric), or None where Lance cannot run this target's op. The module (``build`` +
    # ``OPS``, run unsandboxed: trusted code) returns Lance's own time per call as ``lance_ns``.
    lance_params: dict[str, Any] | None = None
    lance_ops: str = "targets.harness.lance_arm"          # the PQ search through pylance
    lance_timer: tuple[str, str] = ("ANNSubIndex", "index_search_time")   # (operator, metric) it reports
    # ``--mode profile``: how this target's op splits by stage, or None where it is not declared.
    profile: ProfileSpec | None = None


# What `orchestrator calibrate --ablate` can switch off. "pinning" also ends the runner's busy-wait,
# which needs a core of its own; "random-order" runs the incumbent first everywhere (start,
# warm-up, every query pair) and the combos in their listed order.
# "freeze" lets the idle arm run while the other is timed (what a kernel with a background thread
# or timer then does to its rival is what the red-team suite shows).
ABLATIONS = ("pinning", "warmup", "random-order", "freeze")


@dataclass(frozen=True)
class TrialOptions:
    kernel: Path
    against: Path | None = None
    mode: str = "single"                                   # single | baseline | paired | profile
    lance: bool = False                                    # paired against Lance itself (vs_lance)
    budget_seconds: float = DEFAULT_BUDGET_SECONDS
    seed: int | None = None                                # per-trial query seed; secret if None
    sandbox: bool = True                                   # False only by an explicit --unsafe-no-sandbox
    token: str = ""                                        # keys the result's MAC: proves who wrote it
    replicates: int | None = None
    sessions: int | None = None
    queries_per_combo: int | None = None
    log_dir: Path | None = None
    # Calibration only (`orchestrator calibrate` runs trials in-process): the incumbent's worker
    # spins for this fraction of each timed call's own duration. No command line reaches it, and
    # the gate refuses any result that carries it.
    injected_slowdown: float = 0.0
    # Calibration only, likewise: measurement features (ABLATIONS) switched off for this trial, so
    # calibrate can show what each one buys. The gate refuses any result that carries one.
    ablated: tuple[str, ...] = ()
