"""SentencePiece vocabularies: `tokenizer.model` reader, and the byte-fallback BPE
`tokenizer.json` that transformers' LlamaTokenizer writes, both ways to GGUF `llama`.

tokenizer.model is a protobuf `ModelProto`; only its pieces matter here:

    message   field  wire  content
    ModelProto    1    2   SentencePiece (repeated); fields 2-5 (specs) are skipped
    SentencePiece 1    2   piece, UTF-8
                  2    5   score, f32 little-endian (default 0.0)
                  3    0   type, varint (default 1 NORMAL)

    key byte(s) = varint (field << 3 | wire);  wire 0 varint, 1 8 bytes, 2 varint length + bytes,
    5 4 bytes.  Groups (wire 3/4) and anything else are refused.

The piece types are numbered like GGUF token types: 1 normal, 2 unknown, 3 control,
4 user-defined, 5 unused, 6 byte (`<0xNN>`). A SentencePiece BPE model scores its normal
pieces 0, -1, -2, ... in id order (the first one is -0.0 in the file), which is how the
scores come back when only tokenizer.json, which has none, is present.
"""
from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from ...errors import FormatError, LfsPointer, TruncatedFile

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = range(1, 7)
ADDED_SCORE = -1000.0  # added tokens and [PAD] placeholders, as llama.cpp's converters write
MAX_MODEL_BYTES = 64 << 20
BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")
SPACE_MARK = "\u2581"
LFS_MAGIC = b"version https://git-lfs"

__all__ = ["Token", "read_sentencepiece_model", "parse_sentencepiece_model", "spm_tokens_from_pieces",
           "spm_tokens_from_tokenizer_json", "spm_tokenizer_json", "spm_merges"]


class Token(NamedTuple):
    text: str
    type: int
    score: float


# --- protobuf ------------------------------------------------------------------------


def _varint(buf: bytes, pos: int, end: int, path: object) -> tuple[int, int]:
    start, value = pos, 0
    for shift in range(0, 70, 7):
        if pos >= end:
            raise TruncatedFile(f"varint at byte {start} runs past byte {end}", path=path)
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
    raise FormatError(f"varint at byte {start} is longer than 10 bytes", path=path)


def _fields(buf: bytes, pos: int, end: int, path: object) -> Iterator[tuple[int, int, object, int]]:
    """(field, wire type, value, key offset) for each field in buf[pos:end]. The value is an
    int for wire 0, the bytes for wire 1/5, and (start, end) offsets into buf for wire 2."""
    sizes = {1: 8, 5: 4}
    while pos < end:
        at = pos
        key, pos = _varint(buf, pos, end, path)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise FormatError(f"protobuf field number 0 at byte {at}", path=path)
        if wire == 0:
            value, pos = _varint(buf, pos, end, path)
            yield field, wire, value, at
            continue
        if wire == 2:
            size, pos = _varint(buf, pos, end, path)
        elif wire in sizes:
            size = sizes[wire]
        else:
            raise FormatError(f"protobuf wire type {wire} (field {field}) at byte {at} is not supported",
                              path=path)
        if size > end - pos:
            raise TruncatedFile(f"field {field} at byte {at} needs {size} bytes, {end - pos} remain",
                                path=path)
        yield field, wire, ((pos, pos + size) if wire == 2 else buf[pos:pos + size]), at
        pos += size


def _piece(buf: bytes, span: tuple[int, int], index: int, at: int, path: object) -> Token:
    text, score, kind = None, 0.0, NORMAL
    for field, wire, value, _ in _fields(buf, *span, path):
        expected = {1: 2, 2: 5, 3: 0}.get(field)
        if expected is None:
            continue
        if wire != expected:
            raise FormatError(f"piece {index} (byte {at}): field {field} has wire type {wire}, "
                              f"expected {expected}", path=path)
        if field == 1:
            try:
                text = buf[value[0]:value[1]].decode("utf-8")
            except UnicodeDecodeError as err:
                raise FormatError(f"piece {index} (byte {at}) is not UTF-8: {err.reason} at {err.start}",
                                  path=path) from None
        elif field == 2:
            score = struct.unpack("<f", value)[0]
        else:
            kind = value
    if not text:
        raise FormatError(f"piece {index} (byte {at}) has no text", path=path)
    if not NORMAL <= kind <= BYTE:
        raise FormatError(f"piece {index} {text!r} has type {kind}, expected 1..6", path=path)
    return Token(text, kind, score)


