"""`orchestrator new-target NAME`: a working target folder from ``orchestrator/templates/target``.

The template is a trivial but complete target (kernel, oracle, inputs, trial, program.md, an
offline playbook with a keep, a wrong kernel and a malformed reply, a capsule and tests), so a
new target runs end to end before its author replaces the placeholder. Nothing is registered:
targets are discovered by folder. Files are written to a temporary folder and moved into place,
so a failure leaves nothing half-made.
"""

from __future__ import annotations

import keyword
import re
import shutil
import tempfile
from pathlib import Path
from string import Template

TEMPLATE = Path(__file__).resolve().parent / "templates" / "target"
NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
RESERVED = {"harness"}


class ScaffoldError(ValueError):
    """A name or place the scaffold cannot use; the message says what to do instead."""


def plan_paths(name: str, root: Path) -> dict[str, Path]:
    """Where each generated file goes: template-relative name -> destination."""
    module = name.replace("-", "_")
    folder = root / "targets" / module
    out = {"__init__.py": folder / "__init__.py",
           "capsule.md": root / "docs" / "targets" / f"{name}.md",
           "test_target.py.tmpl": root / "tests" / f"test_{module}.py"}
    for src in sorted(TEMPLATE.rglob("*")):
        rel = src.relative_to(TEMPLATE).as_posix()
        if src.is_file() and rel not in out:
            out[rel] = folder / rel.removesuffix(".tmpl")
    return out


def problem(name: str, root: Path) -> str | None:
    if not NAME.match(name):
        return (f"target name {name!r} must be lower-case letters and digits in dash-separated words "
                "starting with a letter, e.g. bm25 or ivf-partition")
    module = name.replace("-", "_")
    if keyword.iskeyword(module) or module in RESERVED:
        return f"target name {name!r} is reserved; pick another"
    taken = [p for p in plan_paths(name, root).values() if p.exists()]
    if taken:
        return f"target {name!r} already exists ({taken[0]}); pick another name or edit it in place"
    return None


def create(name: str, root: Path) -> list[Path]:
    """Write the new target's files; returns them. Raises ScaffoldError without writing anything."""
    reason = problem(name, root)
    if reason:
        raise ScaffoldError(reason)
    values = {"name": name, "module": name.replace("-", "_")}
    paths = plan_paths(name, root)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        staged: list[tuple[Path, Path]] = []
        for rel, dest in paths.items():
            src = TEMPLATE / rel
            text = Template(src.read_text()).substitute(values) if src.is_file() else ""
            stage = Path(tmp) / str(len(staged))
            stage.write_text(text)
            staged.append((stage, dest))
        for stage, dest in staged:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(stage, dest)
    return list(paths.values())


def checklist(root: Path) -> str:
    """The "Checklist" section of docs/adding-a-target.md."""
    text = (root / "docs" / "adding-a-target.md").read_text()
    section = text.split("## Checklist", 1)[1]
    return section.split("\n## ", 1)[0].strip()
