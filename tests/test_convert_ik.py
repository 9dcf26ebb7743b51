"""`convert ... --outtype iq1_bn|iq2_bn|iq2_bn_r4`: whole files compared with ik_llama.cpp's
`-embd_f16` files (every tensor byte for byte, every KV ik reads), ik's files read back into
other layouts, and what convert / inspect say about what ik cannot run."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, TINY_A

import bitnet_pack
from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.errors import UsageError
from bitnet_pack.formats.layouts import get_layout
from bitnet_pack.proof.inspection import describe

sys.path.insert(0, str(FIXTURES))
from make_ik_digests import digests, kv_digest  # noqa: E402

IK_A, IK_B = FIXTURES / "ik-tiny-a", FIXTURES / "ik-tiny-b"
TYPES = ("iq1_bn", "iq2_bn", "iq2_bn_r4")
# What ik reads but neither peer file has: our no-op rope scaling, and keys whose value equals
# the default ik computes (head_dim = n_embd / n_head, the vocabulary = the token count).
EXTRA_KEYS = {"rope.scaling.type": "linear", "rope.scaling.factor": 1.0}
DEFAULTED = ("rope.dimension_count", "vocab_size")
NOT_READ_BY_IK = ("general.name", "general.size_label", "general.type")  # labels, not model facts


def assert_kvs_ik_reads_match(ours: dict, peer: dict, n_vocab: int) -> None:
    arch = peer["general.architecture"]
    assert ours["general.architecture"] == arch
    for key, value in peer.items():
        if key not in NOT_READ_BY_IK:
            assert ours.get(key) == value, key
    extra = {k for k in ours if k not in peer and not k.startswith(("bitnet_pack.", "general."))}
    for key in extra:
        short = key.removeprefix(f"{arch}.")
        if short in EXTRA_KEYS:
            assert ours[key] == EXTRA_KEYS[short], key
        elif short == "rope.dimension_count":
            assert ours[key] == peer[f"{arch}.embedding_length"] // peer[f"{arch}.attention.head_count"]
        elif short == "vocab_size":
            assert ours[key] == n_vocab
        else:
            assert key.startswith("tokenizer."), f"{key} is written but not in ik's file"


def kvs(path: Path) -> dict:
    with GGUFFile(path) as file:
        return {key: kv_digest(file.get(key)) for key in file.kv}


@pytest.mark.parametrize("outtype", TYPES)
def test_i2s_to_ik_types_equals_ik_llama_quantize(tmp_path: Path, outtype: str) -> None:
    out = tmp_path / f"tiny-a-{outtype}.gguf"
    report = bitnet_pack.convert(TINY_A / "tiny-a-i2_s.gguf", out, outtype=outtype)
    peer = IK_A / f"tiny-a-{outtype}-embd_f16.gguf"
    with GGUFFile(out) as ours, GGUFFile(peer) as theirs:
        assert list(ours.tensors) == list(theirs.tensors)
        for name, info in theirs.tensors.items():
            assert (ours.tensors[name].type_id, ours.tensors[name].shape) == (info.type_id, info.shape)
            assert ours.tensor_bytes(name).tobytes() == theirs.tensor_bytes(name).tobytes(), name
    with GGUFFile(peer) as theirs:
        n_vocab = theirs.tensors["token_embd.weight"].shape[0]
    assert_kvs_ik_reads_match(kvs(out), kvs(peer), n_vocab)
    assert any("runs only in ik_llama.cpp" in n for n in report.notes)
    assert any("token_embd is written F16" in n and "Q6_K" in n for n in report.notes)
    assert any("in_features 256" in n for n in report.notes) == (outtype != "iq2_bn_r4")
    assert any("rounded 14 fp32 betas" in n for n in report.notes) == (outtype == "iq1_bn")


def test_master_to_ik_types_equals_ik_llama_quantize(tmp_path: Path, shared_vectors: Path) -> None:
    table = json.loads((IK_B / "ik-tiny-b.digests.json").read_text())
    for outtype in TYPES:
        out = tmp_path / f"tiny-b-{outtype}.gguf"
        bitnet_pack.convert(shared_vectors / "ik-tiny-b" / "tiny-b-bf16", out, outtype=outtype)
        ours, peer = digests(out), table[f"tiny-b-{outtype}-embd_f16.gguf"]
        assert ours["tensors"] == peer["tensors"], outtype
        assert_kvs_ik_reads_match(ours["kv"], peer["kv"], peer["tensors"]["token_embd.weight"]["shape"][0])


@pytest.mark.parametrize("outtype", ["i2_s", "tq2_0", "iq2_bn_r4"])
def test_ik_files_read_back_into_other_layouts(tmp_path: Path, outtype: str) -> None:
    """ik's IQ1_BN file -> another layout: the I2_S codes, and beta as IQ1_BN's fp16 row scale."""
    out = tmp_path / f"back-{outtype}.gguf"
    bitnet_pack.convert(IK_A / "tiny-a-iq1_bn-embd_f16.gguf", out, outtype=outtype)
    with GGUFFile(out) as back, GGUFFile(TINY_A / "tiny-a-i2_s.gguf") as source:
        for name, info in source.tensors.items():
            if info.type_name != "I2_S":
                assert back.tensor_bytes(name).tobytes() == source.tensor_bytes(name).tobytes()
                continue
            want = get_layout("i2_s").decode(source.tensor_bytes(name), info.shape)
            got = get_layout(outtype).decode(back.tensor_bytes(name), info.shape)
            assert np.array_equal(got.codes, want.codes), name
            assert got.beta == np.float32(np.float16(want.beta)), name


def test_iq2_bn_file_to_iq2_bn_r4_is_ik_repack(tmp_path: Path) -> None:
    out = tmp_path / "r4.gguf"
    bitnet_pack.convert(IK_A / "tiny-a-iq2_bn-embd_f16.gguf", out, outtype="iq2_bn_r4")
    with GGUFFile(out) as ours, GGUFFile(IK_A / "tiny-a-iq2_bn_r4-embd_f16.gguf") as theirs:
        for name in theirs.tensors:
            assert hashlib.sha256(ours.tensor_bytes(name)).digest() == hashlib.sha256(theirs.tensor_bytes(name)).digest()


@pytest.mark.parametrize(("outtype", "says"), [("i2_s", "garbage"), ("tq2_0", "SIGFPE"), ("tl2", "MXFP4"),
                                               ("tq1_0", "crashes")])
def test_convert_says_what_ik_cannot_run(tmp_path: Path, outtype: str, says: str) -> None:
    report = bitnet_pack.convert(TINY_A / "tiny-a-i2_s.gguf", tmp_path / f"x-{outtype}.gguf", outtype=outtype)
    assert any("ik_llama.cpp" in n and says in n for n in report.notes), report.notes


def test_inspect_says_what_ik_cannot_run() -> None:
    assert any("no I2_S matmul" in n for n in describe(TINY_A / "tiny-a-i2_s.gguf").notes)
    assert any("MXFP4" in n for n in describe(TINY_A / "tiny-a-tl2.gguf").notes)
    assert any("runs only in ik_llama.cpp" in n for n in describe(IK_A / "tiny-a-iq2_bn_r4-embd_f16.gguf").notes)


def test_ik_types_refuse_mainline_naming(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="loads bitnet.cpp's arch names"):
        bitnet_pack.convert(TINY_A / "tiny-a-i2_s.gguf", tmp_path / "x.gguf", outtype="iq2_bn", target="llama.cpp")