def parse_sentencepiece_model(data: bytes, path: object = None) -> list[Token]:
    """The pieces of a serialized ModelProto, in id order. Raises FormatError subclasses."""
    if data.startswith(LFS_MAGIC):
        raise LfsPointer("is a git-lfs pointer, not the SentencePiece model: fetch it with git lfs",
                         path=path)
    pieces: list[Token] = []
    for field, wire, value, at in _fields(data, 0, len(data), path):
        if field == 1:
            if wire != 2:
                raise FormatError(f"ModelProto field 1 at byte {at} has wire type {wire}, expected 2",
                                  path=path)
            pieces.append(_piece(data, value, len(pieces), at, path))
    if not pieces:
        raise FormatError(f"holds no SentencePiece pieces ({len(data)} bytes)", path=path)
    return pieces


def read_sentencepiece_model(path: Path) -> list[Token]:
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise FormatError(f"is {size} bytes, more than the {MAX_MODEL_BYTES} a SentencePiece model may have",
                          path=path)
    return parse_sentencepiece_model(path.read_bytes(), path)


# --- forward: pieces / tokenizer.json -> tokens ---------------------------------------


def _added(entry: dict) -> Token:
    return Token(entry["content"], CONTROL if entry.get("special") else USER_DEFINED, ADDED_SCORE)


def spm_tokens_from_pieces(pieces: list[Token], added: list[dict]) -> dict[int, Token]:
    """Proto pieces by id; added tokens past the pieces are appended (control if special)."""
    tokens = dict(enumerate(pieces))
    tokens.update({entry["id"]: _added(entry) for entry in added if entry["id"] >= len(pieces)})
    return tokens


def spm_tokens_from_tokenizer_json(vocab: dict[str, int], added: list[dict],
                                   unk: str | None) -> dict[int, Token]:
    """What tokenizer.model would say, rebuilt from a byte-fallback BPE tokenizer.json."""
    added_by_id = {entry["id"]: entry for entry in added}
    tokens: dict[int, Token] = {}
    rank = 0
    for text, index in sorted(vocab.items(), key=lambda item: item[1]):
        entry = added_by_id.get(index)
        if text == unk:
            tokens[index] = Token(text, UNKNOWN, 0.0)
        elif entry is not None:
            tokens[index] = Token(text, CONTROL if entry.get("special") else USER_DEFINED, 0.0)
        elif BYTE_PIECE.fullmatch(text):
            tokens[index] = Token(text, BYTE, 0.0)
        else:
            tokens[index] = Token(text, NORMAL, -float(rank))  # rank 0 gives -0.0, as the trainer wrote
            rank += 1
    tokens.update({index: _added(entry) for index, entry in added_by_id.items() if index not in tokens})
    return tokens


# --- reverse: GGUF tokens -> tokenizer.json ------------------------------------------


def spm_merges(vocab: dict[str, int]) -> list[list[str]]:
    """Every split of a piece into two pieces, ordered by the piece's id, then by the
    length of the left part: the rule transformers uses when it converts a SentencePiece
    BPE model, so the rebuilt file merges exactly as the one LlamaTokenizer wrote."""
    lengths = sorted({len(piece) for piece in vocab} - {0})
    present = set(lengths)
    found = []
    for piece, index in vocab.items():
        # only cuts where both parts have the length of some piece: linear in a long piece's
        # length, not quadratic (a 1 MB token would otherwise slice for minutes)
        for cut in lengths:
            if cut >= len(piece):
                break
            if len(piece) - cut not in present:
                continue
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                found.append((index, cut, left, right))
    found.sort()
    return [[left, right] for _, _, left, right in found]


def spm_tokenizer_json(tokens: list[str], unk_id: int | None, added_tokens: list[dict],
                       post_processor: dict) -> dict:
    """The tokenizer.json layout LlamaTokenizer (transformers 5) writes for a SentencePiece
    BPE model: every piece in the BPE vocab, byte fallback, Metaspace with a leading space
    on the first word only, and a decoder that undoes both."""
    vocab = {text: index for index, text in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise FormatError(f"tokenizer.ggml.tokens holds {len(tokens) - len(vocab)} duplicate pieces")
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens,
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": SPACE_MARK, "prepend_scheme": "first",
                          "split": False},
        "post_processor": post_processor,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE_MARK}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ]},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None if unk_id is None else tokens[unk_id],
            "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
            "byte_fallback": True, "ignore_merges": False, "vocab": vocab, "merges": spm_merges(vocab),
        },
    }
