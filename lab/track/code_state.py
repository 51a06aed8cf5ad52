"""Which code a result ran: the commit, and exactly what differed from it.

Contract: `code_state(root)` never raises. In a git work tree with a commit it returns
- `sha`: HEAD;
- `diff`: the bytes of `git diff --binary HEAD` (every tracked change, staged or not), `diff_sha256` their hash;
- `untracked`: the untracked, not ignored files under `lab/`, `notebooks/`, `experiments/`, path -> sha256
  (new code that the diff cannot show);
- `dirty`: whether the diff or `untracked` is non-empty.
Without a usable repository (git not installed, not a work tree, no commit yet) it reads `LAB_GIT_SHA` and
`LAB_GIT_DIFF_SHA256`, which whoever copies the tree to a machine without git sets (no diff hash means the
copy was that commit exactly); failing those, `sha` is None and `unavailable_reason` says why.
`facts()` is the JSON-ready part a record's environment holds; the diff itself is written beside the
record as `code.diff` (`lab.track.record`), too large for the JSON and for MLflow tags.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_GIT_SHA = "LAB_GIT_SHA"
ENV_GIT_DIFF_SHA256 = "LAB_GIT_DIFF_SHA256"
SOURCE_GIT = "git"
DIFF_SHA256_FACT = "git_diff_sha256"  # the environment key a record's code.diff is checked against
# Folders whose new, uncommitted files change what an experiment runs.
CODE_FOLDERS = ("lab", "notebooks", "experiments")
# Pin what shapes the diff's bytes, so the same tree gives the same hash whatever the user's git config.
DIFF_ARGS = ("-c", "core.quotepath=off", "diff", "--binary", "--no-color", "--no-ext-diff", "--no-textconv",
             "--src-prefix=a/", "--dst-prefix=b/", "HEAD", "--")


@dataclass(frozen=True)
class CodeState:
    sha: str | None
    dirty: bool | None  # None: unknown (no repository and no LAB_GIT_SHA)
    diff: bytes = b""
    diff_sha256: str | None = None  # None when there is no tracked change (or it is unknown)
    untracked: Mapping[str, str] = field(default_factory=dict)
    source: str | None = SOURCE_GIT  # where `sha` came from: git, ENV_GIT_SHA, or None
    unavailable_reason: str | None = None  # why git could not say, when it could not

    def facts(self) -> dict[str, Any]:
        return {
            "git_sha": self.sha,
            "git_dirty": self.dirty,
            DIFF_SHA256_FACT: self.diff_sha256,
            # A list, not a mapping: flattened into MLflow tags, file names would become tag keys.
            "git_untracked": [{"path": path, "sha256": digest} for path, digest in sorted(self.untracked.items())],
            "git_sha_source": self.source,
            "git_unavailable_reason": self.unavailable_reason,
        }


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _GitFailed(Exception):
    pass


class _GitMissing(_GitFailed):
    pass


def _git(root: Path, *args: str, timeout_s: float = 60.0) -> bytes:
    """stdout of `git args` in `root`; `_GitFailed` with the reason when git is missing or fails."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=timeout_s, check=False)
    except FileNotFoundError as error:
        raise _GitMissing("git is not installed") from error
    except (OSError, subprocess.SubprocessError) as error:
        raise _GitFailed(f"git could not run: {error}") from error
    if done.returncode != 0:
        raise _GitFailed(done.stderr.decode(errors="replace").strip() or f"git {args[0]} failed")
    return done.stdout


def _untracked(root: Path) -> dict[str, str]:
    listed = _git(root, "ls-files", "--others", "--exclude-standard", "-z", "--", *CODE_FOLDERS)
    hashes = {}
    for name in filter(None, listed.decode(errors="surrogateescape").split("\0")):
        try:
            hashes[name] = sha256_hex((root / name).read_bytes())
        except OSError as error:  # e.g. a dangling link: named, with why it has no hash
            hashes[name] = f"unreadable: {error.strerror}"
    return hashes


def _from_git(root: Path) -> CodeState:
    if not root.is_dir():  # else subprocess's FileNotFoundError would read as "git is not installed"
        raise _GitFailed(f"{root} is not a folder")
    try:
        inside = _git(root, "rev-parse", "--is-inside-work-tree").strip()
    except _GitMissing:
        raise
    except _GitFailed as error:  # git's own words too: "dubious ownership" reads differently from "not a repository"
        raise _GitFailed(f"{root} is not inside a git work tree: {str(error).splitlines()[0]}") from error
    if inside != b"true":
        raise _GitFailed(f"{root} is not inside a git work tree")
    try:
        sha = _git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}").decode().strip()
    except _GitFailed as error:
        raise _GitFailed("the repository has no commit yet (HEAD does not resolve)") from error
    diff = _git(root, *DIFF_ARGS)
    untracked = _untracked(root)
    return CodeState(sha=sha, dirty=bool(diff or untracked), diff=diff,
                     diff_sha256=sha256_hex(diff) if diff else None, untracked=untracked)


def code_state(root: Path, env: Mapping[str, str] | None = None) -> CodeState:
    """The code in `root` (see module docstring); `env` defaults to `os.environ`."""
    env = os.environ if env is None else env
    try:
        return _from_git(root)
    except _GitFailed as error:
        reason = str(error)
    sha = env.get(ENV_GIT_SHA) or None
    if sha is None:
        return CodeState(sha=None, dirty=None, source=None, unavailable_reason=reason)
    diff_sha256 = env.get(ENV_GIT_DIFF_SHA256) or None
    return CodeState(sha=sha, dirty=diff_sha256 is not None, diff_sha256=diff_sha256, source=ENV_GIT_SHA,
                     unavailable_reason=reason)
