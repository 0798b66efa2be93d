"""Where trials run with ``--ray``: the measurement nodes of a Ray cluster, one trial per node.

Each measurement node advertises the custom resource ``trial_slot`` exactly once (``ray start
--resources '{"trial_slot": 1}'``) and every trial asks for one, so two trials never share a
machine. A trial travels as the kernel texts and the trial's options; the node runs the same
sandboxed trial this machine would (``trial.run``) from its own checkout of this project and sends
back the runner's result and the trial's log files. A node whose project files or interpreter
differ from the head's refuses the trial, naming the difference. Ray is imported here only, and
only when a run asks for a cluster.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from targets import PROJECT_ROOT
from targets.harness import contention, process
from targets.harness.files import write_atomic
from targets.harness.result import EXIT_INTERNAL, ResultParseError, parse_json

SLOT = "trial_slot"
# The files that decide what a trial measures and how: the harness, every target, the daemon.
FINGERPRINTED = ("targets", "orchestrator")
MAX_LOG_BYTES = 8 << 20                       # per file sent back; a trial's logs are far smaller
POLL_SECONDS = 0.2
SENDS = 2                                     # a trial whose node is lost is sent this many times in all
# Past a trial's budget (the node kills it at budget + 10 s): time to send the reply back.
REPLY_GRACE_SECONDS = 60.0
# A node that lost a trial gets none for this long: Ray may list a dead node as alive for a while.
SHUN_SECONDS = 60.0


class ClusterError(Exception):
    """The cluster cannot run trials (Ray missing, no node with a slot, a refused node)."""


class Stopped(Exception):
    """A signal asked the daemon to stop while it waited for a trial (the trial is cancelled)."""


class NodeLost(Exception):
    """A trial did not come back: its node or worker died, or the task failed inside Ray."""


@dataclass(frozen=True)
class Fingerprint:
    project: str          # sha256 over FINGERPRINTED .py files as they are on disk
    python: str
    packages: str         # the versions that change what a kernel's time is

    def differences(self, other: Fingerprint) -> list[str]:
        return [f"{name}: {getattr(self, name)} here, {getattr(other, name)} on the head"
                for name in ("project", "python", "packages") if getattr(self, name) != getattr(other, name)]


def fingerprint(root: Path = PROJECT_ROOT) -> Fingerprint:
    digest = hashlib.sha256()
    for top in FINGERPRINTED:
        for path in sorted((root / top).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    versions = ", ".join(f"{d} {importlib.metadata.version(d)}" for d in ("numpy", "numba"))
    return Fingerprint(digest.hexdigest()[:16], platform.python_version(), versions)


@dataclass(frozen=True)
class Job:
    """One trial as it travels to a node: texts, never paths of the head's disk."""

    target: str
    kernel: str
    against: str | None
    budget_seconds: float
    replicates: int | None
    sessions: int | None
    queries_per_combo: int | None
    head: Fingerprint
    against_lance: bool = False
    mode: str = "single"
    # A re-measure after other work took the worker core: the node first waits (at most this
    # long) until that core is quiet, as the daemon does on one machine.
    quiet_threshold: float = 0.0
    quiet_wait_seconds: float = 0.0


@dataclass(frozen=True)
class Returned:
    """What a node sends back: the trial's exit code, the runner's result as written, the logs."""

    node: str
    exit_code: int
    error: str | None
    seconds: float
    result_text: str | None
    files: dict[str, bytes]
    refused: str | None = None


