"""Issue 18's classes for the hostile table (joined into hostile_cases.CASES): paths that
escape the checkpoint, small files with large costs, FIFOs, wrongly typed metadata, inputs
accepted with exit 0 that the README refuses, and the "internal error" paths.

Each builder writes the bad input under `inputs` and returns the command line; the table
test checks one `Error:` line, the exit code, nothing left behind, inputs unchanged, and
(for every case) bounded time and traced memory.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from corrupt_files import CODE_TENSOR, FIXTURE, copy_fixture
from gguf import GGUFValueType as VT

from bitnet_pack.containers.safetensors import DTYPES, SafetensorsFile, SafetensorsWriter, TensorPlan

ARCH = "bitnet-b1.58"  # the arch of the fixture converted for bitnet.cpp


# -- shards and indexes ------------------------------------------------------------------------

def index_naming(shard: str | Callable[[Path], str]) -> Callable[[Path], Path]:
    """The fixture with its weights moved out and an index whose weight_map names `shard`
    (a path outside the folder) for every tensor; the file there is a valid copy."""
    def make(inputs: Path) -> Path:
        model = copy_fixture(inputs)
        name = shard(inputs) if callable(shard) else shard
        with SafetensorsFile(model / "model.safetensors") as file:
            tensors = list(file.tensors)
        os.replace(model / "model.safetensors", inputs / "outside.safetensors")
        index = {"metadata": {}, "weight_map": {t: name for t in tensors}}
        (model / "model.safetensors.index.json").write_text(json.dumps(index))
        return model
    return make


def index_with_duplicate_key(inputs: Path) -> Path:
    model = copy_fixture(inputs)
    text = '{"metadata": {}, "weight_map": {"lm_head.weight": "model.safetensors", ' \
           '"lm_head.weight": "model.safetensors"}}'
    (model / "model.safetensors.index.json").write_text(text)
    return model


def fifo_weights(inputs: Path) -> Path:
    model = copy_fixture(inputs)
    (model / "model.safetensors").unlink()
    os.mkfifo(model / "model.safetensors")
    return model


def fifo(inputs: Path, name: str = "pipe.ini") -> Path:
    os.mkfifo(inputs / name)
    return inputs / name


# -- packed checkpoints with edited scales or config -------------------------------------------

def packed_scale_as(dtype: str) -> Callable[[Path], Path]:
    """The fixture as hf-packed, CODE_TENSOR's weight_scale stored as `dtype` (e.g. I32)."""
    def make(inputs: Path) -> Path:
        model = _packed(inputs)
        path = model / "model.safetensors"
        with SafetensorsFile(path) as file:
            tensors = {n: np.array(file.raw(n)) for n in file.tensors}
            dtypes = {n: i.dtype for n, i in file.tensors.items()}
            metadata = file.metadata
        scale = CODE_TENSOR + "_scale"
        storage = np.dtype(DTYPES[dtype][0])
        tensors[scale], dtypes[scale] = np.ones(tensors[scale].shape, storage), dtype
        writer = SafetensorsWriter(path, [TensorPlan(n, dtypes[n], t.shape) for n, t in tensors.items()], metadata)
        for name, value in tensors.items():
            writer.write(name, value)
        writer.finish()
        return model
    return make


def packed_config(edit: Callable[[dict], None]) -> Callable[[Path], Path]:
    def make(inputs: Path) -> Path:
        model = _packed(inputs)
        config = json.loads((model / "config.json").read_text())
        edit(config)
        (model / "config.json").write_text(json.dumps(config))
        return model
    return make


def _packed(inputs: Path) -> Path:
    from bitnet_pack.pipeline.convert import convert
    from bitnet_pack.pipeline.sinks.factory import make_sink
    from bitnet_pack.pipeline.sources import open_checkpoint

    model = inputs / "packed"
    with open_checkpoint(FIXTURE) as source:
        convert(source, make_sink(model, "hf-packed"))
    return model


def linear_class(value: str) -> Callable[[dict], None]:
    return lambda config: config["quantization_config"].update(linear_class=value)


# -- traces ---------------------------------------------------------------------------------

def npz_bomb(inputs: Path) -> Path:
    """A small deflated .npz whose one member inflates to 64 MB of zeros."""
    path = inputs / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(16 << 20, np.float32))
        archive.writestr("logits.npy", buffer.getvalue())
    return path


def npz_member_without_magic(inputs: Path) -> Path:
    path = inputs / "plain.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("prompt", b"not an array")
    return path


# -- kernel configs --------------------------------------------------------------------------

def ini_with_percent(inputs: Path) -> Path:
    path = inputs / "percent.ini"
    path.write_text("[Kernels_0]\nm = 256\nk = 256\nbm = %(x)s\nbk = 64\nbmm = 32\n")
    return path


def ini_too_large(inputs: Path) -> Path:
    path = inputs / "large.ini"
    path.write_bytes(b";" * ((1 << 20) + 1))
    return path


# -- the rows ---------------------------------------------------------------------------------

