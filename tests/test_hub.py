"""Hub repo ids as sources (a hand-built hub cache, offline) and --push-to-hub (a local
stand-in of the Hub's commit API). Nothing here reaches a network: HF_HUB_OFFLINE=1 and
HF_ENDPOINT points at a closed local port, or at the stand-in."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from corrupt_files import FIXTURE, write_master
from test_cli import cli, error_line

from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.containers.shards import SafetensorsDir
from bitnet_pack.errors import MissingFile, UsageError
from bitnet_pack.pipeline.hub import SOURCE_KEY, _needed_files, resolve_source

MAIN, OLD = "a" * 40, "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_notARealTokenButSecret123"


def fill_cache(cache: Path, repo_id: str, snapshots: dict[str, dict[str, bytes]], refs: dict[str, str]) -> None:
    """huggingface_hub's layout: blobs by content hash, snapshots/<commit>/ symlinks, refs/<name>."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    for commit, files in snapshots.items():
        for name, data in files.items():
            blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = storage / "snapshots" / commit / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    for ref, commit in refs.items():
        (storage / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("hub")
    old = write_master(base / "old-model", hidden=256, ffn=512)
    gguf_path = base / "tiny.gguf"
    assert cli("convert", FIXTURE, gguf_path, "--outtype", "i2_s").returncode == 0
    cache = base / "cache"
    current = files_of(FIXTURE) | {"README.md": b"# tiny\n", "original/consolidated.pth": b"not needed"}
    fill_cache(cache, "org/tiny-bitnet", {MAIN: current, OLD: files_of(old)}, {"main": MAIN, "v1": OLD})
    fill_cache(cache, "org/tiny-gguf", {MAIN: {"tiny-i2_s.gguf": gguf_path.read_bytes(), "README.md": b"x"}},
               {"main": MAIN})
    two = {"a-i2_s.gguf": gguf_path.read_bytes(), "b-i2_s.gguf": gguf_path.read_bytes()}
    fill_cache(cache, "org/two-ggufs", {MAIN: two}, {"main": MAIN})
    return cache


def hub_env(cache: Path) -> dict[str, str]:
    return {"HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "home"), "HF_TOKEN": TOKEN}


# -- 1. repo ids against a local cache, offline, with and without --revision ---------------

def test_repo_id_converts_from_the_cache_and_records_the_commit(hub_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "from-hub.gguf"
    result = cli("convert", "org/tiny-bitnet", out, "--outtype", "i2_s", env=hub_env(hub_cache))
    assert result.returncode == 0, result.stderr
    assert f"resolved org/tiny-bitnet (revision main) to commit {MAIN}" in result.stderr
    local = tmp_path / "local.gguf"
    assert cli("convert", FIXTURE, local, "--outtype", "i2_s").returncode == 0
    with GGUFFile(out) as hub_file, GGUFFile(local) as local_file:
        assert hub_file.get(SOURCE_KEY) == f"org/tiny-bitnet@{MAIN}"
        assert hub_file.get("general.name") == "tiny-bitnet"  # the repo, not the snapshot folder
        assert local_file.get(SOURCE_KEY) is None
        assert [bytes(hub_file.tensor_bytes(n)) for n in hub_file.tensors] == \
            [bytes(local_file.tensor_bytes(n)) for n in local_file.tensors]
    packed = tmp_path / "packed"
    assert cli("convert", "org/tiny-bitnet", packed, "--outtype", "hf-packed", env=hub_env(hub_cache)).returncode == 0
    assert SafetensorsDir(packed).metadata[SOURCE_KEY] == f"org/tiny-bitnet@{MAIN}"
    assert sorted(p.name for p in packed.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


@pytest.mark.parametrize("revision", [OLD, "v1"])
def test_revision_selects_another_snapshot(hub_cache: Path, tmp_path: Path, revision: str) -> None:
    out = tmp_path / "old"
    result = cli("convert", "org/tiny-bitnet", out, "--outtype", "hf-packed", "--revision", revision,
                 env=hub_env(hub_cache))
    assert result.returncode == 0, result.stderr
    assert f"(revision {revision}) to commit {OLD}" in result.stderr
    assert json.loads((out / "config.json").read_text())["intermediate_size"] == 512  # the old model
    assert SafetensorsDir(out).metadata[SOURCE_KEY] == f"org/tiny-bitnet@{OLD}"


def test_resolution_in_process(hub_cache: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    main = resolve_source("org/tiny-bitnet")
    assert (main.commit, main.path.name, main.model_id) == (MAIN, MAIN, "tiny-bitnet")
    assert main.metadata() == {SOURCE_KEY: f"org/tiny-bitnet@{MAIN}"}
    assert resolve_source("org/tiny-bitnet", "v1").commit == OLD
    single = resolve_source("org/tiny-gguf")
    assert single.path.name == "tiny-i2_s.gguf" and single.model_id == "tiny-gguf"
    assert resolve_source("org/two-ggufs/b-i2_s.gguf").path.name == "b-i2_s.gguf"
    with pytest.raises(UsageError, match="holds 2 GGUF files; name one, e.g. org/two-ggufs/a-i2_s.gguf"):
        resolve_source("org/two-ggufs")
    with pytest.raises(MissingFile, match="revision nope is not in the local hub cache"):
        resolve_source("org/tiny-bitnet", "nope")
    with pytest.raises(UsageError, match="--revision applies to hub repo ids"):
        resolve_source(FIXTURE, "main")
    assert resolve_source(FIXTURE).metadata() == {}


def test_online_resolution_pins_the_commit_and_fetches_only_what_is_read(hub_cache: Path, monkeypatch) -> None:
    """With the network 'up' (model_info and snapshot_download replaced, nothing leaves the
    process): the listing comes from the Hub, the download is pinned to its commit and limited
    to the files a conversion reads; when the Hub cannot be reached, the cache answers."""
    import huggingface_hub
    from huggingface_hub import constants

    snapshot = hub_cache / "models--org--tiny-bitnet" / "snapshots" / MAIN
    listing = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    calls = []

    def model_info(self, repo_id, revision=None, **_):
        calls.append(("model_info", repo_id, revision))
        if repo_id == "org/unreachable":
            raise ConnectionError("no route to host")
        return SimpleNamespace(sha=MAIN, siblings=[SimpleNamespace(rfilename=f) for f in listing])

    def snapshot_download(repo_id, revision=None, allow_patterns=None, local_files_only=False, **_):
        calls.append(("download", repo_id, revision, sorted(allow_patterns), local_files_only))
        return str(snapshot)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    source = resolve_source("org/tiny-bitnet", "main")
    assert (source.commit, source.path) == (MAIN, snapshot)
    wanted = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert calls == [("model_info", "org/tiny-bitnet", "main"), ("download", "org/tiny-bitnet", MAIN, wanted, False)]
    calls.clear()
    fill_cache(hub_cache, "org/unreachable", {OLD: files_of(FIXTURE)}, {"main": OLD})
    assert resolve_source("org/unreachable").commit == OLD
    assert calls[-1][-1] is True  # the cached snapshot, without a second try at the network


def test_only_the_files_a_conversion_reads_are_fetched() -> None:
    listing = ["README.md", "config.json", "generation_config.json", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "original/model.safetensors", "pytorch_model.bin",
               "ggml-model-i2_s.gguf", ".gitattributes"]
    wanted, target = _needed_files("org/x", listing, None)
    assert target == "" and sorted(wanted) == [
        "config.json", "generation_config.json", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "model.safetensors.index.json", "special_tokens_map.json",
        "tokenizer.json", "tokenizer_config.json"]
    assert _needed_files("org/x", listing, "ggml-model-i2_s.gguf") == (["ggml-model-i2_s.gguf"], "ggml-model-i2_s.gguf")
    assert _needed_files("org/x", ["README.md", "w.gguf"], None) == (["w.gguf"], "w.gguf")
    with pytest.raises(MissingFile, match="has no file 'nope.gguf'"):
        _needed_files("org/x", listing, "nope.gguf")
    with pytest.raises(MissingFile, match="neither config.json"):
        _needed_files("org/x", ["README.md"], None)


def test_hub_failures_are_one_line_and_never_show_the_token(hub_cache: Path, tmp_path: Path) -> None:
    env = hub_env(hub_cache)
    results = {
        "revision": cli("convert", "org/tiny-bitnet", tmp_path / "o", "--outtype", "hf-packed", "--revision", "nope",
                        env=env),
        "absent": cli("inspect", "org/not-cached", env=env),
        "local-revision": cli("inspect", FIXTURE, "--revision", "main", env=env),
        "two": cli("inspect", "org/two-ggufs", env=env),
    }
    assert {k: r.returncode for k, r in results.items()} == {"revision": 1, "absent": 1, "local-revision": 2, "two": 2}
    assert "is not in the local hub cache" in error_line(results["revision"])
    assert "org/not-cached: no such local path" in error_line(results["absent"])
    assert "name one" in error_line(results["two"])
    for result in results.values():
        assert TOKEN not in result.stdout + result.stderr
    assert not (tmp_path / "o").exists()


def test_inspect_and_diff_take_repo_ids(hub_cache: Path) -> None:
    env = hub_env(hub_cache)
    report = json.loads(cli("inspect", "org/tiny-gguf", "--json", env=env).stdout)
    assert report["kind"] == "gguf" and report["path"].endswith("tiny-i2_s.gguf")
    same = cli("diff", "org/tiny-gguf", FIXTURE, env=env)
    assert same.returncode == 0 and "identical" in same.stdout, same.stderr
    other = cli("diff", "org/tiny-bitnet", "org/tiny-bitnet", "--revision-b", "v1", env=env)
    assert other.returncode == 3 and "differ" in error_line(other)


# -- --push-to-hub against a local stand-in ------------------------------------------------

class StandInHub(BaseHTTPRequestHandler):
    """Just enough of the Hub's API for huggingface_hub's create_repo + create_commit:
    every file is declared "regular", so its bytes arrive base64-encoded in the commit."""

    received: dict[str, bytes] = {}
    requests: list[tuple[str, str, str]] = []
    created: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.requests.append(("POST", self.path, self.headers.get("Authorization", "")))
        if self.path == "/api/repos/create":
            name = json.loads(body)
            self.created.append(name)
            return self._json({"url": f"http://{self.headers['Host']}/{name['organization']}/{name['name']}"})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                         for f in files]})
        if "/commit/" in self.path:
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.received[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            return self._json({"commitUrl": f"http://{self.headers['Host']}/org/pushed/commit/{'c' * 40}",
                               "commitOid": "c" * 40})
        self.send_error(404)

    def do_GET(self) -> None:  # noqa: N802
        self.requests.append(("GET", self.path, self.headers.get("Authorization", "")))
        if self.path == "/api/whoami-v2":  # check_push asks before converting
            return self._json({"name": "tester", "type": "user"})
        self.send_error(404)

    def _json(self, data: dict) -> None:
        payload = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def stand_in_hub():
    StandInHub.received, StandInHub.requests, StandInHub.created = {}, [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("out_name,outtype", [("packed", "hf-packed"), ("m.gguf", "tl1")])
def test_push_to_hub_uploads_the_complete_output(stand_in_hub: str, tmp_path: Path, out_name: str,
                                                 outtype: str) -> None:
    out = tmp_path / out_name
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": stand_in_hub, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "home")}
    result = cli("convert", FIXTURE, out, "--outtype", outtype, "--push-to-hub", "org/pushed", env=env)
    assert result.returncode == 0, result.stderr
    assert f"pushed to {stand_in_hub}/org/pushed/commit/" in result.stdout
    local = files_of(out) if out.is_dir() else {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert StandInHub.received == local and len(local) >= 2  # TL1: the GGUF and its kernel_config.ini
    posts = [(path, auth) for method, path, auth in StandInHub.requests if method == "POST"]
    assert {auth for _, auth in posts} == {f"Bearer {TOKEN}"}
    assert [path.split("/")[-2] if "/api/models/" in path else path for path, _ in posts] == [
        "/api/repos/create", "preupload", "commit"]
    assert TOKEN not in result.stdout + result.stderr


def test_push_to_hub_is_refused_offline_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "packed"
    result = cli("convert", FIXTURE, out, "--outtype", "hf-packed", "--push-to-hub", "org/x")
    assert result.returncode == 2 and "HF_HUB_OFFLINE" in error_line(result)
    assert not out.exists()


def test_push_to_hub_takes_hf_habits_private_commit_message_token(stand_in_hub: str, tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": stand_in_hub, "HF_HOME": str(tmp_path / "home")}
    result = cli("convert", FIXTURE, tmp_path / "m.gguf", "--outtype", "i2_s", "--push-to-hub", "org/pushed",
                 "--private", "--commit-message", "my message", "--token", TOKEN, env=env)
    assert result.returncode == 0, result.stderr
    created = StandInHub.created[0]
    assert created.get("visibility") == "private" or created.get("private") is True, created
    asked = [auth for method, path, auth in StandInHub.requests if method == "POST" or "whoami" in path]
    assert len(asked) >= 3 and set(asked) == {f"Bearer {TOKEN}"}, StandInHub.requests
    assert TOKEN not in result.stdout + result.stderr
    lone = cli("convert", FIXTURE, tmp_path / "n.gguf", "--outtype", "i2_s", "--private")
    assert lone.returncode == 2 and "push_to_hub" in error_line(lone)
