"""Byte-level BPE pre-tokenizers: which one a tokenizer.json uses, and the name each runtime
accepts in `tokenizer.ggml.pre`.

How the converters decide: llama.cpp's convert_hf_to_gguf and bitnet.cpp's copy of it
(convert-hf-to-gguf-bitnet.py) encode one fixed text, CHECK_TEXT, with the checkpoint's own
tokenizer and look the sha256 of `str(ids)` up in a table; an unknown hash stops them. The
hash covers the vocabulary as well as the split rules, so it names a released tokenizer, not
a way of splitting. We compute the hash the same way (the `tokenizers` library, which
transformers' fast tokenizers run) and look it up in `HASHES`; for a tokenizer not listed
(a retrained vocabulary) we judge the split rules themselves:

    split rules (tokenizer.json pre_tokenizer)               vocabulary   bitnet.cpp  llama.cpp
    Split(Llama 3 regex, Isolated) + ByteLevel(no regex)     Llama 3      llama-bpe   llama-bpe
    ByteLevel(use_regex)                                     GPT-2        gpt-2       gpt-2
    Punctuation(Contiguous) + ByteLevel(use_regex)           Falcon3      falcon3     falcon3
      + Digits(individual_digits)                            Falcon-E     falcon_e    falcon-h1

bitnet.cpp is its llama.cpp fork 40ed0f2 (bitnet.cpp 404980e); llama.cpp is mainline. What
their loaders do with these names, read from their sources:
- the fork splits "falcon3" and "falcon_e" text alike with Falcon's rules and single digits
  (punctuation runs, then GPT-2's regex, then [0-9]) and fails on "falcon-h1" ("unknown
  pre-tokenizer type");
- mainline splits "falcon3" and "falcon-h1" with Llama 3's regex, adds BOS unless the file
  says add_bos_token false, and fails on "falcon_e".
The Falcon rows' split rules are the ones the fork implements for those names (the released
Falcon3/Falcon-E tokenizer.json files were not available here to compare). They split text as
the fork does except inside characters: HF's Digits step runs on the byte-level text, where
bytes 0xB2 0xB3 0xB9 0xBC-0xBE read as numeric characters (tests/test_tokenizer_bpe.py).
Later bitnet.cpp trees reportedly lost "falcon_e" again (microsoft/BitNet#622, not checked).
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path

from ...errors import FormatError

__all__ = ["CHECK_TEXT", "HASHES", "LLAMA3_SPLIT", "LLAMA3_SPLIT_CASED", "check_hash", "identity_of_name",
           "pre_tokenizer_json", "runtime_name", "split_rules"]

# The text both converters encode (convert_hf_to_gguf.get_vocab_base_pre's chktxt).
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n"
    "\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f (multiple emojis concatenated) \u2705 "
    "\U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "\u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\U0001f601 "
    "?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= "
    "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? "
    "'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)

# identity of the released tokenizers whose hashes the converters list
HASHES = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama3",    # Meta-Llama-3-8B
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt2",      # openai gpt2
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",   # Falcon3-7B-Base
    "a6b57017d60e6edb4d88ecc2845188e0eb333a70357e45dcc9b53964a73bbae6": "falcon-e",  # Falcon-E-3B, Falcon-H1-0.5B
}
NAMES = {  # identity -> tokenizer.ggml.pre per target
    "llama3": {"bitnet.cpp": "llama-bpe", "llama.cpp": "llama-bpe"},
    "gpt2": {"bitnet.cpp": "gpt-2", "llama.cpp": "gpt-2"},
    "falcon3": {"bitnet.cpp": "falcon3", "llama.cpp": "falcon3"},
    "falcon-e": {"bitnet.cpp": "falcon_e", "llama.cpp": "falcon-h1"},
}
# every tokenizer.ggml.pre spelling of these (the loaders accept llama3 / llama-v3 too)
IDENTITY_OF_NAME = {"llama-bpe": "llama3", "llama3": "llama3", "llama-v3": "llama3", "gpt-2": "gpt2",
                    "falcon3": "falcon3", "falcon_e": "falcon-e", "falcon-h1": "falcon-e"}

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# the same regex without the (?i:) group, as some Llama 3 derivatives spell it
LLAMA3_SPLIT_CASED = LLAMA3_SPLIT.replace("(?i:'s|'t|'re|'ve|'m|'ll|'d)",
                                          "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])")

_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}
_PRE_TOKENIZERS = {  # identity -> (tokenizer.json pre_tokenizer, model.ignore_merges)
    "llama3": ({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
        {**_BYTE_LEVEL, "use_regex": False}]}, True),
    "gpt2": ({**_BYTE_LEVEL, "use_regex": True}, False),
    "falcon3": ({"type": "Sequence", "pretokenizers": [
        {"type": "Punctuation", "behavior": "Contiguous"}, {**_BYTE_LEVEL, "use_regex": True},
        {"type": "Digits", "individual_digits": True}]}, False),
}
_PRE_TOKENIZERS["falcon-e"] = _PRE_TOKENIZERS["falcon3"]


def _steps(node: object) -> list[dict]:
    """A pre-tokenizer's steps ({} for anything that is not a step object)."""
    if not isinstance(node, dict):
        return [{}]
    if node.get("type") != "Sequence":
        return [node]
    steps = node.get("pretokenizers")
    return [s if isinstance(s, dict) else {} for s in steps] if isinstance(steps, list) else [{}]


