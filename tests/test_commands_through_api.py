"""verify, generate and diff go through the library API like convert: a read option the checkpoints
have no use for is refused (before: `verify A B --kernel-config bogus.ini` was silently ignored)."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import bitnet_pack
from bitnet_pack import api
from bitnet_pack.cli.main import main
from bitnet_pack.errors import EXIT_OK, EXIT_USAGE, UsageError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tiny-bitnet"


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_verify_refuses_a_kernel_config_neither_model_uses(tmp_path: Path) -> None:
    code, out = run("verify", FIXTURE, FIXTURE, "--kernel-config", tmp_path / "bogus.ini", "--tokens", 1)
    assert code == EXIT_USAGE, out
    assert "tl1/tl2" in out.lower()


def test_verify_without_the_option_still_passes() -> None:
    code, out = run("verify", FIXTURE, FIXTURE, "--tokens", 1, "--ids", "1,2,3")
    assert code == EXIT_OK, out


@pytest.mark.parametrize("args", [("generate", FIXTURE, "--prompt", "Hi", "--tokens", 1),
                                  ("diff", FIXTURE, FIXTURE),
                                  ("verify", FIXTURE, "--record", "TRACE", "--tokens", 1, "--ids", "1,2")])
def test_generate_and_record_refuse_it_too(tmp_path: Path, args: tuple) -> None:
    args = tuple(tmp_path / "t.npz" if a == "TRACE" else a for a in args)
    code, out = run(*args, "--kernel-config", tmp_path / "bogus.ini")
    assert code == EXIT_USAGE, out
    assert not (tmp_path / "t.npz").exists()


def test_the_api_refuses_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="(?i)tl1/tl2"):
        bitnet_pack.verify(FIXTURE, FIXTURE, tokens=1, kernel_config=tmp_path / "bogus.ini")
    with pytest.raises(UsageError, match="(?i)tl1/tl2"):
        api.diff(FIXTURE, FIXTURE, kernel_config=tmp_path / "bogus.ini")
    with pytest.raises(UsageError, match="(?i)tl1/tl2"), api.load(FIXTURE, kernel_config=tmp_path / "bogus.ini"):
        pass


def test_diff_through_the_api_still_compares() -> None:
    code, out = run("diff", FIXTURE, FIXTURE)
    assert code == EXIT_OK, out
    assert api.diff(FIXTURE, FIXTURE).identical
