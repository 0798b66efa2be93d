# Trick: undo the sandbox from inside (remount the root read-write, unmount /proc to find the
# host's, new namespaces, setns, regain root, mount a cgroup hierarchy), then leave a mark on the
# host. If every step is refused, say so in the crash: the test reads it.
import ctypes
import os


libc = ctypes.CDLL(None, use_errno=True)
MS_REMOUNT, MS_BIND, MNT_DETACH = 32, 4096, 2
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000


def call(fn):
    try:
        r = fn()
        return "ok" if r in (0, None) else f"errno {ctypes.get_errno()}"
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


outcomes = {
    "remount-rw": call(lambda: libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND, None)),
    "umount-proc": call(lambda: libc.umount2(b"/proc", MNT_DETACH)),
    "unshare": call(lambda: libc.unshare(CLONE_NEWUSER | CLONE_NEWNS)),
    "setns": call(lambda: libc.setns(os.open("/proc/self/ns/net", os.O_RDONLY), 0)),
    "setuid-0": call(lambda: os.setuid(0)),
    "mount-cgroup": call(lambda: libc.mount(b"none", os.environ["HOME"].encode(), b"cgroup2", 0, None)),
    "ptrace": call(lambda: libc.ptrace(16, 1, None, None)),
    "mark-host": call(lambda: open("{ROOT}/ESCAPED", "w").write("x") and None),
}
def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "?"


# Anything but this worker and the sandbox's own init would be the host's processes.
others = [(p, cmdline(p)) for p in os.listdir("/proc") if p.isdigit() and p != str(os.getpid())]
others = [(p, c) for p, c in others if not c.endswith("bwrap")]
outcomes["see-processes"] = f"ok: {others[:5]}" if others else "none visible"
escaped = {k: v for k, v in outcomes.items() if v.startswith("ok")}
if not escaped:
    raise RuntimeError("contained: " + "; ".join(f"{k}={v}" for k, v in outcomes.items()))
print("ESCAPED", escaped, flush=True)


# The rest is the baseline kernel, appended by the test (it stands for any honest kernel):
# {BASELINE}