def cases(Hostile, convert_of, command_on, fixture_master, gguf_with, kv_set, only, set_bits, i2s_beta,
          converted) -> dict:
    """The issue 18 rows, built with hostile_cases' helpers (passed in: no import cycle)."""
    nan = set_bits(0x7FC0, 2)

    def tl2_with(option: str, make_ini: Callable[[Path], Path]) -> Callable[[Path, Path], list[str]]:
        def build(inputs: Path, outputs: Path) -> list[str]:
            return ["inspect", str(converted(inputs, "tl2")), option, str(make_ini(inputs))]
        return build

    def verify_against(make: Callable[[Path], Path]) -> Callable[[Path, Path], list[str]]:
        return lambda i, o: ["verify", str(FIXTURE), "--against", str(make(i))]

    return {
        # security: nothing outside the paths given
        "index_shard_in_parent": Hostile(convert_of(index_naming("../outside.safetensors")), 1,
                                         ("'../outside.safetensors'", "plain file names")),
        "index_shard_absolute": Hostile(convert_of(index_naming(lambda i: str(i / "outside.safetensors"))), 1,
                                        ("outside.safetensors", "plain file names")),
        "index_shard_etc_passwd": Hostile(convert_of(index_naming("/etc/passwd")), 1,
                                          ("'/etc/passwd'", "plain file names")),
        "index_duplicate_key": Hostile(convert_of(index_with_duplicate_key), 1,
                                       ("model.safetensors.index.json", "'lm_head.weight' appears twice")),
        "revision_dotdot": Hostile(lambda i, o: ["convert", "org/name", str(o / "x.gguf"), "--outtype", "i2_s",
                                                 "--revision", "../../../etc"], 2, ("--revision '../../../etc'",)),
        "revision_absolute": Hostile(lambda i, o: ["inspect", "org/name", "--revision", "/tmp"], 2,
                                     ("--revision '/tmp'",)),
        "hub_id_non_ascii": Hostile(lambda i, o: ["convert", "ørg/nåme", str(o / "x.gguf"), "--outtype", "i2_s"],
                                    1, ("ørg/nåme", "no such file")),
        # security: small files, large costs
        "config_layers_huge": Hostile(convert_of(fixture_master(edit_cfg=lambda c: c.update(
            num_hidden_layers=10**6))), 1, ("num_hidden_layers 1000000", "holds only 24 tensors")),
        "config_layers_huge_dry_run": Hostile(convert_of(fixture_master(edit_cfg=lambda c: c.update(
            num_hidden_layers=10**9)), "i2_s", "--dry-run"), 1, ("num_hidden_layers 1000000000",)),
        "gguf_block_count_huge": Hostile(convert_of(gguf_with("i2_s", kv=kv_set(
            f"{ARCH}.block_count", 10**9, VT.UINT32)), "tq2_0"), 1, ("block_count", "1000000000")),
        "verify_block_count_huge": Hostile(command_on("verify", gguf_with("i2_s", kv=kv_set(
            f"{ARCH}.block_count", 2**32 - 1, VT.UINT32)), str(FIXTURE), "--tokens", "2"), 1, ("4294967295",)),
        "generate_context_huge": Hostile(command_on("generate", gguf_with("i2_s", kv=kv_set(
            f"{ARCH}.feed_forward_length", 2**32 - 1, VT.UINT32)), "--prompt", "hi", "--tokens", "2"), 1,
            ("4294967295",)),
        "trace_npz_bomb": Hostile(verify_against(npz_bomb), 1, ("bomb.npz", "inflate to")),
        "trace_member_not_npy": Hostile(verify_against(npz_member_without_magic), 1,
                                        ("plain.npz", "member 'prompt' is not an .npy array")),
        "fifo_as_weights": Hostile(convert_of(fifo_weights), 1, ("model.safetensors", "is a FIFO")),
        "fifo_as_gguf": Hostile(lambda i, o: ["inspect", str(fifo(i, "pipe.gguf"))], 1,
                                ("pipe.gguf", "not a checkpoint")),
        "fifo_as_kernel_config": Hostile(tl2_with("--kernel-config", fifo), 1, ("pipe.ini", "is a FIFO")),
        "kernel_config_too_large": Hostile(tl2_with("--kernel-config", ini_too_large), 1,
                                           ("large.ini", "1048577 bytes is too large")),
        "fifo_as_trace": Hostile(verify_against(lambda i: fifo(i, "pipe.npz")), 1, ("pipe.npz", "is a FIFO")),
        # accepted with exit 0 where the README says refused
        "gguf_rope_scaling_yarn": Hostile(convert_of(gguf_with("i2_s", kv=kv_set(
            f"{ARCH}.rope.scaling.type", "yarn", VT.STRING)), "hf-packed"), 1, ("rope scaling", "'yarn'")),
        "gguf_rope_scaling_factor": Hostile(convert_of(gguf_with("i2_s", kv=kv_set(
            f"{ARCH}.rope.scaling.factor", 4.0, VT.FLOAT32)), "tq2_0"), 1, ("rope scaling", "4.0")),
        "packed_linear_class_unknown": Hostile(convert_of(packed_config(linear_class("bitlinear2")), "i2_s"), 1,
                                               ("linear_class 'bitlinear2'",)),
        "packed_scale_integer": Hostile(convert_of(packed_scale_as("I32"), "i2_s"), 1,
                                        (f"'{CODE_TENSOR}_scale'", "weight_scale is I32")),
        "packed_scale_integer_dry_run": Hostile(convert_of(packed_scale_as("U8"), "tq2_0", "--dry-run"), 1,
                                                ("weight_scale is U8",)),
        "master_nan_embedding": Hostile(convert_of(fixture_master(only("model.embed_tokens.weight", nan))), 1,
                                        ("'model.embed_tokens.weight'", "2 NaN/Inf values")),
        "master_nan_norm": Hostile(convert_of(fixture_master(only("model.norm.weight", nan)), "tq2_0"), 1,
                                   ("'model.norm.weight'", "2 NaN/Inf values")),
        "verify_nan_norm": Hostile(command_on("verify", fixture_master(only("model.norm.weight", nan)),
                                              str(FIXTURE), "--tokens", "2"), 1, ("'model.norm.weight'", "NaN")),
        "config_gpt2_model_type": Hostile(convert_of(fixture_master(edit_cfg=lambda c: c.update(model_type="gpt2"))),
                                          1, ("model_type 'gpt2'",)),
        "gguf_tokens_int_array": Hostile(convert_of(gguf_with("i2_s", kv=kv_set(
            "tokenizer.ggml.tokens", np.arange(448, dtype=np.int32), VT.ARRAY, VT.INT32)), "hf-packed"), 1,
            ("tokenizer.ggml.tokens is ARRAY of INT32, expected ARRAY of STRING",)),
        "gguf_bos_string": Hostile(convert_of(gguf_with("i2_s", kv=kv_set(
            "tokenizer.ggml.bos_token_id", "1", VT.STRING)), "tq2_0"), 1, ("bos_token_id is STRING",)),
        "gguf_scores_strings": Hostile(convert_of(gguf_with("i2_s", kv=kv_set(
            "tokenizer.ggml.scores", ["x"] * 448, VT.ARRAY, VT.STRING)), "i2_s"), 1,
            ("tokenizer.ggml.scores is ARRAY of STRING",)),
        "gguf_model_number": Hostile(command_on("inspect", gguf_with("i2_s", kv=kv_set(
            "tokenizer.ggml.model", 7, VT.UINT32))), 1, ("tokenizer.ggml.model is UINT32",)),
        "verify_i2s_beta_zero": Hostile(command_on("verify", gguf_with("i2_s", tensor=i2s_beta(0.0)), str(FIXTURE),
                                                   "--tokens", "2"), 1, ("scale (beta) is 0.0",)),
        "verify_i2s_beta_negative": Hostile(command_on("verify", gguf_with("i2_s", tensor=i2s_beta(-0.5)),
                                                       str(FIXTURE), "--tokens", "2"), 1, ("scale (beta) is -0.5",)),
        "generate_i2s_beta_negative": Hostile(command_on("generate", gguf_with("i2_s", tensor=i2s_beta(-2.0)),
                                                         "--prompt", "hi", "--tokens", "2"), 1,
                                              ("scale (beta) is -2.0",)),
        # "internal error" paths
        "kernel_config_percent": Hostile(tl2_with("--kernel-config", ini_with_percent), 1,
                                         ("percent.ini", "key 'bm' must be a positive integer", "'%(x)s'")),
        "config_architectures_number": Hostile(convert_of(fixture_master(edit_cfg=lambda c: c.update(
            architectures=5))), 1, ("config.json", "architectures must be a list")),
        "config_quantization_config_string": Hostile(convert_of(fixture_master(edit_cfg=lambda c: c.update(
            quantization_config="bitnet"))), 1, ("config.json", "quantization_config must be an object")),
        "verify_ids_beyond_int64": Hostile(command_on("verify", lambda i: FIXTURE, str(FIXTURE), "--ids",
                                                      "1," + "9" * 30), 2, ("--ids", "token ids are integers")),
        "verify_ids_negative": Hostile(command_on("verify", lambda i: FIXTURE, str(FIXTURE), "--ids", "1,-3"), 2,
                                       ("--ids",)),
        # habits: a file that says what it is
        "i2s_variant_contradicts_file": Hostile(convert_of(lambda i: converted(i, "i2_s"), "tq2_0",
                                                           "--i2s-variant", "arm"), 2,
                                                ("--i2s-variant arm", "records its layout as i2_s")),
        "inspect_i2s_variant_contradicts_file": Hostile(command_on("inspect", lambda i: converted(i, "i2_s_arm"),
                                                                   "--i2s-variant", "x86"), 2,
                                                        ("records its layout as i2_s_arm",)),
    }
