"""The run's git workspace: its own branch and worktree; the user's checkout is never touched.

Branch ``autoresearch/<target>/<run-id>`` starts at the checkout's HEAD; the worktree lives in
``runs/<target>/<run-id>/worktree`` (ignored by the main checkout). Only the target's
``kernels.py`` may change there; a kept kernel is committed exactly as evaluated, with hooks off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import git


class WorkspaceError(Exception):
    pass


def find_repo(path: Path) -> git.Repo:
    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise WorkspaceError(f"{path} is not inside a git repository; the loop keeps every kernel as a "
                             "commit, so run it from a clone of lance-autoresearch (or `git init` and commit)") from None


# Hooks never run on the daemon's commits: kernels are committed exactly as evaluated.
_NO_HOOKS = ("-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false")


@dataclass
class Workspace:
    repo: git.Repo            # the user's repository
    worktree: Path
    branch: str
    kernel_rel: str           # e.g. "targets/pq_l2/kernels.py"

    @property
    def kernel_path(self) -> Path:
        return self.worktree / self.kernel_rel

    @property
    def wt(self) -> git.Repo:
        return git.Repo(self.worktree)

    def head(self) -> str:
        return self.wt.head.commit.hexsha

    def committed_kernel(self, rev: str = "HEAD") -> str:
        return self.wt.git.show(f"{rev}:{self.kernel_rel}", strip_newline_in_stdout=False)

    def write_candidate(self, text: str) -> None:
        self.kernel_path.write_text(text)

    def changed_paths(self) -> list[str]:
        """Every path that differs from HEAD in the worktree, untracked files included."""
        out = self.wt.git.status("--porcelain", "--untracked-files=all", "--no-renames")
        return sorted(line[3:] for line in out.splitlines() if line.strip())

    def diff(self) -> str:
        return self.wt.git.diff("HEAD", "--", self.kernel_rel, strip_newline_in_stdout=False)

    def commit(self, message: str) -> str:
        """Commit the kernel exactly as it is on disk (the evaluated blob); return the sha."""
        self.wt.git.add("--", self.kernel_rel)
        self.wt.git.execute(["git", *_NO_HOOKS, "commit", "-q", "--no-verify", "-m", message])
        return self.head()

    def reset(self) -> None:
        """Back to the last kept commit: discard every change, tracked or not."""
        self.wt.git.reset("--hard", "-q", "HEAD")
        self.wt.git.clean("-fdq")


def create(repo: git.Repo, worktree: Path, branch: str, kernel_rel: str) -> Workspace:
    if repo.head.is_detached is False and not repo.head.is_valid():
        raise WorkspaceError("the repository has no commits yet; commit the project first")
    base = repo.head.commit.hexsha
    worktree.parent.mkdir(parents=True, exist_ok=True)
    repo.git.worktree("add", "-q", "-b", branch, str(worktree), base)
    return Workspace(repo, worktree, branch, kernel_rel)


def attach(repo: git.Repo, worktree: Path, branch: str, kernel_rel: str, expected_head: str,
           own_candidate: str | None = None) -> tuple[Workspace, list[str]]:
    """Re-open a run's worktree to resume it, and make it agree with the ledger; returns warnings.

    ``expected_head`` is the ledger's last kept commit (or the run's base); ``own_candidate`` the
    kernel the attempt in flight wrote, the only change the daemon may discard. Anything else —
    a missing branch, a worktree on another branch, a human's edits, a branch the ledger cannot
    explain — raises WorkspaceError naming the problem and the fix; nothing is discarded silently.
    """
    warnings: list[str] = []
    try:
        repo.git.rev_parse("--verify", "-q", f"refs/heads/{branch}")
    except git.GitCommandError:
        raise WorkspaceError(f"the run's branch {branch} no longer exists, and it holds the run's kept kernels; "
                             f"restore it (git branch {branch} <commit>) or start a new run") from None
    if not (worktree / ".git").exists():
        repo.git.worktree("prune")
        repo.git.worktree("add", "-q", str(worktree), branch)
        warnings.append(f"the run's worktree {worktree} was missing; recreated it from branch {branch}")
    ws = Workspace(repo, worktree, branch, kernel_rel)
    try:
        current = ws.wt.active_branch.name
    except TypeError:
        current = "a detached HEAD"
    if current != branch:
        raise WorkspaceError(f"the run's worktree {worktree} is on {current}, not the run's branch {branch}; "
                             f"switch it back (git -C {worktree} switch {branch}) and resume")
    foreign = [p for p in ws.changed_paths()
               if p != kernel_rel or own_candidate is None or ws.kernel_path.read_text() != own_candidate]
    if foreign:
        raise WorkspaceError(f"the run's worktree has changes the daemon did not make ({', '.join(foreign[:5])}); "
                             f"resuming would discard them: keep them elsewhere, then `git -C {worktree} stash -u` "
                             "and resume")
    head = ws.head()
    if head != expected_head:
        unrecorded = _commits_between(ws.wt, expected_head, head)
        if own_candidate is None or unrecorded is None or len(unrecorded) != 1:
            raise WorkspaceError(f"branch {branch} is at {head[:10]}, but the run's ledger ends at {expected_head[:10]} "
                                 "and cannot account for the difference; reset the branch to what the ledger "
                                 f"says (git -C {worktree} reset --hard {expected_head[:10]}) or start a new run")
        # The daemon committed a keep and stopped before recording it: undo it, as its record says
        # it was interrupted (a keep is recorded within milliseconds of its commit).
        ws.wt.git.reset("--hard", "-q", expected_head)
        warnings.append(f"commit {head[:10]} of the attempt in flight was never recorded as kept; undone, so the "
                        f"branch again ends at the last recorded keep {expected_head[:10]}")
    ws.reset()
    return ws, warnings


def _commits_between(wt: git.Repo, base: str, tip: str) -> list[str] | None:
    """Commits on ``tip`` after ``base``, or None if ``base`` is not an ancestor of ``tip``."""
    try:
        wt.git.merge_base("--is-ancestor", base, tip)
    except git.GitCommandError:
        return None
    return wt.git.rev_list(f"{base}..{tip}").split()


def _checkout(repo: git.Repo) -> Path:
    """The folder of the user's checkout (a bare repository has none)."""
    if repo.working_tree_dir is None:
        raise WorkspaceError(f"{repo.git_dir} is a bare repository; run from a clone with a checkout")
    return Path(repo.working_tree_dir)


