"""The hostile corpus: every way of misusing the command line that issue 12 lists, generated
from the fixture (no committed binaries), with the outcome the README promises.

`CASES` maps a name to a `Hostile`: `build(inputs, outputs)` writes the bad input under
`inputs` (and anything that must pre-exist under `outputs`) and returns the arguments of one
`bitnet-pack` command; `code` is its exit code and `message` fragments of its one `Error:`
line. The test (test_hostile.py) checks for every case: that exit code, stderr exactly one
`Error:` line (no traceback, warning or note), `outputs` exactly as it was, inputs
unchanged. The container cases of corrupt_files.py and corrupt_gguf.py join the table.
"""
from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from corrupt_files import CASES as FILE_CASES
from corrupt_files import CODE_GGUF_TENSOR, CODE_TENSOR, FIXTURE, copy_fixture
from corrupt_gguf import CASES as GGUF_CASES
from gguf import GGUFValueType as VT

from bitnet_pack.containers.gguf import GGUFFile, GGUFWriter, KVField
from bitnet_pack.containers.safetensors import SafetensorsFile, SafetensorsWriter, TensorPlan

Build = Callable[[Path, Path], list[str]]
PROJECTION = "model.layers.0.self_attn.q_proj.weight"
BF16_MAX = 0x7F7F


@dataclass(frozen=True)
class Hostile:
    build: Build
    code: int
    message: tuple[str, ...] = ()


# -- inputs made from the fixture ------------------------------------------------------------

def converted(directory: Path, outtype: str) -> Path:
    """The fixture converted in-process to a GGUF of `outtype` (cached per session, copied)."""
    target = directory / f"tiny-{outtype}.gguf"
    shutil.copy(_converted_once(outtype), target)
    return target


@cache
def _converted_once(outtype: str) -> Path:
    import tempfile

    from bitnet_pack.pipeline.convert import convert
    from bitnet_pack.pipeline.sinks.factory import make_sink
    from bitnet_pack.pipeline.sources import open_checkpoint

    path = Path(tempfile.mkdtemp(prefix="hostile-")) / f"tiny-{outtype}.gguf"
    with open_checkpoint(FIXTURE) as source:
        convert(source, make_sink(path, outtype))
    return path


def rewrite_gguf(src: Path, dst: Path, *, kv: Callable[[dict], None] | None = None,
                 tensor: Callable[[str, object, np.ndarray], np.ndarray] | None = None) -> Path:
    """A copy of `src` with key-values edited by `kv(dict)` and tensor bytes by
    `tensor(name, info, bytes)`, written by the project's writer (a valid container)."""
    with GGUFFile(src) as file:
        kvs = {k: f for k, f in file.kv.items() if k != "general.alignment"}
        if kv is not None:
            kv(kvs)
        writer = GGUFWriter(dst, types=file.types, alignment=file.alignment)
        for key, field in kvs.items():
            writer.add_kv(key, field)
        for name, info in file.tensors.items():
            writer.add_tensor(name, info.shape, info.type_id, info.nbytes)
        writer.write_header()
        for name, info in file.tensors.items():
            data = np.array(file.tensor_bytes(name), dtype=np.uint8)
            writer.write_tensor(name, data if tensor is None else tensor(name, info, data))
        writer.finish()
    return dst


def edit_safetensors(model: Path, edit: Callable[[str, np.ndarray], np.ndarray | None]) -> None:
    """Rewrite model.safetensors with `edit(name, raw)` (None: keep) applied to every tensor."""
    path = model / "model.safetensors"
    with SafetensorsFile(path) as file:
        tensors = {name: np.array(file.raw(name)) for name in file.tensors}
        dtypes = {name: info.dtype for name, info in file.tensors.items()}
        metadata = file.metadata
    for name in tensors:
        edited = edit(name, tensors[name])
        tensors[name] = tensors[name] if edited is None else edited
    writer = SafetensorsWriter(path, [TensorPlan(n, dtypes[n], t.shape) for n, t in tensors.items()], metadata)
    for name, value in tensors.items():
        writer.write(name, value)
    writer.finish()


