"""Crafted bad checkpoints for the end-to-end CLI tests: safetensors, config and tokenizer
damage, built in a temporary directory from the tiny fixture (no committed binaries); the GGUF
container cases come from corrupt_gguf.py.

`CASES` maps a case name to a `Case`: `build(directory)` writes the bad input and returns the
SRC to give the CLI, `outtype` is the conversion tried (a .gguf output for GGUF outtypes, else a
directory), and `message` holds fragments the one-line error must contain (file, tensor, cause).
Helpers write small BitNet masters of any shape (`write_master`) and the 2B4T-shaped sparse
master the interruption tests convert (`write_sparse_master`).
"""
from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from corrupt_gguf import CASES as GGUF_CASES

from bitnet_pack.containers.safetensors import SafetensorsWriter, TensorPlan, header_bytes
from bitnet_pack.families.arch import BITNET_2B4T
from bitnet_pack.formats.dtypes import f32_to_bf16

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-bitnet"
LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"4e" * 32 +
               b"\nsize 1187801280\n")
NAN_TENSOR = "model.layers.1.mlp.up_proj.weight"
DUPLICATED = "model.norm.weight"
CODE_TENSOR, CODE_GGUF_TENSOR = "model.layers.1.mlp.down_proj.weight", "blk.1.ffn_down.weight"


@dataclass(frozen=True)
class Case:
    build: Callable[[Path], Path]
    message: tuple[str, ...]
    outtype: str = "i2_s"


# -- small models ----------------------------------------------------------------------------

def copy_fixture(directory: Path, name: str = "model") -> Path:
    target = directory / name
    shutil.copytree(FIXTURE, target)
    return target


def model_shapes(hidden: int, ffn: int, layers: int, heads: int, kv_heads: int, vocab: int) -> dict:
    return BITNET_2B4T.tensor_shapes({"hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
                                      "num_attention_heads": heads, "num_key_value_heads": kv_heads,
                                      "vocab_size": vocab})


def _config(hidden: int, ffn: int, layers: int, heads: int, kv_heads: int) -> dict:
    config = json.loads((FIXTURE / "config.json").read_text())
    config.update(hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads)
    return config


def _side_files(directory: Path, config: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(FIXTURE / name, directory / name)


def write_master(directory: Path, *, hidden: int, ffn: int, layers: int = 1, heads: int = 2, kv_heads: int = 1,
                 seed: int = 7) -> Path:
    """A random bf16 BitNet master with the fixture's tokenizer and the given shapes."""
    config = _config(hidden, ffn, layers, heads, kv_heads)
    _side_files(directory, config)
    shapes = model_shapes(hidden, ffn, layers, heads, kv_heads, config["vocab_size"])
    rng = np.random.default_rng(seed)
    writer = SafetensorsWriter(directory / "model.safetensors",
                               [TensorPlan(n, "BF16", s) for n, s in shapes.items()], {"format": "pt"})
    for name, shape in shapes.items():
        values = 1.0 + 0.1 * rng.standard_normal(shape) if len(shape) == 1 else 0.1 * rng.standard_normal(shape)
        writer.write(name, f32_to_bf16(values.astype(np.float32)))
    writer.finish()
    return directory


def write_sparse_master(directory: Path, *, layers: int = 4) -> Path:
    """A BitNet master with 2B4T's layer shapes (hidden 2560, FFN 6912, 20/5 heads) and
    `layers` layers: ~290M parameters, 580 MB of bf16 zeros written as a sparse file (the
    header, then a hole), so it costs no disk and no time to make, and seconds to convert."""
    hidden, ffn, heads, kv_heads = 2560, 6912, 20, 5
    config = _config(hidden, ffn, layers, heads, kv_heads)
    _side_files(directory, config)
    plans = [TensorPlan(n, "BF16", s) for n, s in
             model_shapes(hidden, ffn, layers, heads, kv_heads, config["vocab_size"]).items()]
    head = header_bytes(plans, {"format": "pt"})
    with open(directory / "model.safetensors", "wb") as handle:
        handle.write(head)
        handle.truncate(len(head) + sum(p.nbytes for p in plans))
    return directory


# -- safetensors surgery ---------------------------------------------------------------------

def _split(data: bytes) -> tuple[dict, bytes]:
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length]), data[8 + length:]


