"""GGUF container: round trips, gguf-py interop, the bitnet.cpp peer files byte for byte,
crafted corrupt files (tests/corrupt_gguf.py), a header fuzz, and the writer's state machine."""
from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import gguf
import numpy as np
import pytest
from corrupt_gguf import CASES, base_bytes
from gguf import GGUFValueType as V
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet_pack.containers.gguf import FLAVOUR_KEY, GGUFFile, GGUFWriter, KVField, iter_chunks
from bitnet_pack.containers.gguf_values import infer_vtype
from bitnet_pack.errors import BitnetPackError, DuplicateTensor, FormatError, UnknownTensorType, UsageError
from bitnet_pack.formats.dtypes import bf16_to_f32, f32_to_bf16
from bitnet_pack.formats.ggml_types import TypeTable, i2s_nbytes, pad, tl1_nbytes, tl2_nbytes

RNG = np.random.default_rng(20250603)
F32, F16, BF16, Q8_0, TQ2_0, I2_S = 0, 1, 30, 8, 35, 36

# (key, value given to add_kv, explicit vtype or None, expected vtype, expected subtype, expected value)
KV_TABLE = [
    ("t.u8", 200, V.UINT8, V.UINT8, None, 200),
    ("t.i8", -5, V.INT8, V.INT8, None, -5),
    ("t.u16", 60000, V.UINT16, V.UINT16, None, 60000),
    ("t.i16", -30000, V.INT16, V.INT16, None, -30000),
    ("t.u32", 4_000_000_000, None, V.UINT32, None, 4_000_000_000),
    ("t.i32", -(2**31), None, V.INT32, None, -(2**31)),
    ("t.f32", 0.1, None, V.FLOAT32, None, float(np.float32(0.1))),
    ("t.bool", True, None, V.BOOL, None, True),
    ("t.false", False, V.BOOL, V.BOOL, None, False),
    ("t.str", "héllo ✓ \n tab\t", None, V.STRING, None, "héllo ✓ \n tab\t"),
    ("t.empty_str", "", None, V.STRING, None, ""),
    ("t.u64", 2**64 - 1, None, V.UINT64, None, 2**64 - 1),
    ("t.i64", -(2**63), None, V.INT64, None, -(2**63)),
    ("t.f64", math.pi, V.FLOAT64, V.FLOAT64, None, math.pi),
    ("t.strs", ["a", "", "ü", "Ġ Ġ"], None, V.ARRAY, V.STRING, ["a", "", "ü", "Ġ Ġ"]),
    ("t.u8s", np.arange(5, dtype=np.uint8), None, V.ARRAY, V.UINT8, [0, 1, 2, 3, 4]),
    ("t.bools", [True, False, True], None, V.ARRAY, V.BOOL, [True, False, True]),
    ("t.f32s", [0.5, -1000.0, 3], None, V.ARRAY, V.FLOAT32, [0.5, -1000.0, 3.0]),
    ("t.i64s", [-1, 2**40], None, V.ARRAY, V.INT64, [-1, 2**40]),
    ("t.i32s", [-1, 7], None, V.ARRAY, V.INT32, [-1, 7]),
    ("t.f64s", np.array([1e300, -0.0]), None, V.ARRAY, V.FLOAT64, [1e300, -0.0]),
    ("t.empty_u16s", [], V.ARRAY, V.ARRAY, V.UINT16, []),
]
NESTED = [KVField(np.array([1.5, 2.5]), V.ARRAY, V.FLOAT64), KVField(["x", "y"], V.ARRAY, V.STRING),
          KVField([KVField([7], V.ARRAY, V.UINT8)], V.ARRAY, V.ARRAY)]
NESTED_PLAIN = [[1.5, 2.5], ["x", "y"], [[7]]]


