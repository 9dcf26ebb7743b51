"""Float GGUF outtypes keep floats: every float tensor of an f32/f16/bf16 file is in the
outtype's type (norms F32, as convert_hf_to_gguf.py), token_embd and output included, and
`general.file_type` says so; ternary outtypes keep the F16 embedding unless told otherwise."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile

FILE_TYPE = {"f32": 0, "f16": 1, "bf16": 32}  # llama_ftype: ALL_F32, MOSTLY_F16, MOSTLY_BF16


def convert(src: Path, out: Path, *args: str) -> Path:
    result = CliRunner().invoke(main, ["convert", str(src), str(out), *args])
    assert result.exit_code == 0, result.output
    return out


def types(path: Path) -> dict[str, str]:
    with GGUFFile(path) as file:
        return {name: info.type_name for name, info in file.tensors.items()}, file.get("general.file_type")


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("source", ["tiny-a/tiny-a-bf16", "fam-llama3/fam-llama3-hf"])
def test_float_outtypes_write_every_float_tensor_in_their_type(source: str, outtype: str, tmp_path: Path) -> None:
    src = Path(__file__).parents[1] / "fixtures" / source
    found, file_type = types(convert(src, tmp_path / "out.gguf", "--outtype", outtype))
    want = outtype.upper()
    assert file_type == FILE_TYPE[outtype]
    assert found["token_embd.weight"] == want and found.get("output.weight", want) == want
    for name, type_name in found.items():
        assert type_name == ("F32" if "norm" in name else want), name


def test_ternary_outtypes_keep_the_f16_embedding_unless_told(tmp_path: Path) -> None:
    src = Path(__file__).parents[1] / "fixtures" / "fam-llama3" / "fam-llama3-hf"
    found, _ = types(convert(src, tmp_path / "a.gguf", "--outtype", "tq2_0"))
    assert found["token_embd.weight"] == "F16" and found["output.weight"] == "F16"
    found, _ = types(convert(src, tmp_path / "b.gguf", "--outtype", "tq2_0", "--embedding-type", "f32"))
    assert found["token_embd.weight"] == "F32" and found["output.weight"] == "F32"
    found, _ = types(convert(src, tmp_path / "c.gguf", "--outtype", "f32", "--embedding-type", "f16"))
    assert found["token_embd.weight"] == "F16"
