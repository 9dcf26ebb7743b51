"""Tokenizer files <-> GGUF `tokenizer.*` metadata, both ways.

    checkpoint files                               GGUF tokenizer.ggml.model / .pre
    tokenizer.json, byte-level BPE                 "gpt2"  / per pre-tokenizer and target:
                                                             llama-bpe, gpt-2, falcon3, and
                                                             falcon_e (bitnet.cpp) = falcon-h1
                                                             (llama.cpp); see tokenizer_pre.py
    tokenizer.model (SentencePiece protobuf), or   "llama" / "default"     (tokenizer_spm.py)
    tokenizer.json, BPE + byte_fallback

Token types: 1 normal, 2 unknown, 3 control (special added tokens), 4 user-defined (other
added tokens), 5 unused (`[PAD{i}]` holes up to config vocab_size), 6 byte (`<0xNN>`).
Special ids: tokenizer_config's `<kind>_token` text first, then config.json, then
generation_config.json `<kind>_token_id` (the first of a list).

The targets differ only where the runtimes' converters differ:
    bitnet.cpp, 2B4T (BitNetForCausalLM), as convert-ms-to-gguf-bitnet.py writes:
                add_bos_token first, a scores array for gpt2 too (0.0 normal, -1000.0 added),
                the BITNET chat template (the fork switches to its builtin chat format when a
                template contains "BITNET"). We add tokenizer.ggml.pre, which that converter
                omits (its loader then splits text with llama.cpp's "default" regexes).
    bitnet.cpp, other families, as convert-hf-to-gguf-bitnet.py writes (mainline's layout),
    llama.cpp   as mainline convert_hf_to_gguf.py writes: gpt2 without scores, the checkpoint's
                chat template.
add_bos_token is always written for gpt2: the runtimes' defaults disagree when it is missing
(mainline adds BOS for llama-bpe/falcon3/falcon-h1, the fork only for llama-bpe).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gguf import GGUFValueType, Keys

from ...errors import FormatError, LfsPointer, MissingFile, UsageError
from .pre import (
    HASHES,
    LLAMA3_SPLIT,
    LLAMA3_SPLIT_CASED,
    NAMES,
    check_hash,
    runtime_name,
    split_rules,
)
from .spm import (
    ADDED_SCORE,
    CONTROL,
    LFS_MAGIC,
    NORMAL,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
    Token,
    read_sentencepiece_model,
    spm_tokens_from_pieces,
    spm_tokens_from_tokenizer_json,
)

__all__ = ["BITNET_CHAT_TEMPLATE", "LLAMA3_SPLIT", "LLAMA3_SPLIT_CASED", "TARGETS", "gguf_tokenizer_metadata",
           "pre_tokenizer_name"]

Entry = tuple[str, object, GGUFValueType, GGUFValueType | None]
T, V = Keys.Tokenizer, GGUFValueType
TARGETS = ("bitnet.cpp", "llama.cpp")

# The template convert-ms-to-gguf-bitnet.py writes into every file, whatever the checkpoint has.
BITNET_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{{ 'Human: ' + message['content'] + '\\n\\nBITNETAssistant: ' + eos_token }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)

SPECIAL_KINDS = ("bos", "eos", "unk", "pad")
ID_KEYS = {"bos": T.BOS_ID, "eos": T.EOS_ID, "unk": T.UNK_ID, "pad": T.PAD_ID}
ADD_KEYS = {"bos": T.ADD_BOS, "eos": T.ADD_EOS}


@dataclass
class _Files:
    dir: Path
    tokenizer_json: dict | None
    tokenizer_config: dict
    generation_config: dict
    spm_model: Path | None  # tokenizer.model, parsed only when it is the vocabulary used


@dataclass
class _Vocab:
    model: str  # "gpt2" | "llama"
    pre: str
    table: list[Token]  # one per id, holes filled
    merges: list[str]
    lookup: dict[str, int]  # token text -> first id (added tokens first)


# --- forward ---------------------------------------------------------------------------


def gguf_tokenizer_metadata(model_dir: Path, config: dict, *, target: str,
                            pre: str | None = None) -> list[Entry]:
    """The ordered `tokenizer.*` KV entries (key, value, type, array item type) for a GGUF.

    Args:
        model_dir: the checkpoint directory (tokenizer.json and/or tokenizer.model, configs).
        config: config.json, parsed (vocab_size and the *_token_id fall-backs).
        target: "bitnet.cpp" or "llama.cpp" (see the module docstring).
        pre: tokenizer.ggml.pre for a ByteLevel BPE whose pre-tokenizer is not recognised (a
            name another runtime spells differently is written as the target spells it).
    Returns:
        [(key, value, GGUFValueType, item type or None)], arrays as lists.
    """
    if target not in TARGETS:
        raise UsageError(f"unknown tokenizer target {target!r}; known: {', '.join(TARGETS)}")
    files = _read_files(Path(model_dir))
    vocab = _load_vocab(files, config, pre, target)
    convert_ms = _convert_ms_style(config, target)
    special = _special_ids(files, config, vocab)
    flags = _add_flags(files, vocab, special, convert_ms)
    return _entries(vocab, special, flags, _chat_templates(files, convert_ms), convert_ms)


def _convert_ms_style(config: dict, target: str) -> bool:
    """True where bitnet.cpp's 2B4T converter (convert-ms-to-gguf-bitnet.py) is the peer:
    target bitnet.cpp and a BitNetForCausalLM (or unnamed) architecture."""
    architectures = config.get("architectures") or ["BitNetForCausalLM"]
    return target == "bitnet.cpp" and "BitNetForCausalLM" in architectures


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, None if there is no such file."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    if data.startswith(LFS_MAGIC):
        raise LfsPointer("is a git-lfs pointer, not the JSON file: fetch it with git lfs", path=path)
    try:
        value = json.loads(data)
    except json.JSONDecodeError as err:
        raise FormatError(f"is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}",
                          path=path) from None
    except ValueError as err:  # bytes that are not UTF-8/16/32
        raise FormatError(f"is not valid JSON text: {err}".splitlines()[0], path=path) from None
    if not isinstance(value, dict):
        raise FormatError(f"holds a JSON {type(value).__name__}, expected an object", path=path)
    return value


def _read_files(model_dir: Path) -> _Files:
    tokenizer_json = read_json(model_dir / "tokenizer.json")
    spm = model_dir / "tokenizer.model"
    if tokenizer_json is None and not spm.is_file():
        raise MissingFile("not found, and there is no tokenizer.model beside it",
                          path=model_dir / "tokenizer.json")
    return _Files(model_dir, tokenizer_json, read_json(model_dir / "tokenizer_config.json") or {},
                  read_json(model_dir / "generation_config.json") or {}, spm if spm.is_file() else None)


def _checked_model(tj: dict, path: Path) -> tuple[dict, dict[str, int], list[dict]]:
    """tokenizer.json's model, vocab and added tokens, with their types checked."""
    model, added = tj.get("model"), tj.get("added_tokens") or []
    if not isinstance(model, dict) or not isinstance(model.get("vocab"), dict):
        raise FormatError("has no model.vocab object", path=path)
    vocab = model["vocab"]
    bad = next((k for k, v in vocab.items() if type(v) is not int or v < 0), None)
    if bad is not None:
        raise FormatError(f"model.vocab[{bad!r}] = {vocab[bad]!r} is not a token id", path=path)
    if len(set(vocab.values())) != len(vocab):
        shared = len(vocab) - len(set(vocab.values()))
        raise FormatError(f"model.vocab gives {shared} ids to two tokens", path=path)

    def is_added_token(a: object) -> bool:
        return (isinstance(a, dict) and type(a.get("id")) is int and a["id"] >= 0
                and isinstance(a.get("content"), str))

    if not isinstance(added, list) or not all(is_added_token(a) for a in added):
        raise FormatError("added_tokens must be a list of {id, content} objects", path=path)
    by_id = {i: text for text, i in vocab.items()}
    clash = next((a for a in added if by_id.get(a["id"], a["content"]) != a["content"]), None)
    if clash is not None:
        raise FormatError(f"id {clash['id']} is {by_id[clash['id']]!r} in model.vocab but added token "
                          f"{clash['content']!r}", path=path)
    return model, vocab, added