def run_on_node(job: Job) -> Returned:
    """The task each measurement node runs: the same trial as ``orchestrator trial``, here."""
    import targets
    from orchestrator import trial

    node = socket.gethostname()
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():     # several nodes may share a host name
        node += f" ({sys.modules['ray'].get_runtime_context().get_node_id()[:8]})"
    mine = fingerprint()
    if mine != job.head:
        return Returned(node, EXIT_INTERNAL, None, 0.0, None, {},
                        refused=f"node {node} runs other code than the head ({'; '.join(mine.differences(job.head))}); "
                                "check out the head's commit there and reinstall")
    if job.quiet_wait_seconds > 0:
        worker_cpu = process.pick_cpus()[1]
        if worker_cpu is not None:
            contention.wait_for_quiet(worker_cpu, job.quiet_threshold, job.quiet_wait_seconds)
    with tempfile.TemporaryDirectory(prefix="lar-node-") as tmp:
        folder = Path(tmp)
        kernel = folder / "candidate" / "kernels.py"
        kernel.parent.mkdir()
        kernel.write_text(job.kernel)
        against = None
        if job.against is not None:
            against = folder / "incumbent" / "kernels.py"
            against.parent.mkdir()
            against.write_text(job.against)
        request = trial.TrialRequest(targets.get(job.target), kernel, against=against, against_lance=job.against_lance,
                                     mode=job.mode, budget_seconds=job.budget_seconds, replicates=job.replicates,
                                     sessions=job.sessions, queries_per_combo=job.queries_per_combo)
        out = folder / "trial"
        outcome = trial.run(request, out)
        files = {p.relative_to(out).as_posix(): p.read_bytes()[-MAX_LOG_BYTES:] for p in sorted(out.rglob("*"))
                 if p.is_file()}
        text = outcome.result_path.read_text() if outcome.result is not None else None
        return Returned(node, outcome.exit_code, outcome.error, outcome.seconds, text, files)


def unpack(returned: Returned, out_dir: Path) -> tuple[int, Any, str | None, float]:
    """A node's reply into ``out_dir`` (its log files) and (exit code, result, error, seconds);
    the result was checked against the runner's signature on the node and is parsed again here."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for rel, data in returned.files.items():
        path = (out_dir / rel).resolve()
        if out_dir.resolve() not in path.parents:
            continue                              # a node names files inside the trial folder only
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    (out_dir / "node.txt").write_text(f"{returned.node}\n")
    if returned.refused:
        return EXIT_INTERNAL, None, returned.refused, returned.seconds
    if returned.result_text is None:
        return returned.exit_code, None, returned.error, returned.seconds
    try:
        return returned.exit_code, parse_json(returned.result_text), returned.error, returned.seconds
    except ResultParseError as exc:
        return EXIT_INTERNAL, None, f"the node's result does not parse: {exc}", returned.seconds


def reachable(address: str, timeout: float = 5.0) -> None:
    """A ``host:port`` head must answer within ``timeout`` (Ray itself would wait for minutes)."""
    host, _, port = address.rpartition(":")
    if address in ("local", "auto") or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"no Ray head answers at {address} ({exc}); start one with `ray start --head` there, "
                           "or give its address as host:port") from None


@dataclass(frozen=True)
class Node:
    """A live measurement node: Ray's id for it, its address, its trial slots."""

    id: str
    name: str
    slots: int

    @property
    def label(self) -> str:
        return f"{self.name} ({self.id[:8]})"


