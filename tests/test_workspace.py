"""orchestrator.workspace: the run's own branch and worktree in a throwaway git repository."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import git
import pytest

from orchestrator import workspace
from orchestrator.workspace import Workspace, WorkspaceError

KERNEL_REL = "targets/x/kernels.py"
KERNEL = "def f():\n    return 1\n"
BRANCH = "autoresearch/x/run1"


def run_git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> git.Repo:
    root = tmp_path / "repo"
    (root / "targets" / "x").mkdir(parents=True)
    (root / KERNEL_REL).write_text(KERNEL)
    (root / "README.md").write_text("readme\n")
    run_git(root, "init", "-q", "-b", "main")
    run_git(root, "config", "user.name", "Test")
    run_git(root, "config", "user.email", "test@example.com")
    run_git(root, "config", "commit.gpgsign", "false")
    run_git(root, "add", ".")
    run_git(root, "commit", "-q", "-m", "initial")
    return git.Repo(root)


@pytest.fixture
def ws(repo: git.Repo, tmp_path: Path) -> Workspace:
    return workspace.create(repo, tmp_path / "runs" / "x" / "run1" / "worktree", BRANCH, KERNEL_REL)


def main_state(repo: git.Repo) -> tuple[str, str]:
    return repo.active_branch.name, repo.head.commit.hexsha


def test_create_makes_branch_and_worktree_from_head(repo: git.Repo, tmp_path: Path) -> None:
    root = Path(repo.working_tree_dir)
    (root / KERNEL_REL).write_text("DIRTY = True\n")          # uncommitted edit in the user's checkout
    (root / "scratch.txt").write_text("untracked\n")
    before = main_state(repo)
    wt = tmp_path / "runs" / "x" / "run1" / "worktree"
    ws = workspace.create(repo, wt, BRANCH, KERNEL_REL)
    assert ws.worktree == wt and (wt / ".git").exists()
    assert ws.kernel_path == wt / KERNEL_REL
    assert ws.kernel_path.read_text() == KERNEL                # from HEAD, not the dirty checkout
    assert not (wt / "scratch.txt").exists()
    assert ws.wt.active_branch.name == BRANCH
    assert ws.head() == before[1]
    assert BRANCH in [h.name for h in repo.heads]
    # The user's checkout is untouched: still dirty, same branch and HEAD.
    assert (root / KERNEL_REL).read_text() == "DIRTY = True\n"
    assert (root / "scratch.txt").read_text() == "untracked\n"
    assert main_state(repo) == before
    assert run_git(root, "status", "--porcelain").splitlines() == [f" M {KERNEL_REL}", "?? scratch.txt"]


def test_create_refuses_an_existing_branch(repo: git.Repo, ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(git.GitCommandError):
        workspace.create(repo, tmp_path / "other", BRANCH, KERNEL_REL)


def test_clean_worktree_has_no_changes(ws: Workspace) -> None:
    assert ws.changed_paths() == []
    assert ws.diff() == ""


def test_write_candidate_changes_only_the_kernel(ws: Workspace) -> None:
    ws.write_candidate("def f():\n    return 2\n")
    assert ws.changed_paths() == [KERNEL_REL]
    d = ws.diff()
    assert f"--- a/{KERNEL_REL}" in d and f"+++ b/{KERNEL_REL}" in d
    assert "-    return 1\n" in d and "+    return 2\n" in d


def test_untracked_and_other_files_show_up(ws: Workspace) -> None:
    ws.write_candidate("def f():\n    return 2\n")
    (ws.worktree / "targets" / "x" / "helper.py").write_text("X = 1\n")
    (ws.worktree / "newdir" / "deep").mkdir(parents=True)
    (ws.worktree / "newdir" / "deep" / "f.txt").write_text("x\n")
    (ws.worktree / "README.md").write_text("changed\n")
    assert ws.changed_paths() == sorted(["README.md", "newdir/deep/f.txt", "targets/x/helper.py", KERNEL_REL])
    assert "helper" not in ws.diff() and "README" not in ws.diff()     # the diff is the kernel's only


def test_deleted_file_shows_up(ws: Workspace) -> None:
    (ws.worktree / "README.md").unlink()
    assert ws.changed_paths() == ["README.md"]


def test_commit_on_the_run_branch_only(repo: git.Repo, ws: Workspace) -> None:
    before = main_state(repo)
    base = ws.head()
    new = "def f():\n    return 3\n"
    ws.write_candidate(new)
    sha = ws.commit("attempt 1: return 3")
    assert sha != base and len(sha) == 40
    assert ws.head() == sha == repo.heads[BRANCH].commit.hexsha
    commit = repo.commit(sha)
    assert commit.parents[0].hexsha == base and commit.message.strip() == "attempt 1: return 3"
    assert ws.changed_paths() == []
    assert ws.committed_kernel() == new
    assert main_state(repo) == before
    assert (Path(repo.working_tree_dir) / KERNEL_REL).read_text() == KERNEL


def test_commit_includes_only_the_kernel(ws: Workspace) -> None:
    ws.write_candidate("def f():\n    return 4\n")
    (ws.worktree / "stray.txt").write_text("x\n")
    sha = ws.commit("kernel only")
    assert set(ws.wt.commit(sha).stats.files) == {KERNEL_REL}
    assert ws.changed_paths() == ["stray.txt"]


def test_commit_ignores_failing_hooks(repo: git.Repo, ws: Workspace) -> None:
    hooks = Path(repo.git_dir) / "hooks"
    hooks.mkdir(exist_ok=True)
    for name in ("pre-commit", "commit-msg"):
        hook = hooks / name
        hook.write_text("#!/bin/sh\necho hook ran >&2\nexit 1\n")
        hook.chmod(0o755)
    # The hook is live for ordinary commits in this repository...
    (ws.worktree / "README.md").write_text("x\n")
    with pytest.raises(subprocess.CalledProcessError):
        run_git(ws.worktree, "commit", "-q", "-am", "with hooks")
    ws.reset()
    # ...but never for the daemon's.
    base = ws.head()
    ws.write_candidate("def f():\n    return 5\n")
    sha = ws.commit("hooks off")
    assert sha != base and ws.committed_kernel() == "def f():\n    return 5\n"


def test_reset_restores_kernel_and_removes_untracked(ws: Workspace) -> None:
    ws.write_candidate("broken(\n")
    (ws.worktree / "junk.py").write_text("x\n")
    (ws.worktree / "junkdir").mkdir()
    (ws.worktree / "junkdir" / "a.txt").write_text("a\n")
    ws.reset()
    assert ws.kernel_path.read_text() == KERNEL
    assert not (ws.worktree / "junk.py").exists() and not (ws.worktree / "junkdir").exists()
    assert ws.changed_paths() == []


def test_reset_goes_back_to_the_last_commit(ws: Workspace) -> None:
    kept = "def f():\n    return 6\n"
    ws.write_candidate(kept)
    ws.commit("kept")
    ws.write_candidate("def f():\n    return 7\n")
    ws.reset()
    assert ws.kernel_path.read_text() == kept


def test_committed_kernel_is_exact(ws: Workspace) -> None:
    assert ws.committed_kernel() == KERNEL
    text = "def f():\n    return 8\n\n\n"                          # trailing blank lines kept
    ws.write_candidate(text)
    first = ws.head()
    ws.commit("trailing newlines")
    assert ws.committed_kernel() == text
    assert ws.committed_kernel(first) == KERNEL


def test_attach_discards_only_the_daemons_own_in_flight_edit(repo: git.Repo, ws: Workspace) -> None:
    ws.write_candidate("def f():\n    return 9\n")
    sha = ws.commit("kept")
    ws.write_candidate("in flight\n")                 # what the interrupted attempt wrote
    again, warnings = workspace.attach(repo, ws.worktree, BRANCH, KERNEL_REL, sha, own_candidate="in flight\n")
    assert again.head() == sha and warnings == []
    assert again.kernel_path.read_text() == "def f():\n    return 9\n"
    assert again.changed_paths() == []


@pytest.mark.parametrize("edit", ["kernel", "other file"])
def test_attach_refuses_to_discard_a_humans_edits(repo: git.Repo, ws: Workspace, edit: str) -> None:
    sha = ws.head()
    if edit == "kernel":
        ws.write_candidate("a human's idea\n")
    else:
        (ws.worktree / "notes.txt").write_text("mine\n")
    with pytest.raises(WorkspaceError, match="changes the daemon did not make") as exc:
        workspace.attach(repo, ws.worktree, BRANCH, KERNEL_REL, sha, own_candidate="in flight\n")
    assert "stash" in str(exc.value)
    assert (ws.kernel_path.read_text() == "a human's idea\n") if edit == "kernel" else (ws.worktree / "notes.txt").exists()


def test_attach_recreates_a_deleted_worktree_and_says_so(repo: git.Repo, ws: Workspace) -> None:
    ws.write_candidate("def f():\n    return 10\n")
    sha = ws.commit("kept")
    shutil.rmtree(ws.worktree)
    again, warnings = workspace.attach(repo, ws.worktree, BRANCH, KERNEL_REL, sha)
    assert (ws.worktree / ".git").exists() and "was missing; recreated" in warnings[0]
    assert again.wt.active_branch.name == BRANCH and again.head() == sha
    assert again.kernel_path.read_text() == "def f():\n    return 10\n"
    assert main_state(repo)[0] == "main"


def test_attach_refuses_a_worktree_on_another_branch(repo: git.Repo, ws: Workspace) -> None:
    sha = ws.head()
    run_git(ws.worktree, "switch", "-q", "-c", "elsewhere")
    with pytest.raises(WorkspaceError, match=f"is on elsewhere, not the run's branch {BRANCH}"):
        workspace.attach(repo, ws.worktree, BRANCH, KERNEL_REL, sha)


def test_attach_refuses_when_the_run_branch_is_gone(repo: git.Repo, ws: Workspace) -> None:
    sha = ws.head()
    run_git(ws.worktree, "switch", "-q", "--detach")
    run_git(Path(repo.working_tree_dir), "branch", "-q", "-D", BRANCH)
    with pytest.raises(WorkspaceError, match="no longer exists"):
        workspace.attach(repo, ws.worktree, BRANCH, KERNEL_REL, sha)


def test_attach_undoes_a_keep_committed_but_never_recorded(repo: git.Repo, ws: Workspace) -> None:
    recorded = ws.head()
    ws.write_candidate("def f():\n    return 11\n")
    unrecorded = ws.commit("kept, then SIGKILL before the ledger said so")
    again, warnings = workspace.attach(repo, ws.worktree, BRANCH, KERNEL_REL, recorded,
                                       own_candidate="def f():\n    return 11\n")
    assert again.head() == recorded and unrecorded[:10] in warnings[0]


def test_attach_refuses_a_branch_the_ledger_cannot_explain(repo: git.Repo, ws: Workspace) -> None:
    recorded = ws.head()
    for i in range(2):
        ws.write_candidate(f"v{i}\n")
        ws.commit(f"c{i}")
    with pytest.raises(WorkspaceError, match="cannot account for the difference"):
        workspace.attach(repo, ws.worktree, BRANCH, KERNEL_REL, recorded, own_candidate="v1\n")
    assert ws.head() != recorded                        # nothing was reset


def test_find_repo(repo: git.Repo, tmp_path: Path) -> None:
    sub = Path(repo.working_tree_dir) / "targets" / "x"
    assert Path(workspace.find_repo(sub).working_tree_dir) == Path(repo.working_tree_dir)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(WorkspaceError, match="not inside a git repository") as exc:
        workspace.find_repo(plain)
    assert "git" in str(exc.value) and str(plain) in str(exc.value)
    with pytest.raises(WorkspaceError, match="git"):
        workspace.find_repo(tmp_path / "does-not-exist")


def test_create_on_an_empty_repository(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    run_git(root, "init", "-q")
    with pytest.raises(WorkspaceError, match="no commits"):
        workspace.create(git.Repo(root), tmp_path / "wt", BRANCH, KERNEL_REL)


def test_relative_kernel(repo: git.Repo) -> None:
    assert workspace.relative_kernel(repo, Path(repo.working_tree_dir) / KERNEL_REL) == KERNEL_REL


def test_snapshot_restores_and_reports_tampered_files(tmp_path):
    from orchestrator.workspace import snapshot
    a, b = tmp_path / "a.py", tmp_path / "b.yaml"
    a.write_text("oracle = 1\n")
    b.write_text("k: v\n")
    guard = snapshot([a, b])
    assert guard.restore_changed() == []                  # nothing changed: nothing reported
    a.write_text("oracle = 0  # tampered\n")
    b.unlink()
    assert sorted(guard.restore_changed()) == sorted([str(a), str(b)])
    assert a.read_text() == "oracle = 1\n" and b.read_text() == "k: v\n"


def test_guarded_files_cover_code_but_not_the_candidate_or_human_text(tmp_path):
    import git as gitmod
    from orchestrator import workspace
    repo_dir = tmp_path / "r"
    (repo_dir / "targets" / "x").mkdir(parents=True)
    (repo_dir / "prompts").mkdir()
    for rel in ("targets/x/kernels.py", "targets/x/reference.py", "targets/x/program.md", "prompts/system.md",
                "pyproject.toml"):
        (repo_dir / rel).write_text("x\n")
    r = gitmod.Repo.init(repo_dir)
    r.git.add("-A")
    r.git.execute(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"])
    ws = workspace.create(r, tmp_path / "wt", "autoresearch/x/1", "targets/x/kernels.py")
    guarded = {str(p) for p in workspace.guarded_files(r, ws)}
    assert str(repo_dir / "targets/x/reference.py") in guarded and str(tmp_path / "wt/targets/x/reference.py") in guarded
    assert str(repo_dir / "targets/x/kernels.py") in guarded          # the checkout's copy is guarded too
    assert str(tmp_path / "wt/targets/x/kernels.py") not in guarded   # the candidate is not
    assert not any(g.endswith(".md") or "/prompts/" in g for g in guarded)
    assert str(repo_dir / "pyproject.toml") in guarded