def edit_config(model: Path, edit: Callable[[dict], object]) -> None:
    config = json.loads((model / "config.json").read_text())
    replaced = edit(config)
    (model / "config.json").write_text(json.dumps(config if replaced is None else replaced))


# -- builders ------------------------------------------------------------------------------

def convert_of(make_src: Callable[[Path], Path], outtype: str = "i2_s", *extra: str) -> Build:
    """`convert SRC OUT --outtype outtype`, OUT a .gguf or a directory as the outtype needs."""
    def build(inputs: Path, outputs: Path) -> list[str]:
        out = outputs / ("out" if outtype in ("hf-packed", "bf16") else "out.gguf")
        return ["convert", str(make_src(inputs)), str(out), "--outtype", outtype, *extra]
    return build


def command_on(command: str, make_src: Callable[[Path], Path], *extra: str) -> Build:
    def build(inputs: Path, outputs: Path) -> list[str]:
        return [command, str(make_src(inputs)), *extra]
    return build


def fixture_master(edit_weights=None, edit_cfg=None) -> Callable[[Path], Path]:
    def make(inputs: Path) -> Path:
        model = copy_fixture(inputs)
        if edit_weights is not None:
            edit_safetensors(model, edit_weights)
        if edit_cfg is not None:
            edit_config(model, edit_cfg)
        return model
    return make


def only(name: str, value: Callable[[np.ndarray], np.ndarray]):
    return lambda tensor, raw: value(raw) if tensor == name else None