def _steps(node: object) -> list[dict]:
    """The steps of a pre-tokenizer/decoder/post-processor, a Sequence or a single one."""
    node = node if isinstance(node, dict) else {}
    steps = node.get("pretokenizers", node.get("decoders", node.get("processors", [node])))
    return [step for step in steps if isinstance(step, dict)] if isinstance(steps, list) else []


def _kind(tj: dict, model: dict) -> str | None:
    pre_steps = [step.get("type") for step in _steps(tj.get("pre_tokenizer"))]
    if model.get("type") != "BPE":
        return None
    if "ByteLevel" in pre_steps + [step.get("type") for step in _steps(tj.get("decoder"))]:
        return "gpt2"
    if model.get("byte_fallback") or "Metaspace" in pre_steps:
        return "spm"
    return None


def pre_tokenizer_name(pre_tokenizer: object) -> str | None:
    """llama.cpp's name for a ByteLevel pre-tokenizer judged by its split rules alone (no
    hash): "llama-bpe", "gpt-2" or "falcon3"; None for anything else."""
    identity = split_rules(pre_tokenizer)
    return NAMES[identity]["llama.cpp"] if identity is not None else None


def _pre_identity(path: Path, tj: dict) -> str:
    """The converters' check hash names a released tokenizer (Falcon3 and Falcon-E share their
    split rules); otherwise the split rules decide (a retrained vocabulary), which also serve
    when the tokenizers library cannot load the file. See tokenizer_pre.py."""
    rules = split_rules(tj.get("pre_tokenizer"))
    try:
        digest = check_hash(path)
    except FormatError:
        if rules is None:
            raise
        return rules
    identity = HASHES.get(digest, rules)
    if identity is None:
        shown = json.dumps(tj.get("pre_tokenizer"))[:120]
        raise FormatError(f"ByteLevel pre-tokenizer with split rules that are not Llama 3's, GPT-2's or "
                          f"Falcon's ({shown}...) and check hash {digest[:16]}... that no converter lists; "
                          "pass pre= to name it", path=path)
    return identity


