"""The vectors are the bytes their checksums record, and the generated fixture regenerates.

- fixtures/tiny-a/: every file is listed in its SHA256SUMS and hashes to it, and those lines
  are the shared set's own (the files were copied unchanged, fixtures/tiny-a/NOTE.md).
- ../shared/vectors/: every SHA256SUMS there covers every vector of its folder (but README.md and
  folders with their own SHA256SUMS), and each vector hashes to its line. Provenance (logs/,
  tools/ and the *.py scripts that made a folder) is read by people and compared by no test, so
  it is not held to the sums: the shared set ships the logs and wrapper scripts of emb-*, ik-*
  edited after their SHA256SUMS were made, and gpu-tiny-a's script unlisted.
- fixtures/tiny-bitnet/: `python fixtures/make_fixture.py OUT` writes the committed bytes again
  (in a fresh interpreter with another hash seed: nothing may depend on set or dict order).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from conftest import FIXTURES, ROOT, TINY_A

UNLISTED = {"SHA256SUMS", "README.md", "NOTE.md"}
# Vectors shipped in ../shared without a line in their folder's SHA256SUMS (added after the sums).
KNOWN_UNLISTED = {"embd-quant/decode.json"}


def is_provenance(name: str) -> bool:
    return name.startswith(("logs/", "tools/")) or name.endswith(".py")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sums(path: Path) -> dict[str, str]:
    """`sha256sum` output ('HEX  ./relative/path' per line) as {relative/path: HEX}."""
    sums = {}
    for line in path.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        assert len(digest) == 64 and name not in sums, line
        sums[name.removeprefix("./").lstrip("*")] = digest
    return sums


def files_covered(folder: Path) -> set[str]:
    """Files under `folder` its SHA256SUMS should list: not the notes, not inside a subfolder
    that has a SHA256SUMS of its own."""
    nested = {p.parent for p in folder.rglob("SHA256SUMS") if p.parent != folder}
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and p.name not in UNLISTED and not any(n in p.parents for n in nested)}


def assert_checksums_hold(folder: Path, vectors_only: bool = False) -> None:
    sums = read_sums(folder / "SHA256SUMS")
    present = files_covered(folder)
    if vectors_only:
        sums = {name: digest for name, digest in sums.items() if not is_provenance(name)}
        present = {name for name in present if not is_provenance(name)
                   and f"{folder.name}/{name}" not in KNOWN_UNLISTED}
    assert set(sums) == present, (f"{folder}: unlisted {sorted(present - set(sums))}, "
                                  f"listed but absent {sorted(set(sums) - present)}")
    wrong = [name for name, digest in sums.items() if sha256(folder / name) != digest]
    assert not wrong, f"{folder}: files whose SHA256 is not the recorded one: {wrong}"


def test_every_tiny_a_file_has_its_recorded_checksum() -> None:
    assert_checksums_hold(TINY_A)


def test_the_tiny_a_checksums_are_the_shared_sets_own(shared_vectors: Path) -> None:
    shared = read_sums(shared_vectors / "SHA256SUMS")
    local = read_sums(TINY_A / "SHA256SUMS")
    assert {name: shared.get(name) for name in local} == local


def test_every_shared_vector_has_its_recorded_checksum(shared_vectors: Path) -> None:
    folders = sorted(p.parent for p in shared_vectors.rglob("SHA256SUMS"))
    assert shared_vectors in folders and len(folders) >= 2
    for folder in folders:
        assert_checksums_hold(folder, vectors_only=True)


def test_make_fixture_regenerates_tiny_bitnet_byte_for_byte(tmp_path: Path) -> None:
    committed = FIXTURES / "tiny-bitnet"
    out = tmp_path / "tiny-bitnet"
    env = {**os.environ, "PYTHONHASHSEED": "4711"}
    result = subprocess.run([sys.executable, str(FIXTURES / "make_fixture.py"), str(out)], capture_output=True,
                            text=True, cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    made = sorted(p.name for p in out.iterdir())
    assert made == sorted(p.name for p in committed.iterdir())
    differing = [name for name in made if (out / name).read_bytes() != (committed / name).read_bytes()]
    assert not differing, f"make_fixture.py no longer writes the committed {differing}"