def _plain(value):
    if isinstance(value, KVField):
        return _plain(value.value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _add_kv_table(writer: GGUFWriter) -> None:
    for key, value, vtype, _, subtype, _ in KV_TABLE:
        writer.add_kv(key, value, vtype, subtype if vtype == V.ARRAY else None)
    writer.add_kv("t.nested", NESTED, V.ARRAY, V.ARRAY)
    writer.add_kv("t.nested_inferred", [[1, 2], [3]])


def _tensor_set() -> dict[str, tuple[tuple[int, ...], int, object]]:
    f32 = RNG.standard_normal((3, 5)).astype(np.float32)
    return {
        "w.f32": ((3, 5), F32, f32),
        "w.f16": ((2, 8), F16, RNG.standard_normal((2, 8)).astype(np.float16)),
        "w.bf16": ((4, 4), BF16, f32_to_bf16(RNG.standard_normal((4, 4)).astype(np.float32))),
        "w.tq2_0": ((2, 256), TQ2_0, RNG.integers(0, 256, 132, dtype=np.uint8).tobytes()),
        "w.i2_s": ((4, 128), I2_S, RNG.integers(0, 256, i2s_nbytes(4, 128), dtype=np.uint8)),
        "w.vec": ((7,), F32, np.arange(7, dtype=np.float32)),
    }


# -- round trip ---------------------------------------------------------------------------------
@pytest.mark.parametrize("alignment", [32, 64, 8])
def test_round_trip_kv_and_tensors(tmp_path: Path, alignment: int) -> None:
    path = tmp_path / "rt.gguf"
    tensors = _tensor_set()
    with GGUFWriter(path, alignment=alignment, types=TypeTable.for_target("2025")) as w:
        w.add_kv(FLAVOUR_KEY, "2025")
        w.add_kv("general.architecture", "llama")  # the flavour key must win over the arch
        _add_kv_table(w)
        for name, (shape, type_id, _) in tensors.items():
            w.add_tensor(name, shape, type_id)
        w.write_header()
        for name, (_, _, data) in tensors.items():
            w.write_tensor(name, data)
    with GGUFFile(path) as g:
        assert g.version == 3 and g.alignment == alignment and g.types.flavour == "2025"
        expected_keys = [FLAVOUR_KEY, "general.architecture", *(k for k, *_ in KV_TABLE), "t.nested",
                         "t.nested_inferred"] + (["general.alignment"] if alignment != 32 else [])
        assert list(g.kv) == expected_keys
        for key, _, _, vtype, subtype, value in KV_TABLE:
            field = g.kv[key]
            assert (field.vtype, field.subtype) == (vtype, subtype), key
            assert _plain(field.value) == value and type(_plain(field.value)) is type(value), key
        assert _plain(g.get("t.nested")) == NESTED_PLAIN
        assert [f.subtype for f in g.kv["t.nested"].value] == [V.FLOAT64, V.STRING, V.ARRAY]
        assert _plain(g.get("t.nested_inferred")) == [[1, 2], [3]]
        assert g.kv["t.nested_inferred"].value[0].subtype == V.UINT32
        if alignment != 32:
            assert g.kv["general.alignment"] == KVField(alignment, V.UINT32)
        _check_tensors(g, tensors, alignment)


def _check_tensors(g: GGUFFile, tensors: dict, alignment: int) -> None:
    assert list(g.tensors) == list(tensors)
    offset = 0
    assert g.data_start % alignment == 0
    for name, (shape, type_id, data) in tensors.items():
        info = g.tensors[name]
        raw = np.frombuffer(memoryview(data), np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8)
        assert (info.shape, info.ne, info.type_id, info.offset) == (shape, shape[::-1], type_id, offset)
        assert info.abs_offset == g.data_start + offset and info.nbytes == raw.nbytes
        assert g.tensor_bytes(name).tobytes() == raw.tobytes()
        assert not g.tensor_bytes(name).flags.writeable
        offset += pad(info.nbytes, alignment)
    assert g.data_end == g.tensors["w.vec"].abs_offset + 28  # the last tensor's padding is not data
    assert g.path.stat().st_size == g.data_start + offset
    np.testing.assert_array_equal(g.tensor_array("w.f32"), tensors["w.f32"][2])
    assert g.tensor_array("w.f16").dtype == np.float32
    np.testing.assert_array_equal(g.tensor_array("w.f16"), tensors["w.f16"][2].astype(np.float32))
    np.testing.assert_array_equal(g.tensor_array("w.bf16"), bf16_to_f32(tensors["w.bf16"][2]))
    assert g.tensors["w.i2_s"].type_name == "I2_S" and g.tensors["w.tq2_0"].type_name == "TQ2_0"
    with pytest.raises(UsageError, match="not a plain element type"):
        g.tensor_array("w.i2_s")
    with pytest.raises(UsageError, match="no tensor 'nope'"):
        g.tensor_bytes("nope")


def test_round_trip_flavours(tmp_path: Path) -> None:
    """Type id 36 means I2_S only to a bitnet.cpp table: mainline refuses it, auto needs a hint."""
    path = tmp_path / "i2s.gguf"
    with GGUFWriter(path) as w:
        w.add_kv("general.architecture", "bitnet-b1.58")
        w.add_tensor("w", (4, 128), I2_S, i2s_nbytes(4, 128))
        w.write_header()
        w.write_tensor("w", bytes(i2s_nbytes(4, 128)))
    assert GGUFFile(path).types.flavour == "2025"
    assert GGUFFile(path, flavour="2026").tensors["w"].type_name == "I2_S"
    with pytest.raises(UnknownTensorType, match=r"type id 36 .*mainline.*flavour 2025 / 2026"):
        GGUFFile(path, flavour=None)
    with pytest.raises(UsageError):
        GGUFFile(path, flavour="2024")


def test_writer_bytes_are_deterministic(tmp_path: Path) -> None:
    blobs = []
    for i in range(2):
        path = tmp_path / f"d{i}.gguf"
        with GGUFWriter(path, types=TypeTable.for_target("2025")) as w:
            _add_kv_table(w)
            for name, (shape, type_id, _) in _tensor_set().items():
                w.add_tensor(name, shape, type_id)
            w.write_header()
            for name, (_, _, data) in _tensor_set().items():
                w.write_tensor(name, np.zeros_like(data) if isinstance(data, np.ndarray) else bytes(len(data)))
        blobs.append(path.read_bytes())
    assert blobs[0] == blobs[1]


def test_to_json_matches_the_tokenizer_vector(tmp_path: Path, shared_vectors: Path) -> None:
    """Writing the recorded KV pairs and reading them back gives the same JSON, key by key."""
    recorded = json.loads((shared_vectors / "llama3-tokenizer.gguf-kv.json").read_text())
    path = tmp_path / "tok.gguf"
    with GGUFWriter(path) as w:
        for key, entry in recorded["kv"].items():
            if entry["type"] == "array":
                w.add_kv(key, entry["value"]["value"], V.ARRAY, V[entry["value"]["array_of"].upper()])
            else:
                w.add_kv(key, entry["value"], V[entry["type"].upper()])
    got = GGUFFile(path).to_json()
    assert got["gguf_version"] == recorded["gguf_version"]
    assert list(got["kv"]) == list(recorded["kv"])
    for key in recorded["kv"]:
        assert got["kv"][key] == recorded["kv"][key], key
    assert len(got["kv"]["tokenizer.ggml.merges"]["value"]["value"]) == 280147


# -- gguf-py interop ----------------------------------------------------------------------------
def test_gguf_py_reader_sees_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "upstream.gguf"
    tensors = {name: spec for name, spec in _tensor_set().items() if spec[1] != I2_S}
    tensors["w.q8_0"] = ((3, 64), Q8_0, RNG.integers(0, 256, 3 * 2 * 34, dtype=np.uint8))
    with GGUFWriter(path, alignment=64, types=TypeTable.for_target(None)) as w:
        _add_kv_table(w)
        for name, (shape, type_id, _) in tensors.items():
            w.add_tensor(name, shape, type_id)
        w.write_header()
        for name, (_, _, data) in tensors.items():
            w.write_tensor(name, data)
    ours, theirs = GGUFFile(path), gguf.GGUFReader(path)
    fields = {k: f for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    assert list(fields) == list(ours.kv)
    for key, field in ours.kv.items():
        assert fields[key].types[0] == field.vtype, key
        if field.vtype == V.ARRAY and field.subtype != V.ARRAY and len(field.value):  # gguf-py drops empty's type
            assert fields[key].types[-1] == field.subtype, key
        if key != "t.nested":  # gguf-py's contents() shows strings inside nested arrays as byte values
            assert _flatten(fields[key].contents()) == _flatten(_plain(field.value)), key
    assert theirs.alignment == 64 and theirs.data_offset == ours.data_start
    assert [t.name for t in theirs.tensors] == list(ours.tensors)
    for t in theirs.tensors:
        info = ours.tensors[t.name]
        assert (int(t.tensor_type), list(t.shape), t.data_offset, t.n_bytes) == (
            info.type_id, list(info.ne), info.abs_offset, info.nbytes)
        assert t.data.tobytes() == ours.tensor_bytes(t.name).tobytes()


def _flatten(value):
    if isinstance(value, list):
        return list(itertools.chain.from_iterable(_flatten(v) if isinstance(v, list) else [v] for v in value))
    return value


# -- peer files ---------------------------------------------------------------------------------
LINEAR_SHAPES = {"attn_q": (256, 256), "attn_k": (128, 256), "attn_v": (128, 256), "attn_output": (256, 256),
                 "ffn_gate": (512, 256), "ffn_up": (512, 256), "ffn_down": (256, 512)}
NORM_SIZES = {"attn_norm": 256, "ffn_norm": 256, "attn_sub_norm": 256, "ffn_sub_norm": 512}
BETA = {  # vectors README: per-tensor beta, which every peer stores as the f32 after the codes
    0: dict(attn_q=0.26943, attn_k=0.21779, attn_v=0.26994, attn_output=0.21722, ffn_gate=0.11105,
            ffn_up=0.26547, ffn_down=0.26721),
    1: dict(attn_q=0.16317, attn_k=0.13136, attn_v=0.25086, attn_output=0.15321, ffn_gate=0.24860,
            ffn_up=0.29383, ffn_down=0.29054),
}
PEERS = {  # file -> (linear type, its id, file_type, token_embd type, nbytes rule)
    "tiny-a-i2_s.gguf": ("I2_S", 36, 40, "F16", i2s_nbytes),
    "tiny-a-tl1.gguf": ("TL1", 38, 38, "F32", tl1_nbytes),
    "tiny-a-tl2.gguf": ("TL2", 39, 39, "F32", tl2_nbytes),
}
COMMON_KEYS = ["general.architecture", "general.name", "bitnet-25.vocab_size", "bitnet-25.context_length",
               "bitnet-25.embedding_length", "bitnet-25.block_count", "bitnet-25.feed_forward_length",
               "bitnet-25.attention.head_count", "bitnet-25.attention.head_count_kv",
               "bitnet-25.attention.layer_norm_rms_epsilon", "bitnet-25.rope.freq_base", "general.file_type",
               "tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
               "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id"]
EXTRA_KEYS = {
    "tiny-a-i2_s.gguf": ["bitnet-25.rope.dimension_count", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template",
                         "general.quantization_version"],
    "tiny-a-tl1.gguf": ["bitnet-25.rope.scaling.type", "bitnet-25.rope.scaling.factor", "tokenizer.ggml.pre"],
}
EXTRA_KEYS["tiny-a-tl2.gguf"] = EXTRA_KEYS["tiny-a-tl1.gguf"]


@pytest.mark.parametrize("peer", sorted(PEERS))
def test_peer_file_inventory(tiny_a: Path, peer: str) -> None:
    type_name, type_id, file_type, embd_type, nbytes_rule = PEERS[peer]
    with GGUFFile(tiny_a / peer) as g:
        assert g.architecture == "bitnet-25" and g.types.flavour == "2025" and g.get("general.file_type") == file_type
        assert sorted(g.kv) == sorted(COMMON_KEYS + EXTRA_KEYS[peer])
        assert g.kv["general.file_type"].vtype == V.UINT32 and g.get("bitnet-25.block_count") == 2
        assert g.get("general.name") == ("bitnet2b_2501" if "i2_s" in peer else "tiny-a-bf16")
        assert len(g.get("tokenizer.ggml.tokens")) == 512 and g.get("tokenizer.ggml.pre") in (None, "default")
        expected = {"token_embd.weight": ((512, 256), embd_type), "output_norm.weight": ((256,), "F32")}
        for layer in (0, 1):
            expected |= {f"blk.{layer}.{n}.weight": (s, type_name) for n, s in LINEAR_SHAPES.items()}
            expected |= {f"blk.{layer}.{n}.weight": ((s,), "F32") for n, s in NORM_SIZES.items()}
        assert {n: (t.shape, t.type_name) for n, t in g.tensors.items()} == expected
        assert sum(t.type_id == type_id for t in g.tensors.values()) == 14
        _check_peer_layout(g, nbytes_rule)
        for layer, betas in BETA.items():
            for proj, beta in betas.items():
                blob = g.tensor_bytes(f"blk.{layer}.{proj}.weight")
                assert abs(float(blob[-32:-28].view("<f4")[0]) - beta) < 6e-6, (layer, proj)
                if type_name != "I2_S":  # I2_S tail bytes 4..31 are uninitialised memory in the peer
                    assert not blob[-28:].any()


def _check_peer_layout(g: GGUFFile, nbytes_rule) -> None:
    """Each tensor ends at or before the next one's offset; the last ends at the file end."""
    ordered = sorted(g.tensors.values(), key=lambda t: t.offset)
    for t, nxt in itertools.pairwise(ordered):
        assert t.offset + t.nbytes <= nxt.offset == t.offset + pad(t.nbytes, g.alignment), t.name
        if t.type_id in g.types.bitnet:
            assert t.nbytes == nbytes_rule(*t.shape), t.name
    assert g.data_end == g.path.stat().st_size


def test_tl2_with_the_wrong_flavour_is_refused(tiny_a: Path) -> None:
    """Under the 2026 table id 39 is MXFP4, whose sizes overlap the neighbours: refused, not misread."""
    with pytest.raises(FormatError):
        GGUFFile(tiny_a / "tiny-a-tl2.gguf", flavour="2026")


@pytest.mark.parametrize("peer", sorted(PEERS))
def test_rewriting_a_peer_reproduces_it_byte_for_byte(tiny_a: Path, tmp_path: Path, peer: str) -> None:
    src = GGUFFile(tiny_a / peer)
    out = tmp_path / peer
    with GGUFWriter(out, alignment=src.alignment, types=src.types) as w:
        for key, field in src.kv.items():
            w.add_kv(key, field.value, field.vtype, field.subtype)
        for t in src.tensors.values():
            assert w.add_tensor(t.name, t.shape, t.type_id) == t.offset
        w.write_header()
        for t in src.tensors.values():
            w.write_tensor_chunks(t.name, iter_chunks(src.tensor_bytes(t.name), 4096))
    assert out.read_bytes() == src.path.read_bytes()


# -- corrupt files ------------------------------------------------------------------------------
def test_the_crafted_base_file_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "base.gguf"
    path.write_bytes(base_bytes())
    g = GGUFFile(path)
    assert g.types.flavour is None and list(g.tensors) == ["a.weight", "b.weight"]
    assert g.tensor_array("a.weight").shape == (4, 8) and g.get("tokenizer.ggml.tokens") == ["<s>", "</s>", "hello"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_file_raises_the_typed_error(tmp_path: Path, case: str) -> None:
    data, error, fragment = CASES[case]
    path = tmp_path / f"crafted-{case}.gguf"
    path.write_bytes(data)
    with pytest.raises(BitnetPackError) as info:
        GGUFFile(path)
    message = str(info.value)
    assert type(info.value) is error, message
    assert "\n" not in message and str(path) in message and fragment in message, message
    assert path.read_bytes() == data  # the reader never writes


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


_FUZZ_BASE = base_bytes()
_FUZZ_HEADER = _FUZZ_BASE.index(b"b.weight") + 40  # through the tensor table
_counter = itertools.count()


@settings(deadline=None, max_examples=300)
@given(edits=st.lists(st.tuples(st.integers(0, _FUZZ_HEADER - 1), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(0, len(_FUZZ_BASE))))
def test_fuzzed_headers_never_escape_the_typed_errors(fuzz_dir: Path, edits, cut) -> None:
    data = bytearray(_FUZZ_BASE)
    for position, value in edits:
        data[position] = value
    path = fuzz_dir / f"f{next(_counter)}.gguf"
    path.write_bytes(bytes(data[:cut]))
    try:
        with GGUFFile(path) as g:
            g.to_json()
            for name, info in g.tensors.items():
                assert g.tensor_bytes(name).size == info.nbytes
    except BitnetPackError as err:
        assert "\n" not in str(err) and str(path) in str(err)
    finally:
        path.unlink()


def test_odd_architecture_values_do_not_confuse_the_flavour(tmp_path: Path) -> None:
    for i, value in enumerate([np.array([1, 2], np.uint32), ["bitnet-25"], 25]):
        path = tmp_path / f"arch{i}.gguf"
        with GGUFWriter(path) as w:
            w.add_kv("general.architecture", value)
        assert GGUFFile(path).types.flavour is None


def test_views_outlive_close(tmp_path: Path) -> None:
    path = tmp_path / "c.gguf"
    path.write_bytes(base_bytes())
    g = GGUFFile(path)
    view = g.tensor_bytes("b.weight")
    g.close()
    assert view.tobytes() == bytes(range(100, 132))
    with pytest.raises(UsageError, match="closed"):
        g.tensor_bytes("b.weight")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BitnetPackError, match="no such file"):
        GGUFFile(tmp_path / "absent.gguf")


# -- writer -------------------------------------------------------------------------------------
def _small_writer(path: Path, **kwargs) -> GGUFWriter:
    w = GGUFWriter(path, **kwargs)
    w.add_kv("general.architecture", "llama")
    w.add_tensor("a", (2, 4), F32, 32)
    w.add_tensor("b", (3,), F32, 12)
    return w


def test_exception_in_with_block_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.gguf"
    with pytest.raises(RuntimeError, match="boom"):
        with _small_writer(path) as w:
            w.write_header()
            assert path.with_name(f".out.gguf.incomplete-{os.getpid()}").is_file() and not path.exists()
            w.write_tensor("a", np.zeros((2, 4), np.float32))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_abort_keeps_an_existing_target(tmp_path: Path) -> None:
    path = tmp_path / "out.gguf"
    path.write_bytes(b"old")
    w = _small_writer(path)
    w.write_header()
    w.abort()
    w.abort()
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]


def test_out_of_order_calls_raise(tmp_path: Path) -> None:
    w = _small_writer(tmp_path / "o.gguf")
    with pytest.raises(UsageError, match="needs the writer to be header written"):
        w.write_tensor("a", bytes(32))
    w.write_header()
    for call in (lambda: w.add_kv("k", 1), lambda: w.add_tensor("c", (1,), F32, 4), w.write_header):
        with pytest.raises(UsageError, match="needs the writer to be declaring"):
            call()
    with pytest.raises(UsageError, match="'a' \\(#0\\) comes next"):
        w.write_tensor("b", bytes(12))
    w.write_tensor("a", bytes(32))
    with pytest.raises(UsageError, match="'b' \\(#1 of 2\\) was declared but not written"):
        w.finish()
    w.write_tensor("b", bytes(12))
    with pytest.raises(UsageError, match="already written"):
        w.write_tensor("b", bytes(12))
    assert w.finish() == tmp_path / "o.gguf"
    with pytest.raises(UsageError, match="it is finished"):
        w.add_kv("k", 1)
    w.abort()  # after finish: a no-op that keeps the file
    assert GGUFFile(tmp_path / "o.gguf").tensor_array("b").tolist() == [0.0, 0.0, 0.0]


def test_wrong_data_size_raises_and_the_writer_stays_usable(tmp_path: Path) -> None:
    path = tmp_path / "s.gguf"
    with _small_writer(path) as w:
        w.write_header()
        for bad in (bytes(31), np.zeros((2, 4), np.float64), np.zeros(5, np.float32)):
            with pytest.raises(UsageError, match="declared with 32"):
                w.write_tensor("a", bad)
        w.write_tensor("a", np.arange(8, dtype=np.float32).reshape(2, 4))
        w.write_tensor("b", np.ones(3, np.float32))
    assert GGUFFile(path).tensor_array("a").ravel().tolist() == list(range(8))


def test_chunk_overflow_fails_the_writer_and_abort_cleans_up(tmp_path: Path) -> None:
    w = _small_writer(tmp_path / "c.gguf")
    w.write_header()
    with pytest.raises(UsageError, match="exceed the declared 32 bytes"):
        w.write_tensor_chunks("a", [bytes(20), bytes(20)])
    with pytest.raises(UsageError, match="failed"):
        w.write_tensor("b", bytes(12))
    w.abort()
    assert list(tmp_path.iterdir()) == []
    w2 = _small_writer(tmp_path / "c.gguf")
    w2.write_header()
    with pytest.raises(UsageError, match="add up to 16 bytes, declared 32"):
        w2.write_tensor_chunks("a", [bytes(16)])
    w2.abort()


def test_streaming_layouts_write_c_order_little_endian(tmp_path: Path) -> None:
    """Views, transposes, big-endian arrays and tiny chunks all give the same bytes."""
    base = RNG.standard_normal((6, 10)).astype(np.float32)
    inputs = {"plain": base, "transposed": np.ascontiguousarray(base.T).T, "strided": np.repeat(base, 2, 1)[:, ::2],
              "big_endian": base.astype(">f4"), "bytes": base.tobytes(), "memoryview": memoryview(base)}
    path = tmp_path / "v.gguf"
    with GGUFWriter(path, chunk_bytes=7) as w:
        for name in inputs:
            w.add_tensor(name, (6, 10), F32, 240)
        w.write_header()
        for name, data in inputs.items():
            w.write_tensor(name, data)
    g = GGUFFile(path)
    for name in inputs:
        assert g.tensor_bytes(name).tobytes() == base.astype("<f4").tobytes(), name


def test_declaration_errors(tmp_path: Path) -> None:
    w = GGUFWriter(tmp_path / "e.gguf", types=TypeTable.for_target(None))
    w.add_kv("k", 1)
    with pytest.raises(UsageError, match="already added"):
        w.add_kv("k", 2)
    w.add_tensor("a", (1, 256), TQ2_0)
    with pytest.raises(DuplicateTensor):
        w.add_tensor("a", (1, 256), TQ2_0)
    with pytest.raises(UsageError, match="the type table says 66"):
        w.add_tensor("b", (1, 256), TQ2_0, 64)
    with pytest.raises(UsageError, match="cannot hold shape"):
        w.add_tensor("b", (1, 100), TQ2_0)
    with pytest.raises(UnknownTensorType):
        w.add_tensor("b", (4, 128), I2_S)
    with pytest.raises(UsageError, match="1..63 UTF-8 bytes"):
        w.add_tensor("x" * 64, (1,), F32)
    with pytest.raises(UsageError, match="must be str"):
        w.add_kv(7, 1)
    with pytest.raises(UsageError, match="must be str"):
        w.add_tensor(b"raw", (1,), F32, 4)
    with pytest.raises(UsageError, match="dimensions"):
        w.add_tensor("b", (1, 1, 1, 1, 1), F32)
    with pytest.raises(UsageError, match="must be uint32 32"):
        w.add_kv("general.alignment", 64)
    with pytest.raises(UsageError, match="power of two"):
        GGUFWriter(tmp_path / "x.gguf", alignment=48)
    for value, vtype, subtype in [(300, V.UINT8, None), (-1, V.UINT32, None), (1e300, V.FLOAT32, None),
                                  (1.5, V.INT32, None), ([300], V.ARRAY, V.UINT8), ([1.5], V.ARRAY, V.INT32),
                                  ([1e300], V.ARRAY, V.FLOAT32), ([], None, None), (b"raw", None, None),
                                  (2, V.BOOL, None), ([1, "a"], None, None)]:
        with pytest.raises(UsageError):
            w.add_kv("bad", value, vtype, subtype)
    w.abort()


@pytest.mark.parametrize(("value", "expected"), [
    (True, (V.BOOL, None)), (0, (V.UINT32, None)), (2**32, (V.INT64, None)), (-1, (V.INT32, None)),
    (-(2**31) - 1, (V.INT64, None)), (2**63, (V.UINT64, None)), (1.0, (V.FLOAT32, None)), ("s", (V.STRING, None)),
    (np.float64(1), (V.FLOAT64, None)), (np.int16(1), (V.INT16, None)), (np.bool_(True), (V.BOOL, None)),
    ([1, 2], (V.ARRAY, V.UINT32)), ([1, -2], (V.ARRAY, V.INT32)), ([1, 2.5], (V.ARRAY, V.FLOAT32)),
    ((True, False), (V.ARRAY, V.BOOL)), (np.zeros(2, ">u2"), (V.ARRAY, V.UINT16)), ([[1]], (V.ARRAY, V.ARRAY)),
])
def test_inferred_value_types(value, expected) -> None:
    assert infer_vtype(value) == expected
