"""Shared helpers for tests that run real trials in subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType, SimpleNamespace

import git
import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "targets" / "pq_l2" / "kernels.py"
NUMBA_KERNEL = ROOT / "tests" / "kernels" / "pq_l2_numba.py"
# A reply whose kernel is a sure keep at the small trials below (~2x the baseline on every combo).
KEEP = ("HYPOTHESIS: Block the codes in SoA so a block's partial sums stay in L1, gather four sub-vectors "
        f"per pass and fuse the top-k behind a running threshold.\n\n```python\n{NUMBA_KERNEL.read_text()}```\n")
# Small but real trials: every phase runs, just fewer blocks and queries, and one worker pair
# (each worker start imports numba: ~0.5 s; pairs add no spread beyond blocks, docs/design.md).
FAST = ["--replicates", "1", "--sessions", "2", "--queries", "3"]


@pytest.fixture
def write_kernel(tmp_path: Path):
    """Write a kernels.py variant: the baseline with ``replace`` applied, or full ``source``."""
    def write(name: str, source: str | None = None, replace: tuple[str, str] | None = None) -> Path:
        text = BASELINE.read_text()
        if replace is not None:
            old, new = replace
            assert old in text, f"test setup: {old!r} not in the baseline kernel"
            text = text.replace(old, new)
        if source is not None:
            text = textwrap.dedent(source)
        path = tmp_path / name / "kernels.py"
        path.parent.mkdir(parents=True)
        path.write_text(text)
        return path
    return write


def run_experiment(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "targets.pq_l2.run_experiment", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def worker_processes() -> list[int]:
    """Any worker of any trial still running: by its boot code, or by a uid the runner hands to
    workers when it is root (a kernel can change its command line, not its uid). A zombie runs
    nothing (its pid waits for a reaper, which the system's init may be slow to be): not counted,
    as the runner's own survivor check does not count it."""
    from targets.harness.sandbox import UID_RANGE
    found = {p.pid for p in processes_mentioning("targets.harness.worker")}
    for proc in psutil.process_iter():
        try:
            if UID_RANGE[0] <= proc.uids().real < UID_RANGE[1]:
                found.add(proc.pid)
        except psutil.Error:
            continue
    return sorted(pid for pid in found if not _zombie(pid))


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return True                       # gone since it was listed


def _proc_text(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_text(errors="replace").strip()
    except OSError as exc:
        return f"({exc.strerror})"


def _fds(pid: int) -> dict[str, str]:
    try:
        return {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError as exc:
        return {"error": str(exc.strerror)}


def describe(pids: list[int]) -> str:
    """What a left-over process is (state, parent, uid, command line): a leak in CI must be
    diagnosable from the log alone."""
    lines = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                lines.append(f"pid {pid} state {proc.status()} ppid {proc.ppid()} uid {proc.uids().real} "
                             f"age {time.time() - proc.create_time():.0f}s children {[c.pid for c in proc.children()]} "
                             f"wchan {_proc_text(pid, 'wchan')!r} fds {_fds(pid)} "
                             f"stack {_proc_text(pid, 'stack').split()[:12]} cmd {' '.join(proc.cmdline())[:300]!r}")
        except psutil.Error as exc:
            lines.append(f"pid {pid}: {exc.__class__.__name__}")
    return "; ".join(lines)


@pytest.fixture
def no_leftovers():
    """``check(timeout, also=None)``: wait until no worker started during this test (nor any process
    mentioning ``also``) is alive, else fail describing each. A leak from an earlier test is that
    test's failure, not this one's."""
    before = set(worker_processes())

    def check(timeout: float = 10.0, also: str | None = None, what: str = "no process left") -> None:
        def left() -> list[int]:
            pids = [p for p in worker_processes() if p not in before]
            return pids + ([p.pid for p in processes_mentioning(also)] if also else [])
        end = time.monotonic() + timeout
        while (pids := left()) and time.monotonic() < end:
            time.sleep(0.1)
        assert not pids, f"{what}: {describe(pids)}"
    return check


def playbook_texts(folder: Path, keep: str, api: dict | None = None) -> dict[str, str]:
    """Each playbook entry's kernel as the offline loop builds it: applied to the incumbent of its
    turn (only the entry named ``keep`` becomes the incumbent); "" where the reply does not apply."""
    from orchestrator.edit import EditError, parse_and_apply
    current = (folder / "kernels.py").read_text()
    out = {}
    for entry in sorted((folder / "playbook").glob("*.md")):
        try:
            out[entry.name] = parse_and_apply(entry.read_text(), current, api=api).new_text
        except EditError:
            out[entry.name] = ""
            continue
        if entry.name == keep:
            current = out[entry.name]
    return out


def replay_playbook(folder: Path, keep: str, api: dict, allowed_imports: tuple[str, ...]) -> dict[str, str]:
    """Each entry's outcome keyed by its number ("01", ...): "applies" (it also passes the static
    policy and keeps the API) or "edit_failed"."""
    from orchestrator import policy
    from orchestrator.edit import validate
    outcomes = {}
    for name, text in playbook_texts(folder, keep, api).items():
        if text:
            policy.check(text, allowed_imports)
            validate(text, api)
        outcomes[name[:2]] = "applies" if text else "edit_failed"
    return outcomes


def playbook_kernel(folder: Path, tmp_path: Path, *entries: str, api: dict | None = None) -> Path:
    """The kernel file after applying playbook entries, in order, to the target's kernels.py."""
    from orchestrator.edit import parse_and_apply
    text = (folder / "kernels.py").read_text()
    for entry in entries:
        text = parse_and_apply((folder / "playbook" / entry).read_text(), text, api=api).new_text
    path = tmp_path / "-".join(e[:2] for e in entries) / "kernels.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load_unique(path: Path) -> ModuleType:
    """A kernel file loaded in this process under a module name of its own (see load_kernel)."""
    from targets.harness.worker import load_kernel
    return load_kernel(str(path), "kernels_" + hashlib.sha256(str(path).encode()).hexdigest()[:16])


def target_trial(target: str, *args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess[str], dict]:
    """A target's run_experiment as the daemon runs it (``target`` as in ``targets.<target>``), and
    its result.json (``args`` must name one with --result-json)."""
    proc = subprocess.run([sys.executable, "-m", f"targets.{target}.run_experiment", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    return proc, json.loads(Path(args[args.index("--result-json") + 1]).read_text())


def battery_failures(target: ModuleType, check: Callable, cases: Iterable, module: object, cls: str,
                     catch: tuple[type[BaseException], ...] = ()) -> dict[str, str]:
    """Each failing case's first problem, run in-process through the target's ``check`` op;
    ``module`` is a kernels module or a stand-in class (named ``cls`` in the kernel API). An
    exception in ``catch`` counts as the case's problem (a worker would report it as one)."""
    if isinstance(module, type):
        module = SimpleNamespace(**{cls: module})
    out: dict[str, str] = {}
    for case in cases:
        inst = target.build(module, case.params, case.arrays)
        for i, call in enumerate(case.calls):
            try:
                problem = check(case, i, target.OPS["check"](inst, call))
            except catch as exc:
                problem = f"raised {type(exc).__name__}: {exc}"
            if problem:
                out.setdefault(case.name, problem)
    return out


def history(*records: dict):
    """A RunHistory of records given as ledger fields (attempts numbered from 1 unless given)."""
    from orchestrator.ledger import AttemptRecord, RunHistory
    return RunHistory(tuple(AttemptRecord(**{"attempt": i, **r}) for i, r in enumerate(records, 1)))


# ---------------------------------------------------------------------------------- daemon runs

# Small trials so loop tests stay quick (one worker pair: each new worker imports numba); the
# test keep is ~1.25x the compiled baseline, so 4 blocks, not 2, keep its worst combo above the bar.
# No profile trials (at the start and after each keep): tests that need them ask. A trial measured
# while other work took the core waits at most 30 s for a quiet one, not 300.
FAST_CONFIG = {"trial_replicates": 1, "trial_sessions": 4, "trial_queries": 3, "repair_turns": 1,
               "profile": False, "quiet_wait_seconds": 30}
CANARY = f"sk-canary-{os.getpid()}-{time.time_ns()}"     # built at run time: no file contains it


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return copy_repo(tmp_path / "repo")


def copy_repo(dest: Path) -> Path:
    """A committed copy of the project's working tree (tracked and new files, nothing ignored)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(src.read_bytes())
    r = git.Repo.init(dest)
    r.git.add("-A")
    r.git.execute(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"])
    return dest


def write_script(repo: Path, name: str, steps: list) -> Path:
    path = repo.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(steps))
    return path


def write_config(repo: Path, **extra) -> Path:
    path = repo.parent / "run.yaml"
    path.write_text(yaml.safe_dump({**FAST_CONFIG, **extra}))
    return path


def daemon_cmd(script: Path | None, *args: str, config: Path | None = None, vs_lance: bool = False) -> list[str]:
    """The daemon's command line; keeps are measured against Lance only where a test asks (it
    costs a trial per keep: the tests about it opt in)."""
    cmd = [sys.executable, "-m", "orchestrator", "loop", "--target", "pq-l2"]
    if script is not None:
        cmd += ["--model", f"script:{script}"]
    if config is not None:
        cmd += ["--config", str(config)]
    if not vs_lance:
        cmd += ["--no-vs-lance"]
    return cmd + list(args)


def run_daemon(repo: Path, script: Path | None, *args: str, config: Path | None = None,
               timeout: float = 300, env: dict[str, str] | None = None,
               vs_lance: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANTHROPIC_API_KEY": CANARY, **(env or {})}
    return subprocess.run(daemon_cmd(script, *args, config=config, vs_lance=vs_lance), cwd=repo, capture_output=True,
                          text=True, timeout=timeout, env=env)


def the_run(repo: Path) -> Path:
    runs = sorted((repo / "runs" / "pq-l2").glob("*/run.json"))
    assert len(runs) == 1, runs
    return runs[0].parent


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "attempts.jsonl").read_text().splitlines()]


def finished(run_dir: Path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for e in events(run_dir):
        if e["event"] == "finished":
            assert e["attempt"] not in out, f"attempt {e['attempt']} finished twice"
            out[e["attempt"]] = e
        elif e["event"] == "measured":             # a keep's later measurement, as the ledger merges it
            assert e["attempt"] in out, f"attempt {e['attempt']} measured before it finished"
            out[e["attempt"]] = {**out[e["attempt"]], **{k: v for k, v in e.items() if k not in ("event", "attempt")}}
    return out


def offline_run(repo: Path, target: str, config: Path, attempts: int = 1) -> dict[int, dict]:
    """A target's offline playbook run in ``repo`` for ``attempts`` attempts; its finished records."""
    proc = run_daemon(repo, None, "--target", target, "--model", "offline", "--max-attempts", str(attempts),
                      config=config, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = sorted((repo / "runs" / target).glob("*/run.json"))
    assert len(runs) == 1, runs
    return finished(runs[0].parent)


def wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


