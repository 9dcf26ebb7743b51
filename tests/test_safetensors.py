"""The safetensors container: bounded reads with typed errors, byte-exact streaming writes."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save as torch_save

from bitnet_pack.containers.safetensors import SafetensorsFile, SafetensorsWriter, TensorPlan
from bitnet_pack.containers.shards import SafetensorsDir, ShardedWriter
from bitnet_pack.errors import (
    BitnetPackError,
    DuplicateTensor,
    HeaderInvalid,
    HeaderTooLarge,
    LfsPointer,
    MissingFile,
    OffsetOutOfRange,
    TruncatedFile,
    UnknownTensorType,
)

TORCH = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "U8": torch.uint8,
         "I8": torch.int8, "I32": torch.int32, "I64": torch.int64, "F64": torch.float64, "BOOL": torch.bool}


def make_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, (name, dtype) in enumerate(TORCH.items()):
        shape = (3, i + 1) if i % 2 else (i + 2,)
        out[f"t{i}.{name.lower()}"] = (torch.randn(shape, generator=g) * 50).to(dtype)
    out["empty"] = torch.zeros((0, 4), dtype=torch.float32)
    return out


def write_ours(path: Path, tensors: dict[str, torch.Tensor], order: list[str]) -> None:
    dtypes = {v: k for k, v in TORCH.items()}
    plans = [TensorPlan(n, dtypes[t.dtype], tuple(t.shape)) for n, t in tensors.items()]
    writer = SafetensorsWriter(path, plans, {"format": "pt"})
    for name in order:
        t = tensors[name]
        raw = t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()
        writer.write(name, raw)
    writer.finish()


def test_writer_is_byte_identical_to_safetensors_in_any_arrival_order(tmp_path: Path) -> None:
    tensors = make_tensors()
    write_ours(tmp_path / "a.safetensors", tensors, sorted(tensors, reverse=True))
    assert (tmp_path / "a.safetensors").read_bytes() == torch_save(tensors, metadata={"format": "pt"})
    with safe_open(tmp_path / "a.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        for name, t in tensors.items():
            assert torch.equal(f.get_tensor(name), t)


def test_reader_views_match_the_data(tmp_path: Path) -> None:
    tensors = make_tensors(1)
    (tmp_path / "b.safetensors").write_bytes(torch_save(tensors))
    with SafetensorsFile(tmp_path / "b.safetensors") as f:
        for name, t in tensors.items():
            raw = f.raw(name)
            expected = t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()
            assert raw.shape == tuple(t.shape) and np.array_equal(raw, expected)
            assert not raw.flags.writeable


def test_sharded_round_trip_and_index(tmp_path: Path) -> None:
    tensors = {f"layer.{i}": np.full((10, 10), i, np.float32) for i in range(7)}
    writer = ShardedWriter(tmp_path, [TensorPlan(n, "F32", (10, 10)) for n in tensors], {"format": "pt"},
                           max_shard_size=1000)
    for name, value in tensors.items():
        writer.write(name, value)
    writer.finish()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 7 * 400
    assert sorted(set(index["weight_map"].values())) == [f"model-0000{i}-of-00004.safetensors" for i in (1, 2, 3, 4)]
    d = SafetensorsDir(tmp_path)
    assert {n: int(d.raw(n)[0, 0]) for n in d.where} == {n: i for i, n in enumerate(tensors)}


def _file(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
CORRUPT = {
    "empty": (b"", TruncatedFile, "too short"),
    "lfs": (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n", LfsPointer, "git-lfs pointer"),
    "huge_header": (_file(GOOD, b"\0" * 8, length=2**40), HeaderTooLarge, "header claims"),
    "not_json": (_file(b"{not json", b""), HeaderInvalid, "not valid JSON"),
    "not_object": (_file(b"[1, 2]  ", b""), HeaderInvalid, "not a JSON object"),
    "truncated_data": (_file(GOOD, b"\0" * 4), TruncatedFile, "truncated download"),
    "bad_dtype": (_file({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
                  UnknownTensorType, "unknown dtype 'Q4'"),
    "size_mismatch": (_file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
                      OffsetOutOfRange, "needs 12"),
    "hole": (_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12),
             HeaderInvalid, "hole"),
    "overlap": (_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                       "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
                HeaderInvalid, "overlaps"),
    "trailing": (_file(GOOD, b"\0" * 9), HeaderInvalid, "ends at 77 but the file has 78 bytes"),
    "duplicate": (_file(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                        b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', b"\0" * 8),
                  DuplicateTensor, "appears twice"),
    "bad_shape": (_file({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8),
                  HeaderInvalid, "not a list of sizes"),
    "bad_metadata": (_file({"__metadata__": {"x": 1}, **GOOD}, b"\0" * 8), HeaderInvalid, "__metadata__"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_files_give_one_line_typed_errors(tmp_path: Path, case: str) -> None:
    content, error, text = CORRUPT[case]
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(content)
    with pytest.raises(error, match=text) as info:
        SafetensorsFile(path)
    assert "\n" not in str(info.value) and path.name in str(info.value)
    assert path.read_bytes() == content


def test_index_is_checked_against_the_shards(tmp_path: Path) -> None:
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(torch_save({"a": torch.zeros(2)}))
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(MissingFile, match="1 of 2 shards .* missing: model-00002-of-00002"):
        SafetensorsDir(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(torch_save({"c": torch.zeros(2)}))
    with pytest.raises(HeaderInvalid, match="not where the index says, e.g. 'b'"):
        SafetensorsDir(tmp_path)


@settings(max_examples=150)
@given(st.data())
def test_fuzzed_headers_never_crash(tmp_path_factory, data) -> None:
    base = bytearray(torch_save(make_tensors(2)))
    header_end = 8 + struct.unpack("<Q", base[:8])[0]
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, header_end - 1))
        base[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(base))))
    path = tmp_path_factory.mktemp("fuzz") / "f.safetensors"
    path.write_bytes(bytes(base[:cut]))
    try:
        with SafetensorsFile(path) as f:
            for name in f.tensors:
                f.raw(name)
    except BitnetPackError as exc:
        assert "\n" not in str(exc)
