"""`orchestrator fleet`: the fleet file's checks, how the daemon shares nodes between runs
(``cluster.Slots``), and what `orchestrator status` shows of a cluster. The loops themselves run
on a real Ray cluster in test_cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import cluster, fleet, report


def write(tmp_path: Path, data: Any, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_a_fleet_file_gives_each_loop_its_config(tmp_path: Path) -> None:
    write(tmp_path, {"max_attempts": 7, "gate": {"min_effect": 0.05}}, "shared.yaml")
    spec = fleet.load(write(tmp_path, {"ray": "auto", "loops": [
        {"target": "pq-l2", "model": "offline", "parallel": 3, "max_hours": 2},
        {"target": "pq-dot", "model": "claude", "config": "shared.yaml", "gate": {"worst_combo_min": 0.9}}]}))
    assert spec.address == "auto" and [s.parallel for s in spec.loops] == [3, None]
    first, second = (s.config for s in spec.loops)
    assert (first.target, first.model, first.max_hours, first.max_attempts) == ("pq-l2", "offline", 2.0, None)
    # The loop's keys override its config file's, a nested gate key by key.
    assert (second.target, second.max_attempts) == ("pq-dot", 7)
    assert (second.gate.min_effect, second.gate.worst_combo_min) == (0.05, 0.9)


@pytest.mark.parametrize("data, message", [
    ({"loops": [{"target": "pq-l2", "model": "offline"}]}, "`ray:` must name the cluster"),
    ({"ray": "auto", "loops": []}, "non-empty list `loops:`"),
    ({"ray": "auto", "loops": [{"target": "pq-l2", "model": "offline"}], "extra": 1}, "unknown key 'extra'"),
    ({"ray": "auto", "loops": [{"target": "pq-l2"}]}, "loops[0]: give both `target` and `model`"),
    ({"ray": "auto", "loops": [{"target": "pq-l2", "model": "offline", "parallel": 0}]}, "loops[0].parallel"),
    ({"ray": "auto", "loops": [{"target": "pq-l2", "model": "offline"},
                               {"target": "pq-l2", "model": "offline", "max_atempts": 3}]},
     "loops[1].max_atempts: unknown key"),
    ({"ray": "auto", "loops": [{"target": "pq-l2", "model": "offline", "config": "missing.yaml"}]},
     "loops[0].config: cannot read config"),
    ("ray: auto\nloops: [\n", "is not valid YAML"),
])
def test_a_bad_fleet_file_is_named_precisely(tmp_path: Path, data: Any, message: str) -> None:
    with pytest.raises(fleet.FleetError) as caught:
        fleet.load(write(tmp_path, data))
    assert message in str(caught.value)


def test_the_cli_refuses_a_bad_fleet_before_anything_exists(repo: Path) -> None:
    bad = write(repo.parent, {"ray": "auto", "loops": [{"target": "pq-l2", "model": "offline"},
                                                       {"target": "no-such-target", "model": "offline"}]})
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "fleet", str(bad)], cwd=repo, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "no-such-target" in proc.stderr, proc.stderr
    assert not (repo / "runs").exists() or not list((repo / "runs").rglob("run.json"))


# --- how nodes are shared ---------------------------------------------------------------------------

class Nodes:
    """Stands in for the Ray connection: the policy under test is the daemon's, not Ray's."""

    def __init__(self, *names: str) -> None:
        self.live = [cluster.Node(f"{n}-id-0000", n, 1) for n in names]
        self.finished: set[int] = set()
        self.sent = 0
        self.address = "test"
        self.stop_signal = None
        self.head = cluster.fingerprint()

    def nodes(self) -> list[cluster.Node]:
        return list(self.live)

    def submit(self, job: cluster.Job, node: cluster.Node) -> int:
        self.sent += 1
        return self.sent

    def ready(self, refs: list[int]) -> list[int]:
        return [r for r in refs if r in self.finished]

    def cancel(self, ref: int) -> None:
        self.finished.add(ref)


def ticket(run: str, n: int, urgent: bool = False) -> cluster.Ticket:
    job = cluster.Job("pq-l2", f"# {run} {n}\n", None, 60.0, 1, 1, 1, cluster.fingerprint())
    return cluster.Ticket(run, "pq-l2", f"attempts/{n:04d}/trial", job, urgent)


def test_a_free_node_goes_to_the_run_that_holds_the_fewest(tmp_path: Path) -> None:
    nodes = Nodes("n1", "n2")
    slots = cluster.Slots(nodes)   # type: ignore[arg-type]
    a = [ticket("A", i) for i in range(4)]
    for t in a:
        slots.place(t)                                   # A alone: it takes both nodes
    assert [t.node is not None for t in a] == [True, True, False, False]
    b = slots.place(ticket("B", 1))
    assert b.node is None                                # nothing free yet
    nodes.finished.add(a[0].ref)
    slots.step()
    assert b.node is not None and a[2].node is None      # B held none, A one: B's turn, though A waited longer
    nodes.finished.add(a[1].ref)
    urgent = slots.place(ticket("A", 9, urgent=True))    # placed before the step that frees a node
    slots.step()
    assert urgent.node is not None and a[2].node is None  # a keep's re-measure goes first
    # Two slots, never more than two trials placed, and a node never holds two.
    placed = [t.node.id for t in slots.placed if t.node is not None]
    assert len(placed) == len(set(placed)) == 2


def test_a_trial_no_node_takes_is_lost_not_waited_for_forever(tmp_path: Path, monkeypatch) -> None:
    nodes = Nodes()                                       # every node gone
    slots = cluster.Slots(nodes)   # type: ignore[arg-type]
    t = slots.place(ticket("A", 1))
    assert not t.done
    clock = [0.0]
    monkeypatch.setattr(cluster.time, "monotonic", lambda: t.queued_at + clock[0])
    clock[0] = t.job.budget_seconds + cluster.REPLY_GRACE_SECONDS + 1
    assert slots.step() == [t]
    with pytest.raises(cluster.NodeLost, match="no node had a free trial slot"):
        slots.reply(t)


def test_status_shows_each_daemons_nodes_once(tmp_path: Path) -> None:
    nodes = Nodes("10.0.0.5", "10.0.0.6")
    slots = cluster.Slots(nodes)   # type: ignore[arg-type]
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
        slots.watch(d)
    slots.place(ticket("run-a", 5))
    picture = json.loads((dirs[1] / "cluster.json").read_text())
    assert picture["daemon_pid"] == os.getpid()
    views = [report.RunView(d, {"run_id": d.name, "target": "pq-l2"}, report.RunHistory(()), lock_pid=os.getpid())
             for d in dirs]
    shown = report.cluster_pictures(views)
    assert len(shown) == 1, shown                        # two runs of one fleet: one picture
    assert "2 node(s), 1 of 2 trial slot(s) busy, 0 trial(s) waiting" in shown[0]
    assert "10.0.0.5 (10.0.0.5): pq-l2 run-a attempts/0005/trial" in shown[0] and "10.0.0.6 (10.0.0.6): free" in shown[0]
    # A stopped run's leftover picture is not shown, nor one another daemon wrote.
    assert report.cluster_pictures([report.RunView(dirs[0], {}, report.RunHistory(()))]) == []
    assert report.cluster_pictures([report.RunView(dirs[0], {}, report.RunHistory(()), lock_pid=1)]) == []


def test_a_node_that_offers_two_slots_still_gets_one_trial(tmp_path: Path) -> None:
    nodes = Nodes("n1")
    nodes.live = [cluster.Node("n1-id-0000", "n1", 2)]   # misconfigured: two trials would measure each other
    slots = cluster.Slots(nodes)   # type: ignore[arg-type]
    first, second = slots.place(ticket("A", 1)), slots.place(ticket("B", 1))
    assert first.node is not None and second.node is None
