"""tokenizer.* keys of an embedding GGUF, as bitnet.cpp's embedding converter writes them.

qwen3 (gpt2 BPE): tokens = the vocabulary with added tokens, `[PAD<id>]` (UNUSED) up to
vocab_size; added tokens CONTROL when special or shaped like `<...>` / `[...]`, else
USER_DEFINED; merges from tokenizer.json; the special ids; then EOS forced to 151643 and
add_eos_token forced true (the converter's, whatever the tokenizer says), no scores.

gemma3 ("llama" model over a BPE vocabulary): tokens from tokenizer.json model.vocab only,
scores -1000 for added tokens, 0 for bytes, -rank of the first merge producing a piece (the
first merge's result gets -0.0), add_space_prefix false, no merges.

Special ids follow gguf-py's SpecialVocab: for bos, eos, unk, sep, pad, cls, mask in that
order, tokenizer_config.json's `<kind>_token` looked up among the added tokens, else
config.json's `<kind>_token_id`; then tokenizer_config.json's add_<kind>_token booleans.
"""
from __future__ import annotations

import json
from pathlib import Path

from gguf import GGUFValueType as VT

from ...errors import HeaderInvalid, MissingFile
from .metadata import _pre_identity
from .pre import NAMES

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPECIAL_KINDS = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
GGUF_KIND = {"unk": "unknown", "sep": "seperator", "pad": "padding"}  # llama.cpp's key spelling
QWEN_EOS = 151643  # <|endoftext|> of the real Qwen3 tokenizer, forced by the converter


def _json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise HeaderInvalid(f"not valid JSON ({exc})", path=path) from None


def looks_special(token: str) -> bool:
    return bool(token) and token.startswith(("<|", "<", "[")) and token.endswith(("|>", ">", "]"))


def tokenizer_kvs(directory: Path, config: dict, arch: str) -> list[tuple[str, object, VT, VT | None]]:
    tj = _json(directory / "tokenizer.json")
    if not tj:
        raise MissingFile("tokenizer.json is missing: the converter builds the vocabulary from it", path=directory)
    vocab_size = int(config["vocab_size"])
    kvs = _gemma_vocab(tj, vocab_size) if arch == "gemma3" else _bpe_vocab(directory, tj, vocab_size)
    kvs += _special(directory, tj, config, merges=arch != "gemma3")
    if arch == "qwen3":
        _set(kvs, ("tokenizer.ggml.eos_token_id", QWEN_EOS, VT.UINT32, None))
        _set(kvs, ("tokenizer.ggml.add_eos_token", True, VT.BOOL, None))
    return kvs


def _set(kvs: list, entry: tuple) -> None:
    """Replace the key's value where it is, or append it."""
    for index, existing in enumerate(kvs):
        if existing[0] == entry[0]:
            kvs[index] = entry
            return
    kvs.append(entry)


def _added(tj: dict) -> dict[int, dict]:
    return {int(a["id"]): a for a in tj.get("added_tokens") or []}


