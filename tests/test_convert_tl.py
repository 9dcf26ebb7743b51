"""TL1/TL2 through the CLI: the peer's bytes, tilings chosen or given, files that decode unaided."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.formats.kernel_config import read_kernel_config
from bitnet_pack.pipeline.sources import load_weights

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tiny-bitnet"


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("kind", ["tl1", "tl2"])
def test_tl_from_master_equals_bitnet_cpps_converter(kind: str, tiny_a: Path, tmp_path: Path) -> None:
    ini = tiny_a / f"tiny-a-{kind}.kernel_config.ini"
    out = tmp_path / f"ours-{kind}.gguf"
    code, _, err = run("convert", tiny_a / "tiny-a-bf16", out, "--outtype", kind, "--target", "bitnet.cpp",
                       "--kernel-config", ini, "--arch", "bitnet-25", "--embedding-type", "f32")
    assert code == 0, err
    ours, peer = GGUFFile(out), GGUFFile(tiny_a / f"tiny-a-{kind}.gguf")
    assert set(ours.tensors) == set(peer.tensors)
    for name, theirs in peer.tensors.items():
        mine = ours.tensors[name]
        assert (mine.type_name, mine.shape, mine.nbytes) == (theirs.type_name, theirs.shape, theirs.nbytes), name
        if theirs.type_name == kind.upper():  # every byte, the scale slot included
            assert np.array_equal(ours.tensor_bytes(name), peer.tensor_bytes(name)), name
        else:
            assert np.array_equal(ours.tensor_array(name), peer.tensor_array(name)), name
    for key in peer.kv:
        if not key.startswith("tokenizer.") and key != "general.name":
            assert ours.get(key) == peer.get(key), key
    assert read_kernel_config(tmp_path / f"ours-{kind}.kernel_config.ini") == read_kernel_config(ini)


def test_peer_tl2_needs_its_kernel_config_and_then_decodes(tiny_a: Path, tmp_path: Path) -> None:
    alone = tmp_path / "tl2.gguf"  # without the sibling tl2.kernel_config.ini that would be found
    shutil.copyfile(tiny_a / "tiny-a-tl2.gguf", alone)
    code, _, err = run("convert", alone, tmp_path / "a", "--outtype", "hf-packed")
    error = [line for line in err.splitlines() if line.startswith("Error:")]
    assert code == 1 and len(error) == 1 and "--kernel-config" in error[0] and "Traceback" not in err
    assert not (tmp_path / "a").exists()
    code, _, err = run("convert", alone, tmp_path / "b", "--outtype", "hf-packed",
                       "--kernel-config", tiny_a / "tiny-a-tl2.kernel_config.ini")
    assert code == 0, err
    _, back = load_weights(tmp_path / "b")
    _, packed = load_weights(tiny_a / "tiny-a-packed")
    for name, weight in packed.items():
        if hasattr(weight, "codes"):
            assert np.array_equal(back[name].codes, weight.codes) and back[name].beta == weight.beta, name


@pytest.mark.parametrize("kind", ["tl1", "tl2"])
def test_automatic_tiling_and_our_files_decode_unaided(kind: str, tmp_path: Path) -> None:
    out = tmp_path / f"fixture-{kind}.gguf"
    assert run("convert", FIXTURE, out, "--outtype", kind)[0] == 0
    config = read_kernel_config(tmp_path / f"fixture-{kind}.kernel_config.ini", kind=kind)
    assert set(config) == {(256, 256), (128, 256), (768, 256), (256, 768)}
    _, master = load_weights(FIXTURE)
    _, back = load_weights(out)  # no --kernel-config: the tiling travels in bitnet_pack.kernel_config
    for name, weight in master.items():
        if hasattr(weight, "codes"):
            assert np.array_equal(back[name].codes, weight.codes) and back[name].beta == weight.beta, name


def test_tl2_type_id_follows_the_fork_generation(tmp_path: Path) -> None:
    assert run("convert", FIXTURE, tmp_path / "new.gguf", "--outtype", "tl2", "--type-ids", "2026")[0] == 0
    new = GGUFFile(tmp_path / "new.gguf")
    assert {t.type_id for t in new.tensors.values() if t.type_name == "TL2"} == {42}
    _, back = load_weights(tmp_path / "new.gguf")
    assert len([w for w in back.values() if hasattr(w, "codes")]) == 14


def test_untileable_shape_is_refused_before_writing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ini"
    bad.write_text("[Kernels_0]\nm = 256\nk = 256\nbm = 384\nbk = 96\nbmm = 32\n")
    code, _, err = run("convert", FIXTURE, tmp_path / "x.gguf", "--outtype", "tl2", "--kernel-config", bad)
    assert code == 1 and "M % BM" in err and not (tmp_path / "x.gguf").exists()
