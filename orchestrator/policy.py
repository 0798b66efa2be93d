"""The static policy: an AST check of a candidate ``kernels.py`` before anything runs.

A first filter, not the boundary (the worker sandbox is): it rejects, with the rule and the
line, code that imports outside the target's allowlist or reaches for the interpreter, the file
system, processes or raw memory. Rejections cost no trial and go back to the model.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from orchestrator.edit import EditError

# Builtins that reach the interpreter, the file system or the caller's frames.
FORBIDDEN_NAMES = frozenset({
    "__import__", "eval", "exec", "compile", "open", "getattr", "setattr", "delattr", "globals", "locals",
    "vars", "input", "breakpoint", "help", "exit", "quit", "__builtins__", "__loader__", "__spec__"})
# Attributes of allowed modules that do file/process I/O, raw memory access or code generation.
FORBIDDEN_ATTRIBUTES = frozenset({
    # numpy file I/O and raw memory
    "load", "save", "savez", "savez_compressed", "savetxt", "loadtxt", "genfromtxt", "fromfile", "tofile",
    "memmap", "fromregex", "DataSource", "ctypeslib", "ctypes", "f2py", "distutils", "testing",
    "stride_tricks", "as_strided", "lib",
    # numba escape hatches (LLVM intrinsics, object mode, C callbacks, raw pointers)
    "extending", "intrinsic", "objmode", "cfunc", "carray", "farray", "core", "experimental", "gdb",
    "gdb_init", "gdb_breakpoint", "cffi_support", "np_parallel",
    # processes and environment, whatever module they hang off
    "system", "popen", "fork", "spawn", "environ", "getenv", "putenv", "subprocess", "socket",
    "modules"})
FORBIDDEN_SUBMODULES = ("numpy.lib", "numpy.ctypeslib", "numpy.f2py", "numpy.testing", "numpy.distutils",
                        "numba.core", "numba.extending", "numba.experimental", "numba.misc", "numba.cffi_support")


class PolicyError(EditError):
    """The candidate breaks a static rule; the message names the rule and the line."""


def violations(source: str, allowed_imports: Iterable[str]) -> list[str]:
    """Every rule the source breaks, as 'line N: rule: detail'."""
    allowed = set(allowed_imports)
    tree = ast.parse(source)
    found: list[str] = []

    def add(node: ast.AST, rule: str, detail: str) -> None:
        found.append(f"line {getattr(node, 'lineno', '?')}: {rule}: {detail}")

    modules = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    for node in ast.walk(tree):
        targets = (node.targets if isinstance(node, (ast.Assign, ast.Delete))
                   else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        for target in targets:
            root = target
            while isinstance(root, (ast.Attribute, ast.Subscript)):
                root = root.value
            if target is not root and isinstance(root, ast.Name) and root.id in modules:
                add(node, "monkeypatch", f"assigning into imported module {root.id!r} changes code the harness runs")
        if isinstance(node, ast.Import):
            for alias in node.names:
                _check_module(alias.name, node, allowed, add)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                add(node, "import", "relative imports are not allowed")
                continue
            _check_module(node.module or "", node, allowed, add)
            for alias in node.names:
                if alias.name == "*":
                    add(node, "import", f"'from {node.module} import *' hides what is used; import names explicitly")
                elif alias.name in FORBIDDEN_ATTRIBUTES or alias.name in FORBIDDEN_NAMES:
                    add(node, "forbidden name", f"{node.module}.{alias.name}")
                else:
                    _check_module(f"{node.module}.{alias.name}", node, allowed, add, submodule_only=True)
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            add(node, "forbidden name", f"{node.id!r} reaches the interpreter or the file system")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("__") and node.attr.endswith("__"):
                add(node, "dunder attribute", f".{node.attr} reaches interpreter internals")
            elif node.attr in FORBIDDEN_ATTRIBUTES:
                add(node, "forbidden attribute", f".{node.attr} (file/process I/O, raw memory or code generation)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("__") \
                and node.value.endswith("__") and len(node.value) > 4:
            add(node, "dunder string", f"{node.value!r} (names of interpreter internals are not data)")
    return sorted(set(found), key=lambda v: (int(v.split(":")[0].removeprefix("line ")), v))


def _check_module(name: str, node: ast.AST, allowed: set[str], add, submodule_only: bool = False) -> None:
    top = name.split(".")[0]
    if not submodule_only and top not in allowed:
        add(node, "import", f"{name!r} is not in this target's allowlist ({', '.join(sorted(allowed))})")
        return
    for banned in FORBIDDEN_SUBMODULES:
        if name == banned or name.startswith(banned + "."):
            add(node, "import", f"{name!r} reaches raw memory, files or code generation")
            return


def check(source: str, allowed_imports: Iterable[str]) -> None:
    """Raise PolicyError listing every violation (first ten), or return quietly."""
    found = violations(source, allowed_imports)
    if found:
        more = f" (and {len(found) - 10} more)" if len(found) > 10 else ""
        raise PolicyError("the static policy rejects this kernels.py:\n  " + "\n  ".join(found[:10]) + more)