def set_bits(bits: int, count: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    def apply(raw: np.ndarray) -> np.ndarray:
        out = raw.copy().reshape(-1)
        out[: out.size if count is None else count] = bits
        return out.reshape(raw.shape)
    return apply


def gguf_with(outtype: str, *, kv=None, tensor=None) -> Callable[[Path], Path]:
    def make(inputs: Path) -> Path:
        return rewrite_gguf(converted(inputs, outtype), inputs / "edited.gguf", kv=kv, tensor=tensor)
    return make


def i2s_beta(value: float) -> Callable[[str, object, np.ndarray], np.ndarray]:
    """The f32 beta after the codes of CODE_GGUF_TENSOR set to `value`."""
    def edit(name: str, info, data: np.ndarray) -> np.ndarray:
        if name == CODE_GGUF_TENSOR:
            at = info.shape[0] * info.shape[1] // 4
            data[at:at + 4] = np.frombuffer(struct.pack("<f", value), np.uint8)
        return data
    return edit


def tq_d(half_bits: int) -> Callable[[str, object, np.ndarray], np.ndarray]:
    """Every block's fp16 d of CODE_GGUF_TENSOR (TQ2_0, 66-byte blocks) set to `half_bits`."""
    def edit(name: str, info, data: np.ndarray) -> np.ndarray:
        if name == CODE_GGUF_TENSOR:
            blocks = data.reshape(-1, 66)
            blocks[:, 64:66] = np.frombuffer(struct.pack("<H", half_bits), np.uint8)
        return data
    return edit


def kv_set(key: str, value: object, vtype: VT, subtype: VT | None = None) -> Callable[[dict], None]:
    def edit(kvs: dict) -> None:
        kvs[key] = KVField(value, vtype, subtype)
    return edit


def bad_merge(kvs: dict) -> None:
    merges = list(kvs["tokenizer.ggml.merges"].value)
    merges[3] = "nospace"
    kvs["tokenizer.ggml.merges"] = KVField(merges, VT.ARRAY, VT.STRING)


def packed_with_scale(bits: int) -> Callable[[Path], Path]:
    """The fixture as hf-packed with the weight_scale (bf16) of CODE_TENSOR set to `bits`."""
    def make(inputs: Path) -> Path:
        from bitnet_pack.pipeline.convert import convert
        from bitnet_pack.pipeline.sinks.factory import make_sink
        from bitnet_pack.pipeline.sources import open_checkpoint

        model = inputs / "packed"
        with open_checkpoint(FIXTURE) as source:
            convert(source, make_sink(model, "hf-packed"))
        edit_safetensors(model, only(CODE_TENSOR + "_scale", set_bits(bits)))
        return model
    return make


def nested_header(inputs: Path) -> Path:
    model = copy_fixture(inputs)
    text = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    text += b" " * (-len(text) % 8)
    (model / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text)
    return model


def zero_tensor_gguf(inputs: Path) -> Path:
    """A GGUF with the fixture's metadata and no tensor."""
    with GGUFFile(converted(inputs, "i2_s")) as file:
        writer = GGUFWriter(inputs / "empty.gguf", types=file.types)
        for key, field in file.kv.items():
            if key != "general.alignment":
                writer.add_kv(key, field)
        writer.finish()
    return inputs / "empty.gguf"


def empty_norm(tensor: str, raw: np.ndarray) -> np.ndarray | None:
    return np.zeros(0, raw.dtype) if tensor == "model.norm.weight" else None


def existing_output(name: str, content: bytes = b"someone else's") -> Callable[[Build], Build]:
    """Wraps a build: `outputs/name` exists before the run (and must be left as it is)."""
    def wrap(build: Build) -> Build:
        def wrapped(inputs: Path, outputs: Path) -> list[str]:
            (outputs / name).write_bytes(content)
            return build(inputs, outputs)
        return wrapped
    return wrap


def read_only_output(inputs: Path, outputs: Path) -> list[str]:
    """An output directory nobody may write: /proc for root (whom chmod does not stop)."""
    import os

    if os.geteuid() == 0:
        place = Path("/proc/bitnet-pack-hostile")
    else:
        place = outputs / "locked"
        place.mkdir()
        place.chmod(0o500)
    return ["convert", str(copy_fixture(inputs)), str(place / "out.gguf"), "--outtype", "i2_s"]


# -- the table -------------------------------------------------------------------------------

def _class_cases() -> dict[str, Hostile]:
    nan_tensor, bf16 = CODE_TENSOR, "hf-packed"
    return {
        # 2. weights and scales
        "master_inf_weight": Hostile(convert_of(fixture_master(only(nan_tensor, set_bits(0x7F80, 3))), bf16), 1,
                                     (f"tensor '{nan_tensor}'", "3 NaN/Inf values")),
        "master_bf16_max_projection": Hostile(convert_of(fixture_master(only(PROJECTION, set_bits(BF16_MAX)))), 1,
                                              (f"tensor '{PROJECTION}'", "overflows float32 to inf")),
        "gguf_beta_nan": Hostile(convert_of(gguf_with("i2_s", tensor=i2s_beta(float("nan"))), bf16), 1,
                                 (f"tensor '{CODE_TENSOR}'", "scale (beta) is nan")),
        "gguf_beta_inf": Hostile(convert_of(gguf_with("i2_s", tensor=i2s_beta(float("inf"))), "tq2_0"), 1,
                                 (f"tensor '{CODE_TENSOR}'", "scale (beta) is inf")),
        "gguf_beta_zero": Hostile(convert_of(gguf_with("i2_s", tensor=i2s_beta(0.0)), bf16), 1,
                                  (f"tensor '{CODE_TENSOR}'", "scale (beta) is 0.0 for a tensor with non-zero codes")),
        "gguf_beta_negative": Hostile(convert_of(gguf_with("i2_s", tensor=i2s_beta(-0.5)), bf16), 1,
                                      (f"tensor '{CODE_TENSOR}'", "scale (beta) is -0.5")),
        "tq2_0_d_nan": Hostile(convert_of(gguf_with("tq2_0", tensor=tq_d(0x7E00)), bf16), 1,
                               (f"tensor '{CODE_TENSOR}'", "scale (beta) is nan")),
        "packed_scale_zero": Hostile(convert_of(packed_with_scale(0x0000)), 1,
                                     (f"tensor '{CODE_TENSOR}'", "scale (beta) is 0.0")),
        "packed_scale_inf": Hostile(convert_of(packed_with_scale(0x7F80)), 1,
                                    (f"tensor '{CODE_TENSOR}'", "scale (beta) is inf")),
        # 4. two writers: what exists is left alone
        "output_exists": Hostile(existing_output("out.gguf")(convert_of(fixture_master())), 2,
                                 ("out.gguf exists: pass --force",)),
        "tl2_kernel_config_exists": Hostile(existing_output("out.kernel_config.ini")(convert_of(fixture_master(), "tl2")),
                                            2, ("out.kernel_config.ini exists: pass --force",)),
        "read_only_output": Hostile(read_only_output, 1),
        # 7. messages
        "outtype_unknown": Hostile(convert_of(fixture_master(), "q4_0"), 2,
                                   ("Invalid value for '--outtype': 'q4_0'", "--help")),
        "outtype_missing": Hostile(lambda i, o: ["convert", str(copy_fixture(i)), str(o / "x.gguf")], 2,
                                   ("Missing option '--outtype'",)),
        "unknown_command": Hostile(lambda i, o: ["convertt", "x"], 2, ("No such command 'convertt'",)),
        "nested_header": Hostile(convert_of(nested_header), 1, ("model.safetensors", "nests JSON deeper")),
        "config_array": Hostile(convert_of(fixture_master(edit_cfg=lambda c: [c])), 1,
                                ("config.json", "holds a JSON list, not an object")),
        "eps_not_a_number": Hostile(convert_of(fixture_master(edit_cfg=lambda c: c.update(rms_norm_eps="abc"))), 1,
                                    ("config.json", "rms_norm_eps", "'abc'")),
        "inspect_zero_tensors": Hostile(command_on("inspect", zero_tensor_gguf), 1, ("empty.gguf",)),
        "zero_element_norm": Hostile(convert_of(fixture_master(empty_norm)), 1,
                                     ("model", "'model.norm.weight'")),
        "verify_negative_eps": Hostile(command_on("verify", fixture_master(edit_cfg=lambda c: c.update(
            rms_norm_eps=-1.0)), str(FIXTURE), "--tokens", "2"), 1),
        "generate_zero_rope": Hostile(command_on("generate", fixture_master(edit_cfg=lambda c: c.update(
            rope_theta=0)), "--prompt", "hi", "--tokens", "2"), 1),
        # 8. GGUF vocabulary arrays
        "vocab_scores_short": Hostile(convert_of(gguf_with("i2_s", kv=kv_set(
            "tokenizer.ggml.scores", np.zeros(10, np.float32), VT.ARRAY, VT.FLOAT32)), "tq2_0"), 1,
            ("tokenizer.ggml.scores has 10 entries for 448 tokens",)),
        "vocab_token_type_long": Hostile(convert_of(gguf_with("i2_s", kv=kv_set(
            "tokenizer.ggml.token_type", np.ones(500, np.int32), VT.ARRAY, VT.INT32)), "tq2_0"), 1,
            ("tokenizer.ggml.token_type has 500 entries for 448 tokens",)),
        "vocab_bad_merge": Hostile(convert_of(gguf_with("i2_s", kv=bad_merge), "tq2_0"), 1,
                                   ("tokenizer.ggml.merges[3] = 'nospace'",)),
        "vocab_bos_out_of_range": Hostile(convert_of(gguf_with("i2_s", kv=kv_set(
            "tokenizer.ggml.bos_token_id", 448, VT.UINT32)), "tq2_0"), 1, ("bos_token_id = 448",)),
    }


def _container_cases() -> dict[str, Hostile]:
    """The cases already handled before issue 12, through convert and inspect."""
    cases = {}
    for name, case in FILE_CASES.items():
        def make(inputs: Path, case=case) -> Path:
            return case.build(inputs)
        cases[f"file_{name}"] = Hostile(convert_of(make, case.outtype), 1, case.message)
    for name, (data, _error, fragment) in GGUF_CASES.items():
        def crafted(inputs: Path, name=name, data=data) -> Path:
            path = inputs / f"{name}.gguf"
            path.write_bytes(data)
            return path
        cases[f"gguf_inspect_{name}"] = Hostile(command_on("inspect", crafted), 1, (f"{name}.gguf", fragment))
    return cases


def _issue18_cases() -> dict[str, Hostile]:
    from hostile_issue18 import cases

    return cases(Hostile, convert_of, command_on, fixture_master, gguf_with, kv_set, only, set_bits, i2s_beta,
                 converted)


CASES: dict[str, Hostile] = _class_cases() | _container_cases() | _issue18_cases()