def relative_kernel(repo: git.Repo, kernel: Path) -> str:
    return os.path.relpath(kernel.resolve(), _checkout(repo).resolve())


@dataclass
class Snapshot:
    """The bytes of every file a trial must not change, to detect and undo tampering."""

    files: dict[Path, bytes]

    def restore_changed(self) -> list[str]:
        """Put back every file that differs (or vanished); return their paths."""
        changed = []
        for path, data in self.files.items():
            try:
                same = path.read_bytes() == data
            except OSError:
                same = False
            if not same:
                path.write_bytes(data)
                changed.append(str(path))
        return changed


def guarded_files(repo: git.Repo, ws: Workspace) -> list[Path]:
    """Tracked files of the user's checkout and of the run's worktree, except the candidate
    kernel and the text humans edit between attempts (Markdown, prompts/): the code and data a
    trial runs on, which nothing during a trial may change."""
    out: list[Path] = []
    for root, skip in ((_checkout(repo), None), (ws.worktree, ws.kernel_rel)):
        for rel in git.Repo(root).git.ls_files().splitlines():
            if rel == skip or rel.endswith(".md") or rel.startswith("prompts/"):
                continue
            path = root / rel
            if path.is_file():
                out.append(path)
    return out


def snapshot(paths: list[Path]) -> Snapshot:
    return Snapshot({p: p.read_bytes() for p in paths})
