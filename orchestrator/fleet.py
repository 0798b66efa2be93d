"""``orchestrator fleet FILE``: several loops (targets × models) at once on one Ray cluster.

The file names the cluster and the loops; each loop is a run of its own (its ledger, branch and
worktree, exactly as ``orchestrator loop`` would make it) and takes any key of a run config::

    ray: auto                 # or host:port, or local
    loops:
      - {target: pq-l2, model: claude, parallel: 2, max_attempts: 100}
      - {target: pq-dot, model: gpt, config: shared.yaml}

``parallel`` is the loop's attempts in flight (default: its fair share of the cluster's trial
slots); ``config`` a run config file (relative to this file) the loop's keys override. The
daemon places every trial itself and shares the nodes fairly (``cluster.Slots``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator import config as config_mod

LOOP_KEYS = ("parallel", "config")


class FleetError(ValueError):
    """A fleet file that cannot be run; the message names the key and the fix."""


@dataclass(frozen=True)
class LoopSpec:
    config: config_mod.RunConfig
    parallel: int | None                 # None: a fair share of the cluster's slots


@dataclass(frozen=True)
class Fleet:
    address: str
    loops: tuple[LoopSpec, ...]


def load(path: Path) -> Fleet:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise FleetError(f"cannot read fleet file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise FleetError(f"fleet file {path} is not valid YAML ({' '.join(str(exc).split())})") from None
    example = "ray: auto\nloops:\n  - {target: pq-l2, model: claude, parallel: 2}"
    if not isinstance(data, dict) or not isinstance(data.get("loops"), list) or not data["loops"]:
        raise FleetError(f"fleet file {path}: expected `ray:` and a non-empty list `loops:`, e.g.\n{example}")
    unknown = sorted(set(data) - {"ray", "loops"})
    if unknown:
        raise FleetError(f"fleet file {path}: unknown key {unknown[0]!r} (known: ray, loops)")
    address = data.get("ray")
    if not isinstance(address, str) or not address:
        raise FleetError(f"fleet file {path}: `ray:` must name the cluster (host:port, auto or local)")
    return Fleet(address, tuple(_loop(path, i, entry) for i, entry in enumerate(data["loops"])))


def _loop(path: Path, i: int, entry: Any) -> LoopSpec:
    where = f"fleet file {path}: loops[{i}]"
    if not isinstance(entry, dict):
        raise FleetError(f"{where}: expected a mapping such as {{target: pq-l2, model: claude}}")
    if "target" not in entry or "model" not in entry:
        raise FleetError(f"{where}: give both `target` and `model`")
    parallel = entry.get("parallel")
    if parallel is not None and (isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1):
        raise FleetError(f"{where}.parallel: must be a whole number of at least 1, got {parallel!r}")
    config_file = entry.get("config")
    if config_file is not None and not isinstance(config_file, str):
        raise FleetError(f"{where}.config: must be a file name, got {config_file!r}")
    try:
        base = config_mod.load((path.parent / config_file) if config_file else None, {})
    except config_mod.ConfigError as exc:
        raise FleetError(f"{where}.config: {exc}") from None
    try:
        config = config_mod.overlay(base, {k: v for k, v in entry.items() if k not in LOOP_KEYS})
    except config_mod.ConfigError as exc:
        raise FleetError(f"{where}.{exc}") from None
    return LoopSpec(config, parallel)


def fair_share(slots: int, loops: int) -> int:
    """Attempts in flight per loop when the file does not say: the cluster's slots, shared."""
    return max(1, -(-slots // loops))