def _join(header: dict | bytes, body: bytes) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def _edit_weights(edit: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    def build(directory: Path) -> Path:
        model = copy_fixture(directory)
        path = model / "model.safetensors"
        path.write_bytes(edit(path.read_bytes()))
        return model
    return build


def _edit_header(edit: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        header, body = _split(data)
        edit(header)
        return _join(header, body)
    return apply


def _grow_offsets(header: dict) -> None:
    entry = header[DUPLICATED]
    entry["data_offsets"][1] += 2 * (len(header) ** 2)  # past the end of its slot and the file
    entry["shape"] = [(entry["data_offsets"][1] - entry["data_offsets"][0]) // 2]


def _duplicate_key(data: bytes) -> bytes:
    header, body = _split(data)
    text = json.dumps(header, separators=(",", ":"))
    entry = json.dumps({DUPLICATED: header[DUPLICATED]}, separators=(",", ":"))[1:-1]
    return _join(text[:-1].encode() + b"," + entry.encode() + b"}", body)


def _not_json(data: bytes) -> bytes:
    header, body = _split(data)
    length = len(json.dumps(header, separators=(",", ":")))
    return _join(b"{" + b"\xff" * (length - 1), body)


def _nan_in(name: str) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        header, body = _split(data)
        out = bytearray(data)
        begin = len(data) - len(body) + header[name]["data_offsets"][0]
        out[begin + 10:begin + 12] = struct.pack("<H", 0x7FC0)  # a bf16 quiet NaN
        return bytes(out)
    return apply


def _with_extra_shard(directory: Path) -> Path:
    model = copy_fixture(directory)
    writer = SafetensorsWriter(model / "extra.safetensors", [TensorPlan(DUPLICATED, "BF16", (256,))], None)
    writer.write(DUPLICATED, np.zeros(256, np.uint16))
    writer.finish()
    (model / "model.safetensors").rename(model / "model-00001-of-00001.safetensors")
    return model


def _with_index_missing_a_shard(directory: Path) -> Path:
    model = copy_fixture(directory)
    header, _ = _split((model / "model.safetensors").read_bytes())
    names = [n for n in header if n != "__metadata__"]
    weight_map = {n: "model-00001-of-00002.safetensors" if i % 2 else "model.safetensors"
                  for i, n in enumerate(names)}
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return model


def _edit_file(name: str, content: bytes | None) -> Callable[[Path], Path]:
    def build(directory: Path) -> Path:
        model = copy_fixture(directory)
        if content is None:
            (model / name).unlink()
        else:
            (model / name).write_bytes(content)
        return model
    return build


def _llama_config(directory: Path) -> Path:
    model = copy_fixture(directory)
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"], quantization_config=None)  # plain Llama
    (model / "config.json").write_text(json.dumps(config))
    return model


def _odd_hidden(directory: Path) -> Path:
    return write_master(directory / "model", hidden=160, ffn=256)


def _converted_gguf(damage: Callable[[bytes, object], bytes]) -> Callable[[Path], Path]:
    """The fixture as an I2_S GGUF (converted in-process), then damaged around `CODE_TENSOR`."""
    def build(directory: Path) -> Path:
        from bitnet_pack.containers.gguf import GGUFFile
        from bitnet_pack.pipeline.convert import convert
        from bitnet_pack.pipeline.sinks.factory import make_sink
        from bitnet_pack.pipeline.sources import open_checkpoint

        path = directory / "tiny.gguf"
        with open_checkpoint(FIXTURE) as source:
            convert(source, make_sink(path, "i2_s"))
        with GGUFFile(path) as file:
            info = file.tensors[CODE_GGUF_TENSOR]
        path.write_bytes(damage(path.read_bytes(), info))
        return path
    return build


def _code_3(data: bytes, info) -> bytes:
    out = bytearray(data)
    out[info.abs_offset + 5] = 0xFF  # four 2-bit codes of 3: no ternary value
    return bytes(out)


def _gguf(name: str) -> Callable[[Path], Path]:
    def build(directory: Path) -> Path:
        path = directory / f"{name}.gguf"
        path.write_bytes(GGUF_CASES[name][0])
        return path
    return build


def _table() -> dict[str, Case]:
    cases = {
        "st_truncated": Case(_edit_weights(lambda d: d[: len(d) // 2]), ("model.safetensors", "truncated download?")),
        "st_lfs_pointer": Case(_edit_weights(lambda d: LFS_POINTER),
                               ("model.safetensors", "git-lfs pointer", "fetch the real file")),
        "st_header_too_large": Case(_edit_weights(lambda d: struct.pack("<Q", 2**40) + d[8:]),
                                    ("model.safetensors", "header claims 1099511627776 bytes")),
        "st_header_not_json": Case(_edit_weights(_not_json), ("model.safetensors", "header is not valid JSON")),
        "st_offsets_out_of_range": Case(_edit_weights(_edit_header(_grow_offsets)),
                                        ("model.safetensors", f"tensor '{DUPLICATED}'", "file ends at")),
        "st_duplicate_tensor": Case(_edit_weights(_duplicate_key),
                                    ("model.safetensors", f"tensor '{DUPLICATED}' appears twice")),
        "st_duplicate_across_shards": Case(_with_extra_shard, (f"tensor '{DUPLICATED}'", "in both")),
        "st_index_missing_shard": Case(_with_index_missing_a_shard,
                                       ("model.safetensors.index.json", "model-00001-of-00002.safetensors",
                                        "missing")),
        "shape_rule": Case(_odd_hidden, ("model", "tensor 'model.layers.0.", "in_features % 128 == 0",
                                         "got in_features 160")),
        "gguf_truncated_model": Case(_converted_gguf(lambda d, info: d[: info.abs_offset + info.nbytes // 2]),
                                     ("tiny.gguf", "truncated download?")),
        "gguf_code_3": Case(_converted_gguf(_code_3), ("tiny.gguf", f"tensor '{CODE_TENSOR}'", "codes are 3"),
                            outtype="hf-packed"),
        "nan_weight": Case(_edit_weights(_nan_in(NAN_TENSOR)), ("model", f"tensor '{NAN_TENSOR}'", "NaN/Inf"),
                           outtype="hf-packed"),
        "unknown_architecture": Case(_llama_config, ("config.json", "is not a BitNet b1.58 family")),
        "missing_config": Case(_edit_file("config.json", None), ("model", "config.json is missing")),
        "config_not_json": Case(_edit_file("config.json", b"{'hidden_size': 256,"), ("config.json", "not valid JSON")),
        "missing_tokenizer": Case(_edit_file("tokenizer.json", None), ("tokenizer.json", "not found")),
        "tokenizer_lfs_pointer": Case(_edit_file("tokenizer.json", LFS_POINTER), ("tokenizer.json", "git-lfs pointer")),
    }
    for name in ("zero_length", "bad_magic", "html_page", "lfs_pointer", "truncated_in_kv", "truncated_in_data",
                 "huge_kv_count", "duplicate_key", "offset_past_end", "duplicate_tensor", "unknown_tensor_type"):
        cases[f"gguf_{name}"] = Case(_gguf(name), (f"{name}.gguf", GGUF_CASES[name][2]), outtype="hf-packed")
    return cases


CASES = _table()
