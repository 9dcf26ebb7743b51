"""Issue 19, item 2, over everything the registry has: `verify MASTER X` for every outtype X
that `convert` writes from tiny-a's bf16 master with its defaults exits 0, naming the rounding X's
layout declares (and the layout); `--strict` exits 3 exactly there. What is expected is read
from the registry (`LayoutSpec.beta_rounding`) and from the master's own bytes (does F16 change
its embedding?), not from the report. bitnet-gpu from a master is the honest exception: its
runtime's converter ternarizes in bf16, so codes differ and verify says how many (exit 3).
Also quantized embeddings (q8_0 / q6_k), emb-gemma3's F16 norms, and flipped codes."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FIXTURES

from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.formats.layouts import find_layout
from bitnet_pack.pipeline.sinks.factory import directory_outtypes, gguf_outtypes

IDS = "1,15,27,300,42"
GEMMA = FIXTURES / "emb-gemma3"
# every registered outtype, as a directory or a GGUF (bf16 is both: a master, a float GGUF)
CASES = [(o, "dir") for o in directory_outtypes()] + [(o, "gguf") for o in gguf_outtypes()]
FLOAT_GGUF = {"f16": ("fp16", "F16"), "bf16": ("bf16", "BF16"), "f32": ("", "F32")}


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def report_of(stdout: str) -> dict:
    return json.JSONDecoder().raw_decode(stdout[stdout.index("{"):])[0]


def verify(a: Path, b: Path, *flags: str) -> tuple[int, dict, str]:
    code, out, err = run("verify", a, b, "--ids", IDS, "--tokens", "3", "--json", *flags)
    return code, report_of(out), out + err


@pytest.fixture(scope="module")
def master(tiny_a: Path) -> Path:
    return tiny_a / "tiny-a-bf16"


@pytest.fixture(scope="module")
def f16_rounds_the_embedding(master: Path) -> bool:
    """Whether F16 changes any value of the master's bf16 embedding (read with numpy here)."""
    data = (master / "model.safetensors").read_bytes()
    size = int.from_bytes(data[:8], "little")
    info = json.loads(data[8:8 + size])["model.embed_tokens.weight"]
    assert info["dtype"] == "BF16"
    begin, end = (8 + size + o for o in info["data_offsets"])
    values = (np.frombuffer(data[begin:end], np.uint16).astype(np.uint32) << 16).view(np.float32)
    return not np.array_equal(values.astype(np.float16).astype(np.float32), values)


@pytest.fixture(scope="module")
def converted(master: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[Path, str]]:
    out, made = tmp_path_factory.mktemp("declared"), {}
    for outtype, container in CASES:
        path = out / (outtype if container == "dir" else f"{outtype}.gguf")
        code, stdout, stderr = run("convert", master, path, "--outtype", outtype)
        assert code == 0, stdout + stderr
        made[(outtype, container)] = (path, stdout + stderr)
    return made


def expected_roundings(outtype: str, container: str, embedding_rounds: bool) -> list[str]:
    """What the registry says X rounds of a master, as verify must name it."""
    if container == "dir":
        return ["β to bf16 (hf weight_scale BF16"] if outtype == "hf-packed" else []
    if outtype in FLOAT_GGUF:
        kind, type_name = FLOAT_GGUF[outtype]  # projections stored as t * beta in that type
        rounds = embedding_rounds if kind == "fp16" else False  # a bf16 master's embedding fits BF16 and F32
        return [f"β to {kind} ({type_name})"] * bool(kind) + [f"embedding to F16 ({type_name} GGUF)"] * rounds
    layout = find_layout(outtype)
    named = [f"embedding to F16 ({layout.name.upper()} GGUF)"] if embedding_rounds else []
    if layout.beta_rounding:
        where = layout.spec.type_name + (" row scales" if layout.spec.row_bytes else "")
        named.append(f"β to {layout.beta_rounding} ({where})")
    return named


