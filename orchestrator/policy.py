"""The static policy: an AST check of a candidate ``kernels.py`` before anything runs.

A first filter, not the boundary (the worker sandbox is): its job is to give the model a fast,
clear error, at no trial's cost. It is an allowlist of what a kernel may *reach*, not a list of
banned spellings:

- Every attribute chain that starts at an import (``np.lib.stride_tricks.sliding_window_view``,
  ``numba.core.types.float32``) is resolved against the real libraries, in this trusted process.
  The last module on the way must be one of ``ALLOWED_MODULES`` (and the name taken from it must
  pass that module's filter); no chain may end at a module or at a denied object. So a path to
  ``os``, ``sys``, ``builtins``, ``threading``, ``gc`` or ``ctypes`` is refused however it is
  spelled (``numba.config.os``, ``np.lib.npyio.os``), and legitimate API passes.
- Modules are used through their attributes only: a module cannot be stored, passed or returned,
  where its attributes could no longer be resolved here.
- Names that resolve to builtins (found with ``symtable``, so a parameter named ``input`` is the
  kernel's own) must be in ``ALLOWED_BUILTINS``.
- Attributes of the kernel's own objects are the kernel's business, except interpreter internals:
  dunders other than ``SAFE_DUNDERS``, frame and code objects, and ``ctypes`` views of arrays.
"""

from __future__ import annotations

import ast
import importlib
import re
import symtable
import types
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from orchestrator.edit import EditError

def _any_name(_: str) -> bool:
    return True


# Canonical module name -> which of its attributes a kernel may take.
ALLOWED_MODULES: dict[str, Callable[[str], bool]] = {
    "math": _any_name,
    "numpy": _any_name,
    "numpy.linalg": _any_name,
    "numpy.fft": _any_name,
    "numpy.random": _any_name,
    "numpy.lib.stride_tricks": lambda n: n == "sliding_window_view",       # as_strided reaches raw memory
    "numpy.testing": lambda n: n.startswith("assert_"),                   # not tempdir, run_threaded, ...
    "numba": _any_name,
    "numba.core.types": _any_name,
    "numba.typed": _any_name,
    "numba.experimental": lambda n: n == "jitclass",
    "numba.extending": lambda n: n in {"register_jitable", "overload", "overload_method", "overload_attribute"},
}
# Objects of allowed modules that reach files, raw memory or C callbacks: (module, name).
DENIED_OBJECTS = (
    ("numpy", "load"), ("numpy", "save"), ("numpy", "savez"), ("numpy", "savez_compressed"), ("numpy", "savetxt"),
    ("numpy", "loadtxt"), ("numpy", "genfromtxt"), ("numpy", "fromregex"), ("numpy", "fromfile"),
    ("numpy", "memmap"), ("numpy", "DataSource"),
    ("numba", "cfunc"), ("numba", "carray"), ("numba", "farray"), ("numba", "objmode"), ("numba", "gdb"),
    ("numba", "gdb_init"), ("numba", "gdb_breakpoint"))
ALLOWED_BUILTINS = frozenset({
    "abs", "all", "any", "bool", "bytes", "bytearray", "callable", "chr", "complex", "dict", "divmod", "enumerate",
    "filter", "float", "format", "frozenset", "hash", "hex", "id", "int", "isinstance", "issubclass", "iter",
    "len", "list", "map", "max", "memoryview", "min", "next", "object", "oct", "ord", "pow", "print",
    "property", "range", "repr", "reversed", "round", "set", "slice", "sorted", "staticmethod", "classmethod",
    "str", "sum", "super", "tuple", "type", "zip", "NotImplemented", "Ellipsis",
    "ArithmeticError", "AssertionError", "AttributeError", "Exception", "FloatingPointError", "IndexError",
    "KeyError", "LookupError", "MemoryError", "NotImplementedError", "OverflowError", "RuntimeError",
    "StopIteration", "TypeError", "ValueError", "ZeroDivisionError", "Warning", "RuntimeWarning", "UserWarning"})
SAFE_DUNDERS = frozenset({"__init__", "__call__", "__len__", "__getitem__", "__setitem__", "__iter__", "__next__",
                          "__contains__", "__enter__", "__exit__", "__name__", "__doc__", "__repr__", "__eq__",
                          "__hash__", "__lt__"})
