"""Crafted bad GGUF files, built in memory for tests/test_gguf_container.py (no committed binaries).

`RawGGUF` assembles a file from raw parts, independently of bitnet_pack's writer, so one
rule at a time can be broken (duplicate keys, n_dims 5, overlapping tensors ...). `CASES`
maps a case name to (file bytes, the error class the reader must raise, a message fragment).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

from bitnet_pack import errors

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
F32_TYPE, F16_TYPE, TQ2_0_TYPE = 0, 1, 35


def gguf_string(text: str | bytes) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv_string(key: str, value: str) -> tuple[bytes, int, bytes]:
    return gguf_string(key), STRING, gguf_string(value)


def kv_u32(key: str, value: int) -> tuple[bytes, int, bytes]:
    return gguf_string(key), U32, struct.pack("<I", value)


def kv_array(key: str, elem: int, count: int, payload: bytes) -> tuple[bytes, int, bytes]:
    return gguf_string(key), ARRAY, struct.pack("<IQ", elem, count) + payload


@dataclass
class RawGGUF:
    """Parts of a GGUF file; `build()` returns the bytes and where each region starts."""

    kvs: list[tuple[bytes, int, bytes]] = field(default_factory=list)
    tensors: list[tuple[bytes, tuple[int, ...], int, int]] = field(default_factory=list)
    data: bytes = b""
    magic: bytes = b"GGUF"
    version: int = 3
    n_kv: int | None = None
    n_tensors: int | None = None
    alignment: int = 32
    n_dims: dict[int, int] = field(default_factory=dict)  # tensor index -> declared n_dims override

    def build(self) -> tuple[bytes, dict[str, int]]:
        out = bytearray(self.magic + struct.pack("<I", self.version))
        out += struct.pack("<QQ", len(self.tensors) if self.n_tensors is None else self.n_tensors,
                           len(self.kvs) if self.n_kv is None else self.n_kv)
        marks = {"kv": len(out)}
        for key, vtype, payload in self.kvs:
            out += key + struct.pack("<I", vtype) + payload
        marks["tensor_info"] = len(out)
        for i, (name, ne, type_id, offset) in enumerate(self.tensors):
            out += name + struct.pack("<I", self.n_dims.get(i, len(ne)))
            out += b"".join(struct.pack("<q", n) for n in ne) + struct.pack("<IQ", type_id, offset)
        out += bytes(-len(out) % self.alignment)
        marks["data"] = len(out)
        out += self.data
        return bytes(out), marks


def base() -> RawGGUF:
    """A small valid file: 5 KVs, an F32 [4, 8] tensor (128 B) and an F16 [16] tensor (32 B)."""
    tokens = b"".join(gguf_string(t) for t in ("<s>", "</s>", "hello"))
    return RawGGUF(
        kvs=[kv_string("general.architecture", "llama"), kv_string("general.name", "crafted-model"),
             kv_u32("llama.block_count", 2), kv_array("tokenizer.ggml.tokens", STRING, 3, tokens),
             kv_array("tokenizer.ggml.scores", F32, 3, struct.pack("<3f", 0.0, -1.0, -2.5))],
        tensors=[(gguf_string("a.weight"), (8, 4), F32_TYPE, 0), (gguf_string("b.weight"), (16,), F16_TYPE, 128)],
        data=bytes(range(128)) + bytes(range(100, 132)),
    )


def base_bytes() -> bytes:
    return base().build()[0]


def _with(**changes: object) -> bytes:
    return replace(base(), **changes).build()[0]


def _kvs_plus(*extra: tuple[bytes, int, bytes]) -> list[tuple[bytes, int, bytes]]:
    return base().kvs + list(extra)


def _tensor(i: int, *, ne: tuple[int, ...] | None = None, type_id: int | None = None,
            offset: int | None = None, name: bytes | None = None) -> list:
    tensors = list(base().tensors)
    old_name, old_ne, old_type, old_offset = tensors[i]
    tensors[i] = (name or old_name, old_ne if ne is None else ne, old_type if type_id is None else type_id,
                  old_offset if offset is None else offset)
    return tensors


def _truncated(region: str, extra: int) -> bytes:
    data, marks = base().build()
    return data[: marks[region] + extra]


def _cut_string_array() -> bytes:
    """A 10**6-string array whose file ends after two strings (a download cut in the header)."""
    two = gguf_string("ab") + gguf_string("c")
    data, marks = replace(base(), kvs=_kvs_plus(kv_array("x.strs", STRING, 10**6, two)), tensors=[]).build()
    return data[: marks["tensor_info"]]


def _case_table() -> dict[str, tuple[bytes, type, str]]:
    E = errors
    lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 1187801280\n"
    big_key = (struct.pack("<Q", 1 << 62) + b"general.name", STRING, gguf_string("x"))
    return {
        "zero_length": (b"", E.TruncatedFile, "empty"),
        "three_bytes": (b"GGU", E.TruncatedFile, "shorter than the GGUF magic"),
        "bad_magic": (_with(magic=b"GGUX"), E.BadMagic, "not the GGUF magic"),
        "html_page": (b"<!DOCTYPE html><html>404</html>" + bytes(40), E.BadMagic, "HTML"),
        "lfs_pointer": (lfs, E.LfsPointer, "git-lfs pointer, not the data: fetch the real file"),
        "truncated_in_header": (base_bytes()[:13], E.TruncatedFile, "truncated download?"),
        "truncated_in_kv": (_truncated("kv", 30), E.TruncatedFile, "general.architecture"),
        "truncated_in_tensor_info": (_truncated("tensor_info", 14), E.TruncatedFile, "truncated download?"),
        "truncated_in_data": (_truncated("data", 140), E.TruncatedFile, "needs bytes"),
        "truncated_before_data": (_truncated("data", 0), E.TruncatedFile, "'a.weight'"),
        "version_1": (_with(version=1), E.HeaderInvalid, "version 1"),
        "big_endian": (_with(version=3 << 24), E.HeaderInvalid, "big-endian"),
        "huge_kv_count": (_with(n_kv=1 << 50), E.HeaderTooLarge, "key-value table"),
        "huge_tensor_count": (_with(n_tensors=1 << 40), E.HeaderTooLarge, "tensor table"),
        "huge_string_length": (_with(kvs=[big_key]), E.HeaderTooLarge, "corrupt header"),
        "huge_array_count": (_with(kvs=_kvs_plus(kv_array("x.arr", U32, 1 << 60, b""))), E.HeaderTooLarge, "'x.arr'"),
        "huge_string_array": (_with(kvs=_kvs_plus(kv_array("x.strs", STRING, 1 << 40, b""))), E.HeaderTooLarge,
                              "'x.strs'"),
        "long_string_array_cut_short": (_cut_string_array(), E.TruncatedFile, "'x.strs'[2] length needs bytes"),
        "unknown_value_type": (_with(kvs=_kvs_plus((gguf_string("x.bad"), 13, b"\0" * 8))), E.HeaderInvalid,
                               "value type 13"),
        "unknown_array_element_type": (_with(kvs=_kvs_plus(kv_array("x.bad", 42, 1, b"\0" * 8))), E.HeaderInvalid,
                                       "value type 42"),
        "nested_too_deep": (_with(kvs=_kvs_plus(kv_array("x.deep", ARRAY, 1, struct.pack("<IQ", ARRAY, 1) * 9))),
                            E.HeaderInvalid, "nests arrays deeper"),
        "key_not_utf8": (_with(kvs=_kvs_plus((gguf_string(b"x.\xff\xfe"), U8, b"\1"))), E.HeaderInvalid, "UTF-8"),
        "duplicate_key": (_with(kvs=_kvs_plus(kv_u32("llama.block_count", 3))), E.HeaderInvalid,
                          "'llama.block_count' appears twice"),
        "alignment_not_power_of_two": (_with(kvs=_kvs_plus(kv_u32("general.alignment", 48))), E.HeaderInvalid,
                                       "power of two"),
        "alignment_zero": (_with(kvs=_kvs_plus(kv_u32("general.alignment", 0))), E.HeaderInvalid, "power of two"),
        "alignment_wrong_type": (_with(kvs=_kvs_plus((gguf_string("general.alignment"), U64, struct.pack("<Q", 32)))),
                                 E.HeaderInvalid, "must be uint32"),
        "flavour_key_unknown": (_with(kvs=_kvs_plus(kv_string("bitnet_pack.type_flavour", "1999"))),
                                E.HeaderInvalid, "'1999'"),
        "flavour_key_not_a_string": (_with(kvs=_kvs_plus(kv_array("bitnet_pack.type_flavour", U32, 1, b"\0" * 4))),
                                     E.HeaderInvalid, "must be the string"),
        "n_dims_5": (_with(tensors=_tensor(0, ne=(8, 4, 1, 1, 1))), E.HeaderInvalid, "n_dims is 5"),
        "zero_dim": (_with(tensors=_tensor(0, ne=(8, 0))), E.HeaderInvalid, "ne[1] is 0"),
        "negative_dim": (_with(tensors=_tensor(0, ne=(-8, 4))), E.HeaderInvalid, "ne[0] is -8"),
        "element_count_overflow": (_with(tensors=_tensor(0, ne=(1 << 40, 1 << 30))), E.HeaderInvalid, "2^63-1"),
        "unknown_tensor_type": (_with(tensors=_tensor(0, type_id=99)), E.UnknownTensorType, "type id 99"),
        "bitnet_id_in_mainline_file": (_with(tensors=_tensor(0, type_id=36)), E.UnknownTensorType, "flavour"),
        "block_size_mismatch": (_with(tensors=_tensor(0, type_id=TQ2_0_TYPE)), E.HeaderInvalid, "block size 256"),
        "misaligned_offset": (_with(tensors=_tensor(1, offset=132)), E.OffsetOutOfRange, "not a multiple"),
        "offset_past_end": (_with(tensors=_tensor(1, offset=1 << 40)), E.OffsetOutOfRange, "past the file"),
        "overlapping_tensors": (_with(tensors=_tensor(1, offset=96)), E.HeaderInvalid, "overlap"),
        "duplicate_tensor": (_with(tensors=_tensor(1, name=gguf_string("a.weight"))), E.DuplicateTensor,
                             "appears twice"),
    }


CASES = _case_table()
