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
import logging
import platform
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from targets import PROJECT_ROOT
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
    mine = fingerprint()
    if mine != job.head:
        return Returned(node, EXIT_INTERNAL, None, 0.0, None, {},
                        refused=f"node {node} runs other code than the head ({'; '.join(mine.differences(job.head))}); "
                                "check out the head's commit there and reinstall")
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


class Cluster:
    """A connection to a Ray cluster whose measurement nodes each advertise one ``trial_slot``."""

    def __init__(self, address: str) -> None:
        try:
            import ray
        except ImportError:
            raise ClusterError("--ray needs Ray: pip install -e '.[ray]'") from None
        self.ray = ray
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
        if self.slots() < 1:
            raise ClusterError(f"no node of the cluster at {address!r} advertises {SLOT!r}: start each measurement "
                               f"node with `ray start --address ... --resources '{{\"{SLOT}\": 1}}'`")
        self._task = ray.remote(run_on_node).options(resources={SLOT: 1}, num_cpus=0, max_retries=0)

    def slots(self) -> int:
        return int(self.ray.cluster_resources().get(SLOT, 0))

    def submit(self, job: Job) -> Any:
        return self._task.remote(job)

    def wait(self, refs: list[Any], timeout: float) -> list[Any]:
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=timeout) if refs else ([], [])
        return ready

    def get(self, ref: Any, timeout: float | None = None) -> Returned:
        """A finished trial's reply; a node that never answers is lost after ``timeout`` seconds.
        Waits in short steps, so a signal (``stop_signal``, set by the daemon's handler: raising
        from a handler inside Ray's C code corrupts the call) stops the wait within a fraction of
        a second."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.wait([ref], POLL_SECONDS):
            if self.stop_signal is not None:
                self.cancel(ref)
                raise Stopped(self.stop_signal)
            if deadline is not None and time.monotonic() > deadline:
                self.cancel(ref)
                raise NodeLost(f"no answer in {timeout:g} s")
        try:
            returned = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            raise NodeLost(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        if not isinstance(returned, Returned):
            raise NodeLost(f"the node returned {type(returned).__name__}, not a trial")
        return returned

    def cancel(self, ref: Any) -> None:
        self.ray.cancel(ref, force=True)

    def shutdown(self) -> None:
        self.ray.shutdown()


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


def run_remote(cluster: Cluster, request: Any, out_dir: Path, tries: int = SENDS) -> Any:
    """One trial on any free node, waited for; a trial whose node was lost is sent again (to any
    node) up to ``tries`` times in all, then reported as an infrastructure failure."""
    from orchestrator import trial

    job = job_for(request, cluster.head)
    lost = []
    for _ in range(tries):
        try:
            return outcome(cluster.get(cluster.submit(job), timeout=job.budget_seconds + REPLY_GRACE_SECONDS), out_dir)
        except NodeLost as exc:
            lost.append(str(exc))
    return trial.TrialOutcome(EXIT_INTERNAL, None, f"infra_error: the trial's node was lost {tries} times: "
                              f"{'; '.join(lost)}", 0.0, out_dir / "trial.stdout", out_dir / "trial.stderr",
                              out_dir / "result.json")