def _load_vocab(files: _Files, config: dict, pre: str | None, target: str) -> _Vocab:
    path, tj = files.dir / "tokenizer.json", files.tokenizer_json
    model, vocab, added = _checked_model(tj, path) if tj is not None else ({}, {}, [])
    kind = _kind(tj, model) if tj is not None else None
    if kind == "gpt2":
        tokens = _bpe_tokens(vocab, added)
        merges = _merge_strings(model.get("merges") or [], path)
        name = runtime_name(pre or _pre_identity(path, tj), target)
        return _Vocab("gpt2", name, _fill(tokens, config, path), merges, _lookup(added, tokens))
    if files.spm_model is not None:
        path = files.spm_model
        tokens = spm_tokens_from_pieces(read_sentencepiece_model(path), added)
    elif kind == "spm":
        unk = model.get("unk_token") or token_text(files.tokenizer_config.get("unk_token"))
        tokens = spm_tokens_from_tokenizer_json(vocab, added, unk)
    else:
        raise FormatError(f"model type {model.get('type')!r} is neither a ByteLevel BPE nor a byte-fallback "
                          "(SentencePiece-style) BPE, and there is no tokenizer.model", path=path)
    return _Vocab("llama", "default", _fill(tokens, config, path), [], _lookup(added, tokens))