@pytest.mark.parametrize(("outtype", "container"), [c for c in CASES if c != ("bitnet-gpu", "dir")])
def test_verify_master_against_each_outtype(converted, master: Path, f16_rounds_the_embedding: bool,
                                            outtype: str, container: str) -> None:
    path, _ = converted[(outtype, container)]
    code, report, text = verify(master, path)
    assert code == 0, text
    assert report["identical"] and report["weights"]["identical"]
    named = expected_roundings(outtype, container, f16_rounds_the_embedding)
    for rounding in named:
        assert rounding in report["rounded"], (rounding, report["rounded"])
        assert rounding in report["cause"]
    assert bool(report["rounded"]) == bool(named), report["rounded"]
    strict_code, strict, text = verify(master, path, "--strict")
    assert strict_code == (3 if named else 0), text  # --strict fails exactly where something was rounded
    assert strict["rounded"] == "" and strict["strict"]


def test_bitnet_gpu_from_a_master_is_identical_after_its_own_converter(converted, master: Path) -> None:
    """bitnet.cpp's GPU converter ternarizes a master in bf16 arithmetic (`quantize_master`), so
    some codes differ from float32 absmean's. That converter is the layout's declared rounding of
    a master: A ternarized by it gives exactly B's codes and betas, so verify exits 0 naming it and
    the same counts convert announced; --strict exits 3 on the codes and the betas."""
    path, note = converted[("bitnet-gpu", "dir")]
    codes, projections = map(int, re.search(r"(\d+) codes in (\d+) projections differ", note).groups())
    assert codes > 0
    code, report, text = verify(master, path)
    assert code == 0, text
    assert "codes and β by bitnet-gpu's own converter" in report["rounded"], report["rounded"]
    assert f"({codes} codes in {projections} tensors differ from float32 absmean's)" in report["rounded"]
    code, strict, text = verify(master, path, "--strict")
    assert code == 3 and "beta differs in" in strict["cause"] and not strict["rounded"], text
    assert f"ternary codes differ in {projections} tensor(s)" in strict["cause"], strict["cause"]


def test_a_flipped_code_in_a_gpu_checkpoint_is_still_a_difference(converted, master: Path, tmp_path: Path) -> None:
    """Only the converter's exact codes count as its rounding: one code changed in the stored
    checkpoint makes the master's side differ again (exit 3)."""
    import torch  # the GPU checkpoint is torch pickles (the test extras install torch)

    path, _ = converted[("bitnet-gpu", "dir")]
    broken = tmp_path / "gpu-broken"
    shutil.copytree(path, broken)
    state = torch.load(broken / "model_state_int2.pt", weights_only=True)
    name = next(k for k in state if k.endswith("wqkv.weight"))
    state[name] = state[name].clone()
    state[name].view(-1)[0] ^= 0x01  # one 2-bit code of the first byte
    torch.save(state, broken / "model_state_int2.pt")
    code, report, text = verify(master, broken)
    assert code == 3, text


def test_bitnet_gpu_from_i2s_rounds_beta_to_bf16(master: Path, tmp_path: Path) -> None:
    i2s = tmp_path / "m.gguf"
    assert run("convert", master, i2s, "--outtype", "i2_s", "--embedding-type", "bf16")[0] == 0
    gpu = tmp_path / "gpu"
    assert run("convert", i2s, gpu, "--outtype", "bitnet-gpu")[0] == 0
    code, report, text = verify(i2s, gpu)
    assert code == 0 and report["identical"], text
    assert "β to bf16 (bitnet-gpu weight_scale) in 14 tensors on A" in report["rounded"]  # applied to A
    assert verify(i2s, gpu, "--strict")[0] == 3


@pytest.mark.parametrize("embedding", ["q8_0", "q6_k"])
def test_quantized_embeddings_are_the_masters_quantized_by_the_same_quantizer(master: Path, tmp_path: Path,
                                                                               embedding: str) -> None:
    out = tmp_path / f"{embedding}.gguf"
    assert run("convert", master, out, "--outtype", "i2_s", "--embedding-type", embedding)[0] == 0
    code, report, text = verify(master, out)
    assert code == 0 and report["identical"], text
    assert f"embedding to {embedding.upper()} (ggml's quantizer, I2_S GGUF) in 1 tensor on A" in report["rounded"]
    assert verify(master, out, "--strict")[0] == 3
    code, out_text, _ = run("diff", master, out)
    assert code == 0 and f"embedding to {embedding.upper()}" in out_text


