"""Sources named by Hugging Face Hub repo id, and outputs pushed to the Hub.

    SRC                                   resolves to
    ./dir, model.gguf, model.safetensors  itself (--revision is refused)
    org/name [--revision REV]             the snapshot's checkpoint directory, or its one .gguf
    org/name/path/in/repo.gguf            that file of the snapshot

Only the files a conversion reads are fetched: config.json, the safetensors (and index), the
tokenizer and generation files; or the one GGUF. huggingface_hub does the fetching and keeps
its cache layout (`models--org--name/{blobs,refs,snapshots}`), so HF_HOME / HF_HUB_CACHE,
HF_HUB_OFFLINE and HF_TOKEN work as everywhere else. With HF_HUB_OFFLINE=1, or when the Hub
cannot be reached, the listing comes from the cached snapshot. The token is never printed.

The resolved commit is what outputs record (`bitnet_pack.source` = "org/name@<sha>"), so an
output says exactly which upstream bytes it came from; local sources record nothing (an
absolute path would make the same input give different bytes in another directory).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from ..errors import BitnetPackError, MissingFile, UsageError
from .sources import AUX_PATTERNS

SOURCE_KEY = "bitnet_pack.source"
REPO_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]*[\w-])(?:/(?P<file>[^\s]+))?", re.ASCII)
# a branch, tag, commit or refs/pr/N: git's ref rules, and nothing that walks out of the cache
REVISION = re.compile(r"(?!.*\.\.)(?!.*//)(?!/)(?!.*/$)(?!.*\.lock$)[\w.\-/]{1,255}", re.ASCII)
COMMIT = re.compile(r"[0-9a-f]{40}")
CHECKPOINT_FILES = ("config.json", "*.safetensors", "model.safetensors.index.json", *AUX_PATTERNS)


@dataclass(frozen=True)
class Source:
    """Where a SRC argument points: a local path, and for hub sources the repo and commit."""

    path: Path
    repo_id: str | None = None
    commit: str | None = None
    revision: str | None = None

    @property
    def is_hub(self) -> bool:
        return self.repo_id is not None

    @property
    def label(self) -> str:
        return f"{self.repo_id}@{self.commit}" if self.is_hub else str(self.path)

    @property
    def model_id(self) -> str:
        """The name the model goes by: the repo name, or the directory / file stem."""
        if self.is_hub:
            return self.repo_id.split("/", 1)[1]
        if self.path.suffix == ".safetensors":
            return self.path.resolve().parent.name
        name = self.path.resolve().name  # `.` is named after the folder it stands for
        return name.removesuffix(".gguf") if self.path.suffix == ".gguf" else name

    def resolution(self) -> str:
        """What a hub SRC resolved to, for a note: repo, revision asked for, commit."""
        return f"resolved {self.repo_id} (revision {self.revision or 'main'}) to commit {self.commit}"

    def metadata(self) -> dict[str, str]:
        return {SOURCE_KEY: self.label} if self.is_hub else {}


def resolve_source(src: str | os.PathLike, revision: str | None = None, *, progress: bool = False) -> Source:
    """A local path as itself; anything else that looks like `org/name[/file]` through the Hub."""
    local = Path(src)
    if revision is not None and (REVISION.fullmatch(revision) is None or revision.startswith(".")):
        raise UsageError(f"--revision {revision!r} is not a branch, tag or commit name")
    if local.exists():
        if revision is not None:
            raise UsageError(f"--revision applies to hub repo ids, but {src} is a local path")
        return Source(local)
    match = REPO_ID.fullmatch(str(src))
    if match is None or str(src).startswith((".", "/", "~")):
        raise MissingFile("no such file or directory (nor a hub repo id like org/name)", path=src)
    if not progress:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    return _from_hub(match.group("repo"), match.group("file"), revision)


def _from_hub(repo_id: str, filename: str | None, revision: str | None) -> Source:
    commit, files, cached = _listing(repo_id, revision)
    wanted, target = _needed_files(repo_id, files, filename)
    folder = _download(repo_id, commit, wanted, local_only=cached)
    path = Path(folder) / target if target else Path(folder)
    if not path.exists():
        raise MissingFile(f"{repo_id}@{commit} has no {target or 'snapshot'} in the local cache", path=path)
    return Source(path, repo_id, commit, revision)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _listing(repo_id: str, revision: str | None) -> tuple[str, list[str], bool]:
    """(commit sha, files in the repo, whether they come from the cache): from the Hub, else
    from the cached snapshot."""
    if _offline():
        return _cached_listing(repo_id, revision, "HF_HUB_OFFLINE is set")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().model_info(repo_id, revision=revision)
    except RevisionNotFoundError:
        raise MissingFile(f"{repo_id} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise MissingFile(f"hub repo {repo_id} not found (a private or gated repo needs HF_TOKEN)") from None
    except Exception as exc:  # no network, Hub down: the cache may still hold it
        return _cached_listing(repo_id, revision, f"the Hub could not be reached ({_one_line(exc)})")
    return str(info.sha), [s.rfilename for s in info.siblings or []], False


def _cached_listing(repo_id: str, revision: str | None, why: str) -> tuple[str, list[str], bool]:
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    wanted = revision or "main"
    commit = wanted if COMMIT.fullmatch(wanted) else _read_ref(storage / "refs" / wanted)
    snapshot = storage / "snapshots" / commit if commit else None
    if snapshot is None or not snapshot.is_dir():
        raise MissingFile(f"{repo_id}: no such local path, and revision {wanted} is not in the local hub cache "
                          f"{constants.HF_HUB_CACHE} while {why}: download it once with network access "
                          f"(hf download {repo_id})")
    files = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    return commit, files, True


def _read_ref(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _needed_files(repo_id: str, files: list[str], filename: str | None) -> tuple[list[str], str]:
    """(files to fetch, the path of the source inside the snapshot: '' for its root)."""
    if filename is not None:
        if filename not in files:
            raise MissingFile(f"hub repo {repo_id} has no file {filename!r}")
        if filename.endswith(".gguf"):
            return [filename], filename
        if filename.endswith(".safetensors"):
            folder = filename.rpartition("/")[0]
            return _checkpoint_files(files, folder), filename
        raise UsageError(f"{repo_id}/{filename}: name a .gguf or .safetensors file, or the repo itself")
    checkpoint = _checkpoint_files(files, "")
    if "config.json" in checkpoint and any(f.endswith(".safetensors") for f in checkpoint):
        return checkpoint, ""
    ggufs = [f for f in files if f.endswith(".gguf")]
    if len(ggufs) == 1:
        return ggufs, ggufs[0]
    if ggufs:
        raise UsageError(f"hub repo {repo_id} holds {len(ggufs)} GGUF files; name one, e.g. {repo_id}/{ggufs[0]}")
    raise MissingFile(f"hub repo {repo_id} has neither config.json with *.safetensors nor a .gguf file")


def _checkpoint_files(files: list[str], folder: str) -> list[str]:
    prefix = f"{folder}/" if folder else ""
    return [f for f in files if f.startswith(prefix) and "/" not in f[len(prefix):]
            and any(fnmatch(f[len(prefix):], pattern) for pattern in CHECKPOINT_FILES)]


def _download(repo_id: str, commit: str, files: list[str], *, local_only: bool) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id, revision=commit, allow_patterns=files, local_files_only=local_only)
    except LocalEntryNotFoundError as exc:
        raise MissingFile(f"{repo_id}@{commit}: {_one_line(exc)}") from None
    except OSError as exc:  # HTTP errors from the Hub are OSErrors
        raise BitnetPackError(f"{repo_id}@{commit}: download failed ({_one_line(exc)})") from None


def check_push(repo_id: str, token: str | None = None) -> None:
    """Refuse a push that cannot work before any conversion starts: offline, a malformed repo
    id, no token, or an endpoint that does not answer or does not accept the token."""
    if _offline():
        raise UsageError("--push-to-hub needs the network, but HF_HUB_OFFLINE is set")
    if REPO_ID.fullmatch(repo_id) is None or repo_id.count("/") != 1:
        raise UsageError(f"--push-to-hub takes a repo id like org/name, got {repo_id!r}")
    from huggingface_hub import HfApi, constants, get_token

    if (token or get_token()) is None:
        raise UsageError("--push-to-hub needs a token: --token, HF_TOKEN or `hf auth login`")
    try:
        HfApi(token=token).whoami()
    except Exception as exc:  # unreachable endpoint, refused token: say which, before converting
        raise BitnetPackError(f"--push-to-hub: {constants.ENDPOINT} did not accept the token "
                              f"({_one_line(exc)}); nothing was converted") from None


def push_to_hub(output: Path, repo_id: str, *, message: str, private: bool = False, token: str | None = None) -> str:
    """Upload a converted output (a checkpoint directory, or a GGUF and its side files) to
    `repo_id`, creating the repo if needed (private with `private`); returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, exist_ok=True, private=private or None)  # None: the org default
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
                      for name, path in _upload_files(output)]
        return str(api.create_commit(repo_id, operations=operations, commit_message=message).commit_url)
    except OSError as exc:
        raise BitnetPackError(f"push to {repo_id} failed ({_one_line(exc)}); the local output is complete",
                              path=output) from None


def _upload_files(output: Path) -> list[tuple[str, Path]]:
    if output.is_dir():
        return [(p.relative_to(output).as_posix(), p) for p in sorted(output.rglob("*")) if p.is_file()]
    from ..formats.kernel_config import sibling_path

    sidecar = sibling_path(output)
    return [(p.name, p) for p in (output, sidecar) if p.is_file()]


def _one_line(exc: BaseException) -> str:
    """The first line of an error, with the token (if any) blanked out."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    for token in (os.environ.get("HF_TOKEN"), _given_token):
        text = text.replace(token, "***") if token else text
    return text


_given_token: str | None = None  # a --token, blanked out of messages as HF_TOKEN is


def remember_token(token: str | None) -> None:
    global _given_token
    _given_token = token
