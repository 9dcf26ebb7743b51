"""GGUF files of an embedding model, byte for byte as bitnet.cpp's embedding converter writes
them (`--outtype f32 | f16 | i2_s`):

    KVs      general.architecture, general.name, <arch>.block_count, context_length,
             embedding_length, feed_forward_length, attention.head_count, head_count_kv,
             vocab_size, rope.dimension_count, attention.key_length, value_length (= head_dim),
             rope.freq_base, attention.layer_norm_rms_epsilon (when config.json has them at top
             level), general.file_type (0 / 1 / 40), <arch>.pooling_type, then tokenizer.*
             (vocab.py). No general.alignment, no quantization_version, no keys of ours.
    tensors  in the source's order (the converter's: sorted transformers names), no output.weight
             f32   every tensor F32 (projections latent)
             f16   every tensor F16, norms included (numpy's round-to-nearest-even cast)
             i2_s  projections I2_S (absmean.py's beta; x86 128-value blocks, f32 beta tail),
                   everything else F16 as in the f16 file (`float_type="f32"`: F32, which keeps
                   Gemma3's 1 + w and small embedding values that F16 rounds; not the converter's bytes)

From an I2_S source the float outtypes hold t*beta (the latent weights are not in the file).
i2_s_arm, TL1/TL2 and TQ are refused: bitnet.cpp's embedding graphs load I2_S, F16 and F32, and mainline
llama.cpp has no per-projection norms (`*_norm_in`) for qwen3/gemma3.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFValueType as VT

from ...containers.gguf import GGUFWriter
from ...containers.outputs import check_output
from ...errors import UsageError
from ...formats.absmean import ternarize
from ...formats.ggml_types import TypeTable
from ...formats.layouts import get_layout
from ...formats.ternary import TernaryWeight
from ..sources.embedding import EmbSource, EmbTensor

OUTTYPES = ("f32", "f16", "i2_s")
FILE_TYPES = {"f32": 0, "f16": 1, "i2_s": 40}
REFUSED = ("the BitNet embedding models run only in bitnet.cpp's qwen3/gemma3 graphs with per-projection "
           "norms, whose guide and converter use I2_S (x86 blocks), F16 and F32; TL1/TL2 need a kernel config "
           "its embedding build does not ship, and mainline llama.cpp (TQ1_0/TQ2_0) has no per-projection norms "
           "(`*_norm_in`) for qwen3/gemma3")
TYPES = TypeTable.for_target("2025")


def check_outtype(outtype: str) -> None:
    if outtype not in OUTTYPES:
        raise UsageError(f"--outtype {outtype} for a BitNet embedding model: use f32, f16 or i2_s (GGUF), bf16 or "
                         f"hf-packed (directory); {REFUSED}" if _gguf_layout(outtype) else f"--outtype {outtype} does not apply to a BitNet embedding GGUF; use f32, f16 or i2_s")


def _gguf_layout(outtype: str) -> bool:
    """A registered GGUF layout (the registry's, not a hand-kept list): refused with the reason."""
    from ...formats.layouts import find_layout

    layout = find_layout(outtype)
    return layout is not None and layout.spec.container == "gguf"


def hparam_kvs(source: EmbSource, outtype: str, name: str) -> list[tuple]:
    c, arch = source.config, source.family.gguf_arch("bitnet.cpp")
    heads = int(c["num_attention_heads"])
    head_dim = int(c.get("head_dim") or int(c["hidden_size"]) // heads)
    u32 = [("block_count", c["num_hidden_layers"]), ("context_length", c.get("max_position_embeddings", 32768)),
           ("embedding_length", c["hidden_size"]), ("feed_forward_length", c["intermediate_size"]),
           ("attention.head_count", heads), ("attention.head_count_kv", c.get("num_key_value_heads", heads)),
           ("vocab_size", c["vocab_size"]), ("rope.dimension_count", head_dim),
           ("attention.key_length", head_dim), ("attention.value_length", head_dim)]
    kvs = [("general.architecture", arch, VT.STRING), ("general.name", name, VT.STRING)]
    kvs += [(f"{arch}.{key}", int(value), VT.UINT32) for key, value in u32]
    for key, hf in (("rope.freq_base", "rope_theta"), ("attention.layer_norm_rms_epsilon", "rms_norm_eps")):
        if c.get(hf) is not None:
            kvs.append((f"{arch}.{key}", float(c[hf]), VT.FLOAT32))
    kvs += [("general.file_type", FILE_TYPES[outtype], VT.UINT32), (f"{arch}.pooling_type", source.pooling, VT.UINT32)]
    return kvs


def tensor_type(tensor: EmbTensor, outtype: str, float_type: str = "f16") -> str:
    if outtype == "f32":
        return "F32"
    if outtype == "i2_s":
        return "I2_S" if tensor.kind == "linear" else float_type.upper()
    return "F16"


def encode(value: np.ndarray | TernaryWeight, type_name: str, rule: str, name: str) -> np.ndarray:
    if type_name == "I2_S":
        weight = value if isinstance(value, TernaryWeight) else ternarize(value, rule, tensor=name)
        return get_layout("i2_s").encode(weight)
    values = value.dequantize() if isinstance(value, TernaryWeight) else np.asarray(value, np.float32)
    return values.astype(np.float16 if type_name == "F16" else np.float32)


def write_gguf(source: EmbSource, out: Path, outtype: str, *, beta_rule: str = "numpy1", name: str | None = None,
               force: bool = False, float_type: str = "f16") -> tuple[Path, int, list[str]]:
    """Write `source` to `out`; (path, tensor bytes written, notes)."""
    check_outtype(outtype)
    check_output(out, [source.path], force)
    notes = []
    if outtype != "i2_s" and any(t.stored == "I2_S" for t in source.tensors):
        notes.append(f"the source keeps ternary projections only: the {outtype.upper()} projections hold t*beta, "
                     "not the latent weights the checkpoint was trained with")
    if float_type != "f16":
        notes.append("norms and token_embd kept F32 (--float-type f32): not the converter's bytes, every value kept")
    if outtype == "i2_s" and beta_rule != "numpy1":
        notes.append(f"I2_S beta by the {beta_rule!r} rule: files differ from the converter's in the scales' last bit")
    label = name or source.gguf_name()
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(out, types=TYPES, overwrite=force)
    try:
        for key, value, vtype in hparam_kvs(source, outtype, label):
            writer.add_kv(key, value, vtype)
        for key, value, vtype, subtype in source.tokenizer_kvs():
            writer.add_kv(key, value, vtype, subtype)
        types = [tensor_type(t, outtype, float_type) for t in source.tensors]
        for tensor, type_name in zip(source.tensors, types, strict=False):
            writer.add_tensor(tensor.gguf, tensor.shape, TYPES.type_id(type_name))
        writer.write_header()
        written = 0
        for tensor, type_name in zip(source.tensors, types, strict=False):
            data = encode(tensor.load(), type_name, beta_rule, tensor.gguf)
            writer.write_tensor(tensor.gguf, data)
            written += data.nbytes
        return writer.finish(), written, notes
    except BaseException:
        writer.abort()
        raise