def flip_first_code(src: Path, dst: Path, tensor: str) -> None:
    """dst: src with the top 2-bit code of `tensor`'s first byte moved to another valid one."""
    shutil.copyfile(src, dst)
    with GGUFFile(dst, flavour="2025") as file:
        offset = file.tensors[tensor].abs_offset
    data = bytearray(dst.read_bytes())
    data[offset] = (data[offset] & 0x3F) | ((0 if data[offset] >> 6 else 2) << 6)
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("outtype", ["tq2_0", "i2_s"])
def test_a_flipped_code_still_fails_after_rounding(converted, master: Path, tmp_path: Path, outtype: str) -> None:
    flipped = tmp_path / "flipped.gguf"
    flip_first_code(converted[(outtype, "gguf")][0], flipped, "blk.0.ffn_up.weight")
    code, report, text = verify(master, flipped)
    assert code == 3, text
    assert "ternary codes differ in 1 tensor(s): model.layers.0.mlp.up_proj.weight (1 of" in report["cause"]


def test_gemma3_hf_against_its_converters_i2s_after_rounding_norms_to_f16(tmp_path: Path) -> None:
    """The converter stores Gemma3's 1 + w norms (and token_embd) in F16: a declared rounding."""
    code, out, err = run("verify", GEMMA / "hf", GEMMA / "emb-gemma3-i2_s.gguf")
    assert code == 0, out + err
    assert "identical embeddings (bit for bit) after rounding" in out and "norms to F16 (I2_S GGUF)" in out
    code, out, err = run("verify", GEMMA / "hf", GEMMA / "emb-gemma3-i2_s.gguf", "--strict")
    assert code == 3 and "blk.0.attn_norm.weight" in out + err
    code, out, _ = run("diff", GEMMA / "hf", GEMMA / "emb-gemma3-i2_s.gguf")
    assert code == 0 and "norms to F16 (I2_S GGUF)" in out
    assert run("diff", GEMMA / "hf", GEMMA / "emb-gemma3-i2_s.gguf", "--strict")[0] == 3
    flipped = tmp_path / "flipped.gguf"
    flip_first_code(GEMMA / "emb-gemma3-i2_s.gguf", flipped, "blk.0.attn_q.weight")
    code, out, err = run("verify", GEMMA / "hf", flipped)
    assert code == 3 and "blk.0.attn_q.weight: 1 codes differ" in out + err


def test_iq1_bn_rounds_each_rows_scale_as_its_entry_declares() -> None:
    """IQ1_BN's declared rounding (its entry's beta_rounding, applied to beta) is the rounding of
    every row's stored fp16 d: rows with a non-zero code hold round(beta), all-zero rows 0, and
    the decoded beta is the declared rounding of the encoded one."""
    from bitnet_pack.engine.rounding import Rounding
    from bitnet_pack.formats.layouts import get_layout
    from bitnet_pack.formats.ternary import TernaryWeight

    layout = get_layout("iq1_bn")
    rng = np.random.default_rng(19)
    codes = rng.integers(-1, 2, size=(6, 128)).astype(np.int8)
    codes[[1, 4]] = 0  # all-zero rows: d = 0, every code 2
    beta = np.float32(0.123456789)
    data = layout.encode(TernaryWeight(codes, beta), lossy=True)
    rows = np.frombuffer(data.tobytes(), np.uint8).reshape(6, -1)
    d = rows[:, :2].copy().view("<f2").astype(np.float32).reshape(-1)
    declared = Rounding(layout.beta_rounding, True, "IQ1_BN row scales", layout="iq1_bn").beta(beta)
    assert declared != beta and declared == np.float32(np.float16(beta))
    assert d[[0, 2, 3, 5]].tolist() == [declared] * 4 and d[[1, 4]].tolist() == [0.0, 0.0]
    decoded = layout.decode(data, codes.shape)
    assert decoded.beta.tobytes() == declared.tobytes() and np.array_equal(decoded.codes, codes)