def _bpe_tokens(vocab: dict[str, int], added: list[dict]) -> dict[int, Token]:
    tokens = {index: Token(text, NORMAL, 0.0) for text, index in vocab.items()}
    for entry in added:
        text = entry["content"]
        special = entry.get("special") or (text.startswith("<|") and text.endswith("|>"))
        tokens[entry["id"]] = Token(text, CONTROL if special else USER_DEFINED, ADDED_SCORE)
    return tokens


def _merge_strings(merges: object, path: Path) -> list[str]:
    """Merges as "a b" strings, from either spelling; a space inside a part of the pair
    spelling becomes U+0120, as llama.cpp's converter writes it."""
    merges = merges if isinstance(merges, list) else [merges]
    if all(isinstance(m, str) for m in merges):
        bad = next((i for i, m in enumerate(merges) if m.count(" ") != 1), None)
        if bad is None:
            return list(merges)
    else:
        def is_pair(m: object) -> bool:
            return isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m)

        bad = next((i for i, m in enumerate(merges) if not is_pair(m)), None)
        if bad is None:
            return [" ".join(part.replace(" ", "\u0120") for part in pair) for pair in merges]
    raise FormatError(f"model.merges[{bad}] = {str(merges[bad])[:60]!r} is neither \"a b\" nor "
                      "[\"a\", \"b\"]", path=path)


def _fill(tokens: dict[int, Token], config: dict, path: Path) -> list[Token]:
    if not tokens:
        raise FormatError("holds no tokens", path=path)
    top = max(tokens) + 1
    size = config.get("vocab_size", top)
    if type(size) is not int or size < top:
        raise FormatError(f"has token id {top - 1} but config.json vocab_size is {size!r}", path=path)
    return [tokens.get(i) or Token(f"[PAD{i}]", UNUSED, ADDED_SCORE) for i in range(size)]


def _lookup(added: list[dict], tokens: dict[int, Token]) -> dict[str, int]:
    lookup: dict[str, int] = {}
    for entry in added:
        lookup.setdefault(entry["content"], entry["id"])
    for index in sorted(tokens):
        lookup.setdefault(tokens[index].text, index)
    return lookup


def token_text(entry: object) -> str | None:
    """A tokenizer_config `<kind>_token`: a string or a serialized AddedToken."""
    entry = entry.get("content") if isinstance(entry, dict) else entry
    return entry if isinstance(entry, str) else None


def _first_int(value: object) -> int | None:
    value = value[0] if isinstance(value, list) and value else value
    return value if type(value) is int else None


def _special_ids(files: _Files, config: dict, vocab: _Vocab) -> dict[str, int]:
    found = {}
    for kind in SPECIAL_KINDS:
        text = token_text(files.tokenizer_config.get(f"{kind}_token"))
        candidates = [(vocab.lookup.get(text) if text is not None else None, "tokenizer_config.json"),
                      (_first_int(config.get(f"{kind}_token_id")), "config.json"),
                      (_first_int(files.generation_config.get(f"{kind}_token_id")), "generation_config.json")]
        if kind == "unk":
            candidates.append((next((i for i, t in enumerate(vocab.table) if t.type == UNKNOWN), None), ""))
        index, where = next(((i, w) for i, w in candidates if i is not None), (None, ""))
        if index is None:
            continue
        if not 0 <= index < len(vocab.table):
            raise FormatError(f"{kind} token id {index} is outside the vocabulary of {len(vocab.table)}",
                              path=files.dir / where)
        found[kind] = index
    return found


