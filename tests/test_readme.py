"""Every `bitnet-pack ...` command in the README's code blocks runs, in order, and exits as its
comment says (0 unless `# exits N`); every Python snippet runs as pasted. They run in a temporary
directory where the README's names are the tiny fixtures (the tables below), and hub repo ids
resolve offline from a local hub cache holding a fixture under that id."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_hub import MAIN, files_of, fill_cache

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FIXTURES = ROOT / "fixtures"

# The README's names -> the fixture copied there (in the temporary working directory).
LOCAL_NAMES = {
    "master": "tiny-a/tiny-a-bf16",
    "ggml-model-i2_s.gguf": "tiny-a/tiny-a-i2_s.gguf",
    "ggml-model-tl2.gguf": "tiny-a/tiny-a-tl2.gguf",
    "ggml-model-tl2.kernel_config.ini": "tiny-a/tiny-a-tl2.kernel_config.ini",
}
# Hub repo ids the README names -> the fixture checkpoint cached under that id (commit MAIN).
HUB_REPOS = {"microsoft/bitnet-b1.58-2B-4T-bf16": "tiny-a/tiny-a-bf16"}
EXPECTED_EXIT = re.compile(r"#.*\bexits (\d)\b")


def code_blocks(language: str) -> list[str]:
    """The README's fenced blocks opened with ```language (language "" for plain ones)."""
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), flags=re.M | re.S)


def readme_commands() -> list[tuple[list[str], int]]:
    """(argv, expected exit code) for every line of a plain block that starts with bitnet-pack."""
    commands = []
    for block in code_blocks(""):
        for line in block.splitlines():
            if line.startswith("bitnet-pack "):
                match = EXPECTED_EXIT.search(line)
                commands.append((shlex.split(line, comments=True), int(match.group(1)) if match else 0))
    return commands


def bitnet_pack_command() -> list[str]:
    """The installed console script, as the README says; `python -m bitnet_pack` without one."""
    script = Path(sys.executable).parent / "bitnet-pack"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bitnet_pack"]


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    for name, fixture in LOCAL_NAMES.items():
        source = FIXTURES / fixture
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, work / name)
    (work / "fixtures").symlink_to(FIXTURES)  # the API snippet runs "from the repository root"
    return work


def readme_env(tmp_path: Path) -> dict[str, str]:
    cache = tmp_path / "hub-cache"
    for repo_id, fixture in HUB_REPOS.items():
        fill_cache(cache, repo_id, {MAIN: files_of(FIXTURES / fixture)}, {"main": MAIN})
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(cache),
            "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": str(ROOT)}


def test_the_readme_documents_commands_and_names_them_all_here() -> None:
    commands = readme_commands()
    assert len(commands) >= 10 and any(code == 3 for _, code in commands)
    words = {word.removeprefix("./") for argv, _ in commands for word in argv}
    hub_ids = {w for w in words if w.count("/") == 1 and not Path(w).suffix and not w.startswith(".")}
    assert hub_ids <= set(HUB_REPOS), hub_ids - set(HUB_REPOS)
    inputs = {"master", "ggml-model-i2_s.gguf", "ggml-model-tl2.gguf"}
    assert inputs <= words and inputs <= set(LOCAL_NAMES)


def test_every_readme_command_exits_as_documented(workdir: Path, tmp_path: Path) -> None:
    env = readme_env(tmp_path)
    for argv, expected in readme_commands():
        result = subprocess.run(bitnet_pack_command() + argv[1:], cwd=workdir, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == expected, (shlex.join(argv), result.stdout[-2000:], result.stderr[-2000:])
        assert "Traceback" not in result.stderr, shlex.join(argv)
        if expected:
            assert result.stderr.strip().splitlines()[-1].startswith("Error: "), shlex.join(argv)


@pytest.mark.parametrize("index", range(len(code_blocks("python"))))
def test_readme_python_snippet_runs_as_pasted(index: int, workdir: Path, tmp_path: Path) -> None:
    snippet = code_blocks("python")[index]
    result = subprocess.run([sys.executable, "-c", snippet], cwd=workdir, env=readme_env(tmp_path),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_reference_names_every_flag_and_environment_variable() -> None:
    from bitnet_pack.cli.main import main

    text = README.read_text()
    flags = {opt for param in main.params for opt in param.opts if opt.startswith("-")}
    for command in main.commands.values():
        flags |= {opt for param in command.params for opt in param.opts if opt.startswith("--") and opt != "--help"}
    assert not {flag for flag in flags if flag not in text}, "flags missing from the README"
    code = "\n".join(p.read_text() for p in (ROOT / "bitnet_pack").rglob("*.py"))
    variables = set(re.findall(r"\b(BITNET_PACK_[A-Z]+|HF_[A-Z_]+)\b", code))
    assert len(variables) >= 4 and not {v for v in variables if v not in text}, "variables missing from the README"


def test_the_documented_shell_completion_completes(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "bitnet-pack"
    assert "_BITNET_PACK_COMPLETE=bash_source bitnet-pack" in README.read_text()
    env = {**os.environ, "_BITNET_PACK_COMPLETE": "bash_complete", "COMP_WORDS": "bitnet-pack convert x --outt",
           "COMP_CWORD": "3"}
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bitnet_pack"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and "plain,--outtype" in result.stdout.splitlines()