class Cluster:
    """A connection to a Ray cluster whose measurement nodes each advertise one ``trial_slot``."""

    def __init__(self, address: str) -> None:
        try:
            import ray
        except ImportError:
            raise ClusterError("--ray needs Ray: pip install -e '.[ray]'") from None
        self.ray = ray
        self.address = address
        reachable(address)
        try:
            if address == "local":            # a one-node cluster on this machine, with one slot
                ray.init(resources={SLOT: 1}, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR)
            else:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
        self.head = fingerprint()
        self.stop_signal: str | None = None       # set by the daemon's signal handler
        if self.slot_count() < 1:
            raise ClusterError(f"no node of the cluster at {address!r} advertises {SLOT!r}: start each measurement "
                               f"node with `ray start --address ... --resources '{{\"{SLOT}\": 1}}'`")
        self._task = ray.remote(run_on_node)

    def nodes(self) -> list[Node]:
        return [Node(n["NodeID"], str(n.get("NodeManagerAddress", "?")), int(n["Resources"][SLOT]))
                for n in self.ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(SLOT, 0) >= 1]

    def slot_count(self) -> int:
        """Trials the cluster can run at once: one per live node with a slot (see Slots)."""
        return len(self.nodes())

    def submit(self, job: Job, node: Node) -> Any:
        """The trial on that node and no other (``soft=False``: if the node dies the task fails,
        and the daemon sends it again to another); it still asks for the node's slot, so a trial
        that someone else placed there is waited for, never shared with."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return self._task.options(resources={SLOT: 1}, num_cpus=0, max_retries=0,
                                  scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=False)).remote(job)

    def ready(self, refs: list[Any]) -> list[Any]:
        return self.ray.wait(refs, num_returns=len(refs), timeout=0)[0] if refs else []

    def result(self, ref: Any) -> Returned:
        """A finished trial's reply (the task is done: this does not wait)."""
        try:
            returned = self.ray.get(ref, timeout=REPLY_GRACE_SECONDS)
        except self.ray.exceptions.RayError as exc:
            raise NodeLost(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        if not isinstance(returned, Returned):
            raise NodeLost(f"the node returned {type(returned).__name__}, not a trial")
        return returned

    def cancel(self, ref: Any) -> None:
        self.ray.cancel(ref, force=True)

    def shutdown(self) -> None:
        self.ray.shutdown()


@dataclass
class Ticket:
    """One trial to place on a node, and where it runs once placed."""

    run: str                       # the run's id (a fleet runs several on one cluster)
    target: str
    label: str                     # what it is for, e.g. "attempt 5 (trial)"
    job: Job
    urgent: bool                   # the daemon waits for it (a keep's re-measure): placed first
    queued_at: float = field(default_factory=time.monotonic)
    node: Node | None = None
    ref: Any = None
    deadline: float = 0.0
    done: bool = False
    lost: str | None = None        # why it never came back (its node died, no answer, no node)


class Slots:
    """Places every trial of the daemon's runs on the cluster's nodes itself, one per node.

    The daemon, not Ray's queue, picks the node: so it knows what runs where (``cluster.json`` in
    each run's folder, read by ``orchestrator status``), and it shares nodes fairly between the
    runs of a fleet: a free node goes to the waiting trial whose run holds the fewest nodes (a
    keep's re-measures first: the daemon is waiting on them), oldest first. Every trial still asks
    for the node's ``trial_slot``, so Ray never starts two on one machine.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.waiting: list[Ticket] = []
        self.placed: list[Ticket] = []
        self.watchers: list[Path] = []            # run folders that get cluster.json
        self._nodes: list[Node] = []
        self._nodes_at = float("-inf")
        self._shown: dict[str, Any] = {}          # the picture last written
        self.shunned: dict[str, float] = {}      # node id -> until when it gets no trial

    def watch(self, run_dir: Path) -> None:
        self.watchers.append(run_dir)

    def place(self, ticket: Ticket) -> Ticket:
        self.waiting.append(ticket)
        self.step()
        return ticket

    def step(self) -> list[Ticket]:
        """Notes trials that ended (or were lost), gives free nodes to waiting trials, and writes
        the picture to each run folder when it changed. Returns the trials that ended now."""
        now = time.monotonic()
        ended = set(self.cluster.ready([t.ref for t in self.placed]))
        finished = []
        for t in self.placed:
            if t.ref in ended:
                t.done = True
            elif now > t.deadline:
                self.cluster.cancel(t.ref)
                t.done, t.lost = True, f"no answer from {t.node.label if t.node else '?'} in " \
                                       f"{t.job.budget_seconds + REPLY_GRACE_SECONDS:g} s"
            if t.done:
                finished.append(t)
        self.placed = [t for t in self.placed if not t.done]
        for t in list(self.waiting):
            if now - t.queued_at > t.job.budget_seconds + REPLY_GRACE_SECONDS:
                self.waiting.remove(t)
                t.done, t.lost = True, "no node had a free trial slot for " \
                                       f"{t.job.budget_seconds + REPLY_GRACE_SECONDS:g} s"
                finished.append(t)
        if self.waiting:
            self._dispatch(now, refresh=bool(finished))
        self._show()
        return finished

    def _dispatch(self, now: float, refresh: bool) -> None:
        if refresh or now - self._nodes_at > 1.0:
            self._nodes, self._nodes_at = self.cluster.nodes(), now
        for node in self._nodes:
            if self.shunned.get(node.id, 0.0) > now:
                continue
            # One trial per node, whatever it advertises: a node told to offer two slots would
            # otherwise run two trials that measure each other.
            free = 1 - sum(1 for t in self.placed if t.node is not None and t.node.id == node.id)
            for _ in range(free):
                if not self.waiting:
                    return
                held = {t.run: 0 for t in self.waiting}
                for t in self.placed:
                    held[t.run] = held.get(t.run, 0) + 1
                ticket = min(self.waiting, key=lambda t: (not t.urgent, held[t.run], t.queued_at))
                self.waiting.remove(ticket)
                ticket.node, ticket.ref = node, self.cluster.submit(ticket.job, node)
                ticket.deadline = time.monotonic() + ticket.job.budget_seconds + REPLY_GRACE_SECONDS
                self.placed.append(ticket)

    def wait_for(self, ticket: Ticket) -> Returned:
        """The trial's reply, waiting in short steps so that a signal (``cluster.stop_signal``: a
        raise from a handler inside Ray's C code corrupts the call) stops the wait at once."""
        while not ticket.done:
            if self.cluster.stop_signal is not None:
                self.cancel(ticket)
                raise Stopped(self.cluster.stop_signal)
            self.step()
            if not ticket.done:
                time.sleep(POLL_SECONDS)
        return self.reply(ticket)

    def reply(self, ticket: Ticket) -> Returned:
        """A finished trial's reply; NodeLost if it never came back (and its node is shunned)."""
        try:
            if ticket.lost is not None:
                raise NodeLost(ticket.lost)
            return self.cluster.result(ticket.ref)
        except NodeLost:
            if ticket.node is not None:
                self.shunned[ticket.node.id] = time.monotonic() + SHUN_SECONDS
            raise

    def cancel(self, ticket: Ticket) -> None:
        if ticket in self.waiting:
            self.waiting.remove(ticket)
        if ticket in self.placed:
            self.placed.remove(ticket)
            self.cluster.cancel(ticket.ref)
        ticket.done = True

    def picture(self) -> dict[str, Any]:
        """What runs where, as ``cluster.json`` has it."""
        def who(t: Ticket) -> dict[str, str]:
            return {"target": t.target, "run": t.run, "trial": t.label}
        return {"daemon_pid": os.getpid(), "address": self.cluster.address,
                "nodes": [{"node": n.label, "slots": n.slots,
                           "busy": [who(t) for t in self.placed if t.node is not None and t.node.id == n.id]}
                          for n in self._nodes],
                "waiting": [who(t) for t in self.waiting]}

    def _show(self) -> None:
        picture = self.picture()
        if picture == self._shown:
            return
        self._shown = picture
        stamped = json.dumps({**picture, "updated_at": time.time()}, indent=1) + "\n"
        for run_dir in self.watchers:
            write_atomic(run_dir / "cluster.json", stamped.encode())


def job_for(request: Any, head: Fingerprint) -> Job:
    """A ``trial.TrialRequest`` as a job: the kernels' texts instead of this machine's paths."""
    if request.unsafe_no_sandbox:
        raise ClusterError("--unsafe-no-sandbox is for this machine only: nodes always run the sandbox")
    return Job(request.target.name, request.kernel.read_text(),
               request.against.read_text() if request.against is not None else None, request.budget_seconds,
               request.replicates, request.sessions, request.queries_per_combo, head,
               against_lance=request.against_lance, mode=request.mode)


def outcome(returned: Returned, out_dir: Path) -> Any:
    """A node's reply as the ``trial.TrialOutcome`` a local trial would have given."""
    from orchestrator import trial

    code, result, error, seconds = unpack(returned, out_dir)
    return trial.TrialOutcome(code, result, error, seconds, out_dir / "trial.stdout", out_dir / "trial.stderr",
                              out_dir / "result.json")


def run_remote(slots: Slots, request: Any, out_dir: Path, run_id: str, label: str, tries: int = SENDS) -> Any:
    """One trial on the next free node, waited for (placed before the runs' other trials: the
    daemon waits on it); a trial whose node was lost is sent again, to any node, up to ``tries``
    times in all, then reported as an infrastructure failure."""
    from orchestrator import trial

    job = job_for(request, slots.cluster.head)
    lost = []
    for _ in range(tries):
        try:
            return outcome(slots.wait_for(slots.place(Ticket(run_id, job.target, label, job, urgent=True))), out_dir)
        except NodeLost as exc:
            lost.append(str(exc))
    return trial.TrialOutcome(EXIT_INTERNAL, None, f"infra_error: the trial's node was lost {tries} times: "
                              f"{'; '.join(lost)}", 0.0, out_dir / "trial.stdout", out_dir / "trial.stderr",
                              out_dir / "result.json")