def _add_flags(files: _Files, vocab: _Vocab, special: dict[str, int], convert_ms: bool) -> dict[str, bool]:
    """add_bos/add_eos: tokenizer_config's booleans, else the leading/trailing special token
    of the post-processor's single template, else add_bos true for SentencePiece (its
    convention, and llama.cpp's default) and for convert-ms (which always writes it), false
    for other byte-level BPEs (what transformers does; the runtimes' defaults disagree)."""
    texts = {kind: vocab.table[i].text for kind, i in special.items()}
    flags: dict[str, bool] = {}
    for step in _steps((files.tokenizer_json or {}).get("post_processor")):
        single = step.get("single") if step.get("type") == "TemplateProcessing" else None
        if isinstance(single, list) and len(single) > 1 and all(isinstance(s, dict) for s in single):
            first, last = ((single[i].get("SpecialToken") or {}).get("id") for i in (0, -1))
            flags.update({"bos": first == texts.get("bos", first)} if first else {})  # unnamed: it is
            flags.update({"eos": last == texts.get("eos", last)} if last else {})
    for kind in ("bos", "eos"):
        if isinstance(files.tokenizer_config.get(f"add_{kind}_token"), bool):
            flags[kind] = files.tokenizer_config[f"add_{kind}_token"]
    if "bos" not in flags:
        flags["bos"] = vocab.model == "llama" or convert_ms
    return flags


def _chat_templates(files: _Files, convert_ms: bool) -> list[Entry]:
    """BITNET for convert-ms; else tokenizer_config's chat_template, chat_template.jinja or
    chat_template.json. A list of {name, template} gives named keys, as mainline writes."""
    if convert_ms:
        return [(T.CHAT_TEMPLATE, BITNET_CHAT_TEMPLATE, V.STRING, None)]
    template, jinja = files.tokenizer_config.get("chat_template"), files.dir / "chat_template.jinja"
    if template is None and jinja.is_file():
        try:
            template = jinja.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise FormatError(f"is not UTF-8 ({err.reason} at byte {err.start})", path=jinja) from None
    if template is None:
        template = (read_json(files.dir / "chat_template.json") or {}).get("chat_template")
    if template is None or isinstance(template, str):
        return [] if template is None else [(T.CHAT_TEMPLATE, template, V.STRING, None)]
    named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)} \
        if isinstance(template, list) else {}
    if not named or not all(isinstance(n, str) and isinstance(t, str) for n, t in named.items()):
        raise FormatError("chat_template must be a string or a list of {name, template} strings",
                          path=files.dir / "tokenizer_config.json")
    clean = {"".join(c if c.isascii() and c.isalnum() else "_" for c in n): t for n, t in named.items() if n}
    others = sorted(n for n in clean if n != "default")
    out: list[Entry] = [(T.CHAT_TEMPLATE_N.format(name=n), clean[n], V.STRING, None) for n in others]
    out += [(T.CHAT_TEMPLATES, others, V.ARRAY, V.STRING)] if others else []
    return out + ([(T.CHAT_TEMPLATE, clean["default"], V.STRING, None)] if "default" in clean else [])


def _entries(vocab: _Vocab, special: dict[str, int], flags: dict[str, bool], templates: list[Entry],
             convert_ms: bool) -> list[Entry]:
    out: list[Entry] = [(T.ADD_BOS, flags["bos"], V.BOOL, None)] if convert_ms else []
    out.append((T.MODEL, vocab.model, V.STRING, None))
    out.append((T.PRE, vocab.pre, V.STRING, None))
    out.append((T.LIST, [t.text for t in vocab.table], V.ARRAY, V.STRING))
    if vocab.model == "llama" or convert_ms:
        out.append((T.SCORES, [t.score for t in vocab.table], V.ARRAY, V.FLOAT32))
    out.append((T.TOKEN_TYPE, [t.type for t in vocab.table], V.ARRAY, V.INT32))
    if vocab.merges:
        out.append((T.MERGES, vocab.merges, V.ARRAY, V.STRING))
    out += [(ID_KEYS[kind], special[kind], V.UINT32, None) for kind in SPECIAL_KINDS if kind in special]
    out += [(ADD_KEYS[k], value, V.BOOL, None) for k, value in flags.items() if not (convert_ms and k == "bos")]
    return out + templates
