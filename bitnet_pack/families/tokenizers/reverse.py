"""GGUF tokenizer metadata -> tokenizer.json and tokenizer_config.json (the reverse of
`tokenizer.gguf_tokenizer_metadata`): byte-level BPE with the split rules that
`tokenizer.ggml.pre` names (any runtime's spelling: falcon_e and falcon-h1 alike), or the
SentencePiece-style BPE transformers' LlamaTokenizer writes."""
from __future__ import annotations

import json
from collections.abc import Mapping
from numbers import Integral

from ...errors import FormatError
from .metadata import ADD_KEYS, ID_KEYS, SPECIAL_KINDS, T
from .pre import IDENTITY_OF_NAME, pre_tokenizer_json
from .spm import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED, spm_tokenizer_json


def tokenizer_files_from_gguf(kv: Mapping[str, object]) -> dict[str, str]:
    """tokenizer.json and tokenizer_config.json (as text) rebuilt from GGUF metadata.

    `kv` maps key names to plain values (arrays as sequences or numpy arrays). gpt2 becomes
    a ByteLevel BPE with the split rules its `pre` names (no `pre`, as bitnet.cpp's 2B4T
    converter writes, is taken as Llama 3's); llama becomes LlamaTokenizer's byte-fallback BPE.
    add_bos_token defaults as llama.cpp does: true for llama, false for gpt2.
    """
    model = _kv_text(kv.get(T.MODEL), T.MODEL)
    tokens = [_kv_text(t, T.LIST) for t in _kv_array(kv, T.LIST)]
    types = [int(t) for t in kv.get(T.TOKEN_TYPE, [NORMAL] * len(tokens))]
    if len(types) != len(tokens):
        raise FormatError(f"{T.TOKEN_TYPE} has {len(types)} entries for {len(tokens)} tokens")
    ids = {kind: _kv_id(kv, kind, len(tokens)) for kind in SPECIAL_KINDS if ID_KEYS[kind] in kv}
    flags = {"bos": bool(kv.get(T.ADD_BOS, model == "llama")), "eos": bool(kv.get(T.ADD_EOS, False))}
    added = [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": types[i] == USER_DEFINED, "special": types[i] != USER_DEFINED}
             for i in range(len(tokens)) if types[i] in (UNKNOWN, CONTROL, USER_DEFINED)]
    post = _post_processor(tokens, ids, flags)
    if model == "gpt2":
        tokenizer = _bpe_tokenizer_json(kv, tokens, types, added, post)
    elif model == "llama":
        tokenizer = spm_tokenizer_json(tokens, ids.get("unk"), added, post)
    else:
        raise FormatError(f"{T.MODEL} {model!r} is neither gpt2 nor llama")
    config = {f"add_{kind}_token": flags[kind] for kind in ("bos", "eos") if ADD_KEYS[kind] in kv}
    config.update({f"{kind}_token": tokens[i] for kind, i in ids.items()})
    config.update({"clean_up_tokenization_spaces": False, "tokenizer_class": "PreTrainedTokenizerFast"})
    template = _kv_templates(kv)
    config.update({"chat_template": template} if template is not None else {})
    # compact: the indenting JSON encoder is pure Python and takes seconds for 280k merges
    return {"tokenizer.json": json.dumps(tokenizer, ensure_ascii=False, separators=(",", ":")) + "\n",
            "tokenizer_config.json": json.dumps(config, ensure_ascii=False, indent=2) + "\n"}


def _kv_text(value: object, key: str) -> str:
    if isinstance(value, (bytes, bytearray)):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise FormatError(f"{key} holds bytes that are not UTF-8 ({err.reason} at {err.start})") from None
    if not isinstance(value, str):
        raise FormatError(f"{key} is {type(value).__name__}, expected a string")
    return value


def _kv_array(kv: Mapping[str, object], key: str) -> list:
    value = kv.get(key)
    if value is None or isinstance(value, (str, bytes)):
        raise FormatError(f"{key} is {'missing' if value is None else 'not an array'}")
    return list(value)


def _kv_id(kv: Mapping[str, object], kind: str, size: int) -> int:
    value = kv[ID_KEYS[kind]]
    if isinstance(value, bool) or not isinstance(value, Integral) or not 0 <= value < size:
        raise FormatError(f"{ID_KEYS[kind]} = {value!r} is not a token id below {size}")
    return int(value)


def _kv_templates(kv: Mapping[str, object]) -> str | list[dict] | None:
    prefix = T.CHAT_TEMPLATE + "."
    named = [{"name": k[len(prefix):], "template": _kv_text(v, k)} for k, v in kv.items()
             if k.startswith(prefix)]
    default = kv.get(T.CHAT_TEMPLATE)
    default = None if default is None else _kv_text(default, T.CHAT_TEMPLATE)
    if not named:
        return default
    return ([{"name": "default", "template": default}] if default is not None else []) + named


def _post_processor(tokens: list[str], ids: dict[str, int], flags: dict[str, bool]) -> dict:
    """TemplateProcessing: bos before and eos after each sequence, when the flags say so."""
    ends = {kind: tokens[ids[kind]] for kind in ("bos", "eos") if flags[kind] and kind in ids}

    def sequence(name: str, type_id: int) -> list[dict]:
        def special(kind: str) -> list[dict]:
            return [{"SpecialToken": {"id": ends[kind], "type_id": type_id}}] if kind in ends else []
        return special("bos") + [{"Sequence": {"id": name, "type_id": type_id}}] + special("eos")

    return {"type": "TemplateProcessing", "single": sequence("A", 0),
            "pair": sequence("A", 0) + sequence("B", 1),
            "special_tokens": {t: {"id": t, "ids": [ids[k]], "tokens": [t]} for k, t in ends.items()}}


def _bpe_tokenizer_json(kv: Mapping[str, object], tokens: list[str], types: list[int], added: list[dict],
                        post: dict) -> dict:
    pre = _kv_text(kv.get(T.PRE, "llama-bpe"), T.PRE)
    known = pre_tokenizer_json(pre)
    if known is None:
        raise FormatError(f"{T.PRE} {pre!r} has no tokenizer.json equivalent here; "
                          f"known: {', '.join(IDENTITY_OF_NAME)}")
    pre_tokenizer, ignore_merges = known
    vocab = {tokens[i]: i for i in range(len(tokens)) if types[i] in (NORMAL, UNUSED, BYTE)}
    if len(vocab) != sum(t in (NORMAL, UNUSED, BYTE) for t in types):
        raise FormatError(f"{T.LIST} holds the same text twice among its normal tokens")
    merges = [_kv_text(m, T.MERGES).split(" ") for m in _kv_array(kv, T.MERGES)]
    bad = next((i for i, pair in enumerate(merges) if len(pair) != 2), None)
    if bad is not None:
        raise FormatError(f"{T.MERGES}[{bad}] = {' '.join(merges[bad])!r} is not two parts "
                          "separated by one space")
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": pre_tokenizer, "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges},
    }