# Attributes that reach the interpreter's frames and code, or an array's raw memory, on any object.
INTERNAL_ATTRIBUTES = frozenset({
    "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "f_trace", "gi_frame", "gi_code", "cr_frame",
    "cr_code", "ag_frame", "ag_code", "tb_frame", "tb_next", "co_code", "co_consts", "ctypes"})
_DUNDER_IN_TEXT = re.compile(r"__\w+__")


class PolicyError(EditError):
    """The candidate breaks a static rule; the message names the rule and the line."""


class _Unresolved(Exception):
    pass


def _denied_ids() -> set[int]:
    found = set()
    for module, name in DENIED_OBJECTS:
        try:
            found.add(id(getattr(importlib.import_module(module), name)))
        except (ImportError, AttributeError):
            continue
    return found


def _resolve(path: list[str]) -> list[Any]:
    """The value of each prefix of a dotted path (path[0] a top-level module), in this process."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                  # deprecated aliases warn when touched
        try:
            values = [importlib.import_module(path[0])]
        except ImportError as exc:
            raise _Unresolved(f"{path[0]!r} cannot be imported here") from exc
        for i, name in enumerate(path[1:], start=1):
            if name.startswith("__"):
                raise _Unresolved(f"{'.'.join(path[:i + 1])} reaches interpreter internals")
            parent = values[-1]
            try:
                values.append(getattr(parent, name))
            except AttributeError:
                submodule = f"{getattr(parent, '__name__', '')}.{name}"
                # Import a submodule only on the way to an allowed one: never code the model names.
                if not isinstance(parent, types.ModuleType) or not any(
                        m == submodule or m.startswith(submodule + ".") for m in ALLOWED_MODULES):
                    raise _Unresolved(f"{'.'.join(path[:i + 1])} does not exist") from None
                try:
                    values.append(importlib.import_module(submodule))
                except ImportError:
                    raise _Unresolved(f"{'.'.join(path[:i + 1])} does not exist") from None
    return values


def _judge_path(path: list[str], denied: set[int], ends_in_use: bool = True) -> str | None:
    """Why a dotted path from an import may not be used, or None. ``ends_in_use``: the chain's
    value is used as a value (not a further import), so it must not be a module."""
    dotted = ".".join(path)
    try:
        values = _resolve(path)
    except _Unresolved as exc:
        return str(exc)
    last_module = max(i for i, v in enumerate(values) if isinstance(v, types.ModuleType))
    module = values[last_module]
    allowed = ALLOWED_MODULES.get(module.__name__)
    if last_module == len(values) - 1:
        if ends_in_use:
            return f"{dotted} is a module; import what you need from it (e.g. 'from {module.__name__} import name')"
        if allowed is None and not any(m.startswith(module.__name__ + ".") for m in ALLOWED_MODULES):
            return f"{dotted} is module {module.__name__}, which kernels may not use"
        return None
    if allowed is None:
        return f"{dotted} goes through module {module.__name__}, which kernels may not use"
    taken = path[last_module + 1]
    if not allowed(taken):
        return f"{dotted}: {module.__name__}.{taken} is not among what kernels may use from {module.__name__}"
    if any(id(v) in denied for v in values[last_module + 1:]):
        return f"{dotted} reaches files, raw memory or C callbacks"
    return None


def _dotted(node: ast.AST) -> tuple[str, list[str]] | None:
    """``a.b.c`` -> ("a", ["b", "c"]); None if the chain does not start at a plain name."""
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    return (node.id, attrs[::-1]) if isinstance(node, ast.Name) else None


def _builtin_references(tree: ast.Module, source: str) -> dict[str, int]:
    """Names the code reads from builtins (not bound in any enclosing scope), with a line each."""
    top = symtable.symtable(source, "kernels.py", "exec")
    bound = {s.get_name() for s in top.get_symbols()
             if s.is_assigned() or s.is_imported() or s.is_namespace() or s.is_parameter()}
    used: set[str] = set()

    def walk(table: symtable.SymbolTable, module_level: bool) -> None:
        for sym in table.get_symbols():
            if sym.is_referenced() and sym.get_name() not in bound and (module_level or sym.is_global()):
                used.add(sym.get_name())
        for child in table.get_children():
            walk(child, False)
    walk(top, True)
    lines: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in used:
            lines[node.id] = min(lines.get(node.id, node.lineno), node.lineno)
    return lines


def violations(source: str, allowed_imports: Iterable[str]) -> list[str]:
    """Every rule the source breaks, as 'line N: rule: detail'."""
    allowed_tops = set(allowed_imports)
    found: list[str] = []
    tree = ast.parse(source)
    denied = _denied_ids()

    def add(node: ast.AST, rule: str, detail: str) -> None:
        found.append(f"line {getattr(node, 'lineno', '?')}: {rule}: {detail}")

    # Local name -> the dotted path it stands for, from every import statement.
    aliases: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in allowed_tops:
                    add(node, "import", f"{alias.name!r} is not in this target's allowlist "
                                        f"({', '.join(sorted(allowed_tops))})")
                    continue
                problem = _judge_path(alias.name.split("."), denied, ends_in_use=False)
                if problem:
                    add(node, "import", problem)
                aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name.split(".") if alias.asname else [alias.name.split(".")[0]])
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                add(node, "import", "relative imports are not allowed")
                continue
            if module.split(".")[0] not in allowed_tops:
                add(node, "import", f"{module!r} is not in this target's allowlist ({', '.join(sorted(allowed_tops))})")
                continue
            for alias in node.names:
                if alias.name == "*":
                    add(node, "import", f"'from {module} import *' hides what is used; import names explicitly")
                    continue
                path = [*module.split("."), alias.name]
                problem = _judge_path(path, denied, ends_in_use=False)
                if problem:
                    add(node, "import", problem)
                aliases[alias.asname or alias.name] = path

    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                root = target
                while isinstance(root, (ast.Attribute, ast.Subscript)):
                    root = root.value
                if target is not root and isinstance(root, ast.Name) and root.id in aliases:
                    add(node, "monkeypatch", f"assigning into {root.id!r} changes code the harness runs")
        elif isinstance(node, ast.Name) and node.id in aliases and isinstance(node.ctx, ast.Load):
            parent = parents.get(node)
            value = _resolve_quietly(aliases[node.id])
            if isinstance(value, types.ModuleType) and not (isinstance(parent, ast.Attribute) and parent.value is node):
                add(node, "module as a value", f"{node.id!r} is a module; use it only as '{node.id}.name'")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("__") and node.attr.endswith("__") and node.attr not in SAFE_DUNDERS:
                add(node, "dunder attribute", f".{node.attr} reaches interpreter internals")
            elif node.attr in INTERNAL_ATTRIBUTES:
                add(node, "internal attribute", f".{node.attr} reaches frames, code or raw memory")
            chain = _dotted(node)
            outermost = not (isinstance(parents.get(node), ast.Attribute))
            if chain and outermost and chain[0] in aliases:
                problem = _judge_path([*aliases[chain[0]], *chain[1]], denied)
                if problem:
                    add(node, "reach", problem)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            named = sorted(set(_DUNDER_IN_TEXT.findall(node.value)) - SAFE_DUNDERS)
            if named:                         # str.format and friends walk attributes named in text
                add(node, "dunder string", f"{', '.join(named)} in a string names interpreter internals")
    for name, line in _builtin_references(tree, source).items():
        if name not in ALLOWED_BUILTINS and name not in aliases:
            found.append(f"line {line}: builtin: {name!r} is not among the builtins kernels may use")
    return sorted(set(found), key=lambda v: (int(v.split(":")[0].removeprefix("line ")), v))


def _resolve_quietly(path: list[str]) -> Any:
    try:
        return _resolve(path)[-1]
    except _Unresolved:
        return None


def check(source: str, allowed_imports: Iterable[str]) -> None:
    """Raise PolicyError listing every violation (first ten), or return quietly."""
    found = violations(source, allowed_imports)
    if found:
        more = f" (and {len(found) - 10} more)" if len(found) > 10 else ""
        raise PolicyError("the static policy rejects this kernels.py:\n  " + "\n  ".join(found[:10]) + more)