def _step_kind(step: dict) -> str | None:
    """One step as a token of the rule table: "llama3-split", "bytelevel-regex", ..."""
    kind = step.get("type")
    if kind == "Split" and step.get("behavior") == "Isolated" and not step.get("invert"):
        regex = (step.get("pattern") or {}).get("Regex") if isinstance(step.get("pattern"), dict) else None
        return "llama3-split" if regex in (LLAMA3_SPLIT, LLAMA3_SPLIT_CASED) else None
    if kind == "ByteLevel" and not step.get("add_prefix_space"):
        return "bytelevel-regex" if step.get("use_regex", True) else "bytelevel"
    if kind == "Punctuation" and step.get("behavior", "Isolated") == "Contiguous":
        return "punctuation-runs"
    if kind == "Digits" and step.get("individual_digits") is True:
        return "single-digits"
    return None


RULES = {("llama3-split", "bytelevel"): "llama3", ("bytelevel-regex",): "gpt2",
         ("punctuation-runs", "bytelevel-regex", "single-digits"): "falcon3"}


def split_rules(pre_tokenizer: object) -> str | None:
    """The identity whose split rules `pre_tokenizer` (tokenizer.json's) has, None if none:
    "llama3", "gpt2", or "falcon3" (Falcon3 and Falcon-E share them)."""
    kinds = tuple(_step_kind(step) for step in _steps(pre_tokenizer))
    return RULES.get(kinds)


def check_hash(tokenizer_json: Path) -> str:
    """sha256 of str(ids of CHECK_TEXT), as the converters compute it (special tokens added)."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_json))
    except Exception as err:  # the Rust side raises plain Exceptions with a message
        raise FormatError(f"the tokenizers library cannot load it: {str(err).splitlines()[0]}",
                          path=tokenizer_json) from None
    ids = tokenizer.encode(CHECK_TEXT).ids
    return hashlib.sha256(str(ids).encode()).hexdigest()


def identity_of_name(name: str) -> str | None:
    """The identity a tokenizer.ggml.pre spelling stands for ("falcon_e" -> "falcon-e")."""
    return IDENTITY_OF_NAME.get(name)


def runtime_name(name: str, target: str) -> str:
    """`name` (an identity or any runtime's spelling) as `target` spells it; unknown names
    are returned unchanged."""
    identity = name if name in NAMES else identity_of_name(name)
    return NAMES[identity][target] if identity is not None else name


def pre_tokenizer_json(name: str) -> tuple[dict, bool] | None:
    """(tokenizer.json pre_tokenizer, model.ignore_merges) for a tokenizer.ggml.pre name."""
    identity = name if name in _PRE_TOKENIZERS else identity_of_name(name)
    known = _PRE_TOKENIZERS.get(identity) if identity is not None else None
    return copy.deepcopy(known) if known is not None else None