def _bpe_vocab(directory: Path, tj: dict, vocab_size: int) -> list[tuple]:
    added = _added(tj)
    by_id = {int(i): t for t, i in (tj.get("model") or {}).get("vocab", {}).items()}
    by_id.update({i: a["content"] for i, a in added.items()})
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added:
            token = by_id[i]
            if added[i].get("special") or looks_special(token):
                types.append(CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(USER_DEFINED)
            tokens.append(token)
        else:
            tokens.append(by_id[i])
            types.append(NORMAL)
    return [("tokenizer.ggml.model", "gpt2", VT.STRING, None),
            ("tokenizer.ggml.pre", _pre_name(directory / "tokenizer.json", tj), VT.STRING, None),
            ("tokenizer.ggml.tokens", tokens, VT.ARRAY, VT.STRING),
            ("tokenizer.ggml.token_type", types, VT.ARRAY, VT.INT32)]


# Qwen2/Qwen3's split regex (llama.cpp "qwen2"): Llama 3's with single digits
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _pre_name(path: Path, tj: dict) -> str:
    """llama.cpp's name for the pre-tokenizer. The converter hashes its own check text, which
    has 6 double quotes where llama.cpp's has 4, so none of its llama.cpp-derived hashes can
    match; we identify the tokenizer with llama.cpp's text, as the shipped files were made, and
    name Qwen's own split rules (the real BitNet-embedding-0.6B's tokenizer) "qwen2"."""
    pre = tj.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") or [pre]
    split = next((s for s in steps if isinstance(s, dict) and s.get("type") == "Split"), None)
    if split is not None and (split.get("pattern") or {}).get("Regex") == QWEN2_SPLIT:
        return "qwen2"
    return NAMES[_pre_identity(path, tj)]["bitnet.cpp"]


def _merge_text(merge: object) -> str:
    return " ".join(merge) if isinstance(merge, list) else str(merge)


def _gemma_vocab(tj: dict, vocab_size: int) -> list[tuple]:
    model = tj.get("model") or {}
    scores_of: dict[str, float] = {}
    for rank, merge in enumerate(model.get("merges") or []):
        result = "".join(merge) if isinstance(merge, list) else "".join(str(merge).split(" ", 1))
        scores_of.setdefault(result, -float(rank))
    by_id = {int(i): t for t, i in model.get("vocab", {}).items()}
    added = _added(tj)
    tokens, scores, types = [], [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            scores.append(-10000.0)
            types.append(UNUSED)
            continue
        if i in added:
            types.append(CONTROL if added[i].get("special") or looks_special(token) else USER_DEFINED)
            scores.append(-1000.0)
        elif token.startswith("<0x") and token.endswith(">") and len(token) == 6:
            types.append(BYTE)
            scores.append(0.0)
        elif token == "<unk>":
            types.append(UNKNOWN)
            scores.append(0.0)
        else:
            types.append(NORMAL)
            scores.append(scores_of.get(token, 0.0))
        tokens.append(token)
    return [("tokenizer.ggml.model", "llama", VT.STRING, None), ("tokenizer.ggml.pre", "default", VT.STRING, None),
            ("tokenizer.ggml.tokens", tokens, VT.ARRAY, VT.STRING),
            ("tokenizer.ggml.scores", scores, VT.ARRAY, VT.FLOAT32),
            ("tokenizer.ggml.token_type", types, VT.ARRAY, VT.INT32),
            ("tokenizer.ggml.add_space_prefix", False, VT.BOOL, None)]


def _special(directory: Path, tj: dict, config: dict, *, merges: bool) -> list[tuple]:
    kvs = []
    merge_list = (tj.get("model") or {}).get("merges") if merges else None
    if merge_list:
        kvs.append(("tokenizer.ggml.merges", [_merge_text(m) for m in merge_list], VT.ARRAY, VT.STRING))
    tc = _json(directory / "tokenizer_config.json")
    by_content = {a["content"]: int(a["id"]) for a in tj.get("added_tokens") or []}
    for kind in SPECIAL_KINDS:
        entry = tc.get(f"{kind}_token")
        content = entry.get("content") if isinstance(entry, dict) else entry
        token_id = by_content.get(content) if isinstance(content, str) else None
        if token_id is None:
            found = config.get(f"{kind}_token_id")
            token_id = found if isinstance(found, int) and not isinstance(found, bool) and found >= 0 else None
        if token_id is not None:
            kvs.append((f"tokenizer.ggml.{GGUF_KIND.get(kind, kind)}_token_id", token_id, VT.UINT32, None))
    for kind in SPECIAL_KINDS:
        flag = tc.get(f"add_{kind}_token")
        if isinstance(flag, bool):
            kvs.append((f"tokenizer.ggml.add_{kind}_token", flag, VT.BOOL, None))
    template = tc.get("chat_template")
    if isinstance(template, str):
        kvs.append(("tokenizer.chat_template", template, VT.STRING, None))
    return kvs
