"""verify runs each file from its own bytes: every pair of layouts made from one checkpoint
gives bit-identical logits, and a mistake repeated in a layout's encode and decode is caught."""
from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bitnet_pack.cli.commands.model_io import loaded
from bitnet_pack.cli.main import main
from bitnet_pack.engine.kernel import PackedMatrix
from bitnet_pack.formats.layouts.tl2 import TL2
from bitnet_pack.formats.ternary import TernaryWeight
from bitnet_pack.pipeline.sources import load_weights

# outtype -> the layout the model's PackedMatrix must read (the file's own)
LAYOUTS = {"hf-packed": "hf", "i2_s": "i2_s", "i2_s_arm": "i2_s_arm", "tl1": "tl1", "tl2": "tl2",
           "tq1_0": "tq1_0", "tq2_0": "tq2_0"}
PROMPT = "1,15,27,300,42"


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def converted(tiny_a: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tiny-a-packed (bf16 betas, which fp16 holds exactly) in every layout, bf16 embedding."""
    out = tmp_path_factory.mktemp("layouts")
    paths = {}
    for outtype in LAYOUTS:
        path = out / (outtype if outtype == "hf-packed" else f"tiny-a-{outtype}.gguf")
        extra = () if outtype == "hf-packed" else ("--embedding-type", "bf16")
        code, _, err = run("convert", tiny_a / "tiny-a-packed", path, "--outtype", outtype, *extra)
        assert code == 0, err
        paths[outtype] = path
    return paths


def test_each_model_multiplies_from_its_files_own_bytes(converted):
    for outtype, path in converted.items():
        with loaded(str(path), "reference") as (model, _):
            projections = [v for v in model.tensors.values() if isinstance(v, PackedMatrix)]
            assert len(projections) == 14
            for matrix in projections:
                assert matrix.layout == LAYOUTS[outtype], outtype
                assert not matrix.data.flags.owndata and not matrix.data.flags.writeable, outtype  # a file view


@pytest.mark.parametrize("a,b", list(combinations(LAYOUTS, 2)))
def test_every_pair_of_layouts_gives_identical_logits(converted, a, b):
    """One checkpoint, two layouts: same codes and betas, so the W1.58A8 math gives the same
    int32 sums and the same float32 logits, whichever bytes the kernel reads."""
    code, out, err = run("verify", converted[a], converted[b], "--ids", PROMPT, "--tokens", "6", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["identical"] and report["weights"]["identical"], report


def reversed_columns(weight: TernaryWeight) -> TernaryWeight:
    return TernaryWeight(np.ascontiguousarray(weight.codes[:, ::-1]), weight.beta)


def test_a_mirrored_layout_bug_is_caught(tiny_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """TL2's encode and decode given the same wrong permutation (columns reversed): decoding
    our file gives back the master's codes, so comparing decoded codes with the source sees
    nothing; the kernel reading the file's bytes does, against bitnet.cpp's own TL2 file and
    against the master: exit 3."""
    ini = tiny_a / "tiny-a-tl2.kernel_config.ini"
    peer = tiny_a / "tiny-a-tl2.gguf"
    args = ("--outtype", "tl2", "--target", "bitnet.cpp", "--kernel-config", ini, "--arch", "bitnet-25",
            "--embedding-type", "f32")
    right, wrong = tmp_path / "right.gguf", tmp_path / "wrong.gguf"
    assert run("convert", tiny_a / "tiny-a-bf16", right, *args)[0] == 0
    verify = ("verify", peer, "--kernel-config", ini, "--ids", PROMPT, "--tokens", "4")
    assert run(*verify[:1], right, *verify[1:])[0] == 0  # the unbroken converter makes the peer's file

    encode, decode = TL2.encode, TL2.decode
    monkeypatch.setattr(TL2, "encode", lambda self, w, **kw: encode(self, reversed_columns(w), **kw))
    monkeypatch.setattr(TL2, "decode", lambda self, *a, **kw: reversed_columns(decode(self, *a, **kw)))
    assert run("convert", tiny_a / "tiny-a-bf16", wrong, *args)[0] == 0
    ours = load_weights(wrong)[1]
    master = load_weights(tiny_a / "tiny-a-bf16")[1]
    for name, weight in master.items():
        if isinstance(weight, TernaryWeight):  # what a decode-and-re-encode comparison looks at
            assert np.array_equal(ours[name].codes, weight.codes), name
    code, out, err = run(*verify[:1], wrong, *verify[1:])
    assert code == 3, out + err
    assert "differ at prompt, position 0" in err and "ternary codes differ in 14 tensor(s)" in out
    assert "ternary codes differ" not in err  # the cause is said once, on stdout
    code, out, err = run("verify", wrong, tiny_a / "tiny-a-bf16", "--ids", PROMPT, "--tokens", "4")
    assert code == 3 and "ternary codes differ in 14 tensor(s)" in out, out + err


@pytest.mark.parametrize("kind", ["tl1", "tl2"])
def test_bitnet_cpps_own_files_give_identical_logits(tiny_a: Path, kind: str):
    """The peer's I2_S and TL files of tiny-a (one checkpoint, bitnet.cpp's converters): each
    run from its own bytes, the same logits bit for bit."""
    ini = tiny_a / f"tiny-a-{kind}.kernel_config.ini"
    code, out, err = run("verify", tiny_a / "tiny-a-i2_s.gguf", tiny_a / f"tiny-a-{kind}.gguf", "--kernel-config", ini,
                         "--ids", PROMPT, "--tokens", "6", "--json")
    assert code == 0, err
    assert json.loads(out)["identical"]


def test_roundtrip_catches_a_mirrored_layout_bug(tiny_a: Path, monkeypatch: pytest.MonkeyPatch):
    """The same broken TL2 encode/decode pair: the codes decode back and the round trip is
    exact, but the converted file's own bytes give other logits: roundtrip exits 3."""
    assert run("roundtrip", tiny_a / "tiny-a-packed", "--layouts", "tl2", "--tokens", "2")[0] == 0
    encode, decode = TL2.encode, TL2.decode
    monkeypatch.setattr(TL2, "encode", lambda self, w, **kw: encode(self, reversed_columns(w), **kw))
    monkeypatch.setattr(TL2, "decode", lambda self, *a, **kw: reversed_columns(decode(self, *a, **kw)))
    code, out, err = run("roundtrip", tiny_a / "tiny-a-packed", "--layouts", "tl2", "--tokens", "2")
    assert code == 3, out + err
    assert "decoded weights equal after the declared rounding but the file's own bytes give other logits" in out + err
