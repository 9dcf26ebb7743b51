"""Tokenizer files <-> GGUF tokenizer metadata, checked against the peers' files:
the KVs bitnet.cpp's converter wrote for the Llama 3 tokenizer (gguf-kv.json) and for
tiny-a's SentencePiece model (tiny-a-i2_s.gguf, tiny-a-tl2.gguf), and `tokenizers` for
the rebuilt tokenizer.json files."""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFValueType
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.containers.gguf_write import GGUFWriter
from bitnet_pack.errors import FormatError, LfsPointer, MissingFile, TruncatedFile, UsageError
from bitnet_pack.families.tokenizers.metadata import (
    BITNET_CHAT_TEMPLATE,
    LLAMA3_SPLIT,
    LLAMA3_SPLIT_CASED,
    gguf_tokenizer_metadata,
    pre_tokenizer_name,
)
from bitnet_pack.families.tokenizers.reverse import tokenizer_files_from_gguf
from bitnet_pack.families.tokenizers.spm import parse_sentencepiece_model

LLAMA3_CONFIG = {"vocab_size": 128256, "bos_token_id": 128000, "eos_token_id": 128001}
SAMPLES = [
    "Hello world", "The quick brown fox jumps over the lazy dog.", "don't I'LL we're you've",
    "  two spaces,   three, \t tab\n\nnewlines\r\nCRLF   ", "    ", "\n\n\n", "x\u00a0y",
    "12345 3.14159 1,000,000 2025-06-03 0x1F", "émoji 🤖👍🏽 family 👨‍👩‍👧 flag 🇫🇷",
    "中文 日本語 한국어 Ελληνικά русский", "<|begin_of_text|>hi<|eot_id|>", "<s>a</s><unk>",
    "def f(x):\n    return x**2  # comment", "ǅ ẞ ﬁ ½ ①", "",
]


def entry_map(entries):
    return {key: (value, vtype, sub) for key, value, vtype, sub in entries}


def kv_values(entries):
    return {key: value for key, value, _, _ in entries}


def f32_bytes(values) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def write_files(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def encodings(tokenizer: Tokenizer, texts, special: bool) -> list[list[int]]:
    return [tokenizer.encode(t, add_special_tokens=special).ids for t in texts]


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def llama3_dir(shared_vectors: Path) -> Path:
    return shared_vectors / "llama3-tokenizer"


@pytest.fixture(scope="session")
def llama3_peer_kv(shared_vectors: Path) -> dict:
    return json.loads((shared_vectors / "llama3-tokenizer.gguf-kv.json").read_text(encoding="utf-8"))["kv"]


@pytest.fixture(scope="session")
def llama3_entries(llama3_dir: Path) -> dict[str, list]:
    return {target: gguf_tokenizer_metadata(llama3_dir, LLAMA3_CONFIG, target=target)
            for target in ("bitnet.cpp", "llama.cpp")}


@pytest.fixture(scope="session")
def llama3_tokenizer(llama3_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(llama3_dir / "tokenizer.json"))


@pytest.fixture(scope="session")
def tiny_dir(tiny_a: Path) -> Path:
    return tiny_a / "tiny-a-bf16"


@pytest.fixture(scope="session")
def tiny_config(tiny_dir: Path) -> dict:
    return json.loads((tiny_dir / "config.json").read_text())


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))


@pytest.fixture(scope="session")
def gpt2_style_json() -> str:
    """A small GPT-2-style byte-level BPE (ByteLevel with its own regex, no Split)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = SAMPLES * 20 + ["the license of the work, and the other terms"] * 50
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer.to_str()


def tiny_variant(tmp_path: Path, tiny_dir: Path, *, keep=("tokenizer.json", "tokenizer.model"),
                 config_edit=None, name="variant") -> Path:
    """A copy of tiny-a's tokenizer files (only those in `keep`), tokenizer_config edited."""
    out = tmp_path / name
    out.mkdir()
    for file in keep:
        shutil.copy(tiny_dir / file, out / file)
    config = json.loads((tiny_dir / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps(config_edit(config) if config_edit else config))
    return out


# --- Llama 3: the bitnet.cpp peer's KVs, key by key ------------------------------------


def test_llama3_bitnet_cpp_equals_peer_kv(llama3_entries, llama3_peer_kv):
    ours = entry_map(llama3_entries["bitnet.cpp"])
    peer = {k: v for k, v in llama3_peer_kv.items() if k.startswith("tokenizer.")}
    assert len(peer) == 9
    for key, field in peer.items():
        value, vtype, sub = ours[key]
        if field["type"] == "array":
            assert (vtype, sub.name.lower()) == (GGUFValueType.ARRAY, field["value"]["array_of"]), key
            assert value == field["value"]["value"], key
        else:
            assert vtype.name.lower() == field["type"], key
            assert value == field["value"], key
    assert set(ours) - set(peer) == {"tokenizer.ggml.pre"}
    assert ours["tokenizer.ggml.pre"][0] == "llama-bpe"
    assert [k for k in ours if k in peer] == list(peer)  # the peer's order
    assert ours["tokenizer.chat_template"][0] == BITNET_CHAT_TEMPLATE
    assert len(ours["tokenizer.ggml.merges"][0]) == 280147 and len(ours["tokenizer.ggml.tokens"][0]) == 128256


def test_llama3_llama_cpp_conventions(llama3_entries, llama3_peer_kv):
    ours = entry_map(llama3_entries["llama.cpp"])
    assert list(ours) == ["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                          "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
                          "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token"]
    assert ours["tokenizer.ggml.model"][0] == "gpt2" and ours["tokenizer.ggml.pre"][0] == "llama-bpe"
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"):
        assert ours[key][0] == llama3_peer_kv[key]["value"]["value"], key
    assert ours["tokenizer.ggml.add_bos_token"] == (True, GGUFValueType.BOOL, None)
    assert ours["tokenizer.ggml.bos_token_id"] == (128000, GGUFValueType.UINT32, None)


def test_llama3_template_from_tokenizer_config(tmp_path, llama3_dir):
    (tmp_path / "tokenizer.json").symlink_to(llama3_dir / "tokenizer.json")
    config = json.loads((llama3_dir / "tokenizer_config.json").read_text())
    config.update(chat_template="{{ messages }}", add_bos_token=False)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    mainline = entry_map(gguf_tokenizer_metadata(tmp_path, {}, target="llama.cpp"))
    assert mainline["tokenizer.chat_template"][0] == "{{ messages }}"
    assert mainline["tokenizer.ggml.add_bos_token"][0] is False
    bitnet = entry_map(gguf_tokenizer_metadata(tmp_path, {}, target="bitnet.cpp"))
    assert bitnet["tokenizer.chat_template"][0] == BITNET_CHAT_TEMPLATE
    assert bitnet["tokenizer.ggml.add_bos_token"][0] is False


def test_merge_spellings_give_identical_kvs(tmp_path, llama3_dir, llama3_entries):
    data = json.loads((llama3_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data["model"]["merges"] = [m.split(" ") for m in data["model"]["merges"]]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    shutil.copy(llama3_dir / "tokenizer_config.json", tmp_path)
    for target in ("bitnet.cpp", "llama.cpp"):
        assert gguf_tokenizer_metadata(tmp_path, LLAMA3_CONFIG, target=target) == llama3_entries[target]


def test_pair_merge_with_space_is_written_as_u0120(tmp_path, gpt2_style_json):
    data = json.loads(gpt2_style_json)
    data["model"]["merges"] = [[a, b] for a, b in (m.split(" ") if isinstance(m, str) else m
                                                    for m in data["model"]["merges"])] + [["a b", "c"]]
    write_files(tmp_path, {"tokenizer.json": json.dumps(data)})
    merges = kv_values(gguf_tokenizer_metadata(tmp_path, {}, target="llama.cpp"))["tokenizer.ggml.merges"]
    assert merges[-1] == "a\u0120b c"


# --- pre-tokenizer detection -----------------------------------------------------------


def test_pre_tokenizer_llama3_detected(llama3_tokenizer, llama3_dir):
    pre = json.loads((llama3_dir / "tokenizer.json").read_text(encoding="utf-8"))["pre_tokenizer"]
    assert pre["pretokenizers"][0]["pattern"]["Regex"] == LLAMA3_SPLIT
    assert pre_tokenizer_name(pre) == "llama-bpe"
    cased = json.loads(json.dumps(pre).replace(json.dumps(LLAMA3_SPLIT)[1:-1],
                                               json.dumps(LLAMA3_SPLIT_CASED)[1:-1]))
    assert cased != pre and pre_tokenizer_name(cased) == "llama-bpe"
    # the two spellings split text the same way
    for text in SAMPLES:
        a = pre_tokenizers.Split(Regex(LLAMA3_SPLIT), "isolated").pre_tokenize_str(text)
        b = pre_tokenizers.Split(Regex(LLAMA3_SPLIT_CASED), "isolated").pre_tokenize_str(text)
        assert a == b


def _llama3_pre(regex=LLAMA3_SPLIT, behavior="Isolated", prefix=False):
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": behavior, "invert": False},
        {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True, "use_regex": False}]}


@pytest.mark.parametrize("pre_tokenizer, name", [
    ({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}, "gpt-2"),
    ({"type": "ByteLevel", "add_prefix_space": False}, "gpt-2"),
    ({"type": "ByteLevel", "add_prefix_space": True, "use_regex": True}, None),  # RoBERTa-style prefix
    (_llama3_pre(), "llama-bpe"),
    (_llama3_pre(regex=LLAMA3_SPLIT.replace("{1,3}", "{1,2}")), None),
    (_llama3_pre(behavior="Removed"), None),
    (_llama3_pre(prefix=True), None),
    ({"type": "Sequence", "pretokenizers": [
        _llama3_pre()["pretokenizers"][0], {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}]},
     None),  # Llama 3 split, then GPT-2's regex again
    ({"type": "Metaspace", "replacement": "\u2581"}, None),
    (None, None),
])
def test_pre_tokenizer_names(pre_tokenizer, name):
    assert pre_tokenizer_name(pre_tokenizer) == name


def test_gpt2_style_tokenizer_not_labelled_llama(tmp_path, gpt2_style_json):
    write_files(tmp_path, {"tokenizer.json": gpt2_style_json})
    kv = kv_values(gguf_tokenizer_metadata(tmp_path, {}, target="llama.cpp"))
    assert (kv["tokenizer.ggml.model"], kv["tokenizer.ggml.pre"]) == ("gpt2", "gpt-2")
    assert kv["tokenizer.ggml.token_type"][0] == 3 and set(kv["tokenizer.ggml.token_type"][1:]) == {1}
    assert kv["tokenizer.ggml.add_bos_token"] is False  # nothing says so: as transformers, said explicitly
    original = Tokenizer.from_str(gpt2_style_json)
    rebuilt = Tokenizer.from_str(tokenizer_files_from_gguf(kv)["tokenizer.json"])
    assert encodings(rebuilt, SAMPLES, True) == encodings(original, SAMPLES, True)


def test_unknown_split_regex_refused_unless_named(tmp_path, gpt2_style_json):
    data = json.loads(gpt2_style_json)
    data["pre_tokenizer"] = _llama3_pre(regex=r"\p{L}+|\s+")
    write_files(tmp_path, {"tokenizer.json": json.dumps(data)})
    with pytest.raises(FormatError, match=r"tokenizer\.json: .*pass pre="):
        gguf_tokenizer_metadata(tmp_path, {}, target="bitnet.cpp")
    kv = kv_values(gguf_tokenizer_metadata(tmp_path, {}, target="bitnet.cpp", pre="custom"))
    assert kv["tokenizer.ggml.pre"] == "custom"


# --- tiny-a: SentencePiece, against the peer's GGUF files -------------------------------


@pytest.mark.parametrize("gguf_name, target", [
    ("tiny-a-i2_s.gguf", "bitnet.cpp"), ("tiny-a-tl2.gguf", "bitnet.cpp"), ("tiny-a-tl2.gguf", "llama.cpp")])
def test_tiny_a_equals_peer_gguf(tiny_a, tiny_dir, tiny_config, gguf_name, target):
    ours = entry_map(gguf_tokenizer_metadata(tiny_dir, tiny_config, target=target))
    with GGUFFile(tiny_a / gguf_name) as peer:
        fields = {k: f for k, f in peer.kv.items() if k.startswith("tokenizer.")}
        for key, field in fields.items():
            value, vtype, sub = ours[key]
            assert (vtype, sub) == (field.vtype, field.subtype), key
            if key == "tokenizer.ggml.scores":  # bytes: the first normal piece scores -0.0
                assert f32_bytes(value) == field.value.astype("<f4").tobytes()
            elif isinstance(field.value, np.ndarray):
                assert value == field.value.tolist(), key
            else:
                assert value == field.value, key
    assert set(ours) - set(fields) <= {"tokenizer.ggml.pre", "tokenizer.ggml.add_bos_token",
                                       "tokenizer.chat_template"}
    assert ours["tokenizer.ggml.pre"][0] == "default"
    assert "tokenizer.ggml.merges" not in ours


def test_tiny_a_model_and_json_give_the_same_kvs(tmp_path, tiny_dir, tiny_config):
    only_model = tiny_variant(tmp_path, tiny_dir, keep=("tokenizer.model",), name="model")
    only_json = tiny_variant(tmp_path, tiny_dir, keep=("tokenizer.json",), name="json")
    for target in ("bitnet.cpp", "llama.cpp"):
        both = gguf_tokenizer_metadata(tiny_dir, tiny_config, target=target)
        from_model = gguf_tokenizer_metadata(only_model, tiny_config, target=target)
        from_json = gguf_tokenizer_metadata(only_json, tiny_config, target=target)
        assert from_model == both and from_json == both
        scores = kv_values(from_json)["tokenizer.ggml.scores"]
        assert f32_bytes(scores) == f32_bytes(kv_values(from_model)["tokenizer.ggml.scores"])


def test_tiny_a_entries_survive_our_gguf_writer(tmp_path, tiny_a, tiny_dir, tiny_config):
    entries = gguf_tokenizer_metadata(tiny_dir, tiny_config, target="bitnet.cpp")
    with GGUFWriter(tmp_path / "tok.gguf") as writer:
        for key, value, vtype, sub in entries:
            writer.add_kv(key, value, vtype, sub)
    with GGUFFile(tmp_path / "tok.gguf") as ours, GGUFFile(tiny_a / "tiny-a-i2_s.gguf") as peer:
        for key, field in peer.kv.items():
            if key.startswith("tokenizer."):
                mine = ours.kv[key]
                assert (mine.vtype, mine.subtype) == (field.vtype, field.subtype), key
                same = (mine.value.tobytes() == field.value.tobytes() if isinstance(field.value, np.ndarray)
                        else mine.value == field.value)
                assert same, key


def test_special_ids_fall_back_to_config_files(tmp_path, tiny_dir):
    def strip(config):
        return {k: v for k, v in config.items() if k not in ("bos_token", "eos_token", "unk_token")}

    directory = tiny_variant(tmp_path, tiny_dir, keep=("tokenizer.model",), config_edit=strip)
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 1]}))
    config = {"bos_token_id": 1, "pad_token_id": 0}
    kv = kv_values(gguf_tokenizer_metadata(directory, config, target="llama.cpp"))
    kinds = ("bos", "eos", "unknown", "padding")
    assert [kv.get(f"tokenizer.ggml.{k}_token_id") for k in kinds] == [1, 2, 0, 0]
    with pytest.raises(FormatError, match=r"bos token id 512 is outside the vocabulary of 512"):
        gguf_tokenizer_metadata(directory, {"bos_token_id": 512}, target="llama.cpp")


def test_add_bos_and_templates_follow_tokenizer_config(tmp_path, tiny_dir, tiny_config):
    templates = [{"name": "default", "template": "A"}, {"name": "tool use", "template": "B"}]
    directory = tiny_variant(tmp_path, tiny_dir, config_edit=lambda c: {**c, "add_bos_token": False,
                                                                         "add_eos_token": True,
                                                                         "chat_template": templates})
    kv = kv_values(gguf_tokenizer_metadata(directory, tiny_config, target="llama.cpp"))
    assert (kv["tokenizer.ggml.add_bos_token"], kv["tokenizer.ggml.add_eos_token"]) == (False, True)
    assert kv["tokenizer.chat_template"] == "A" and kv["tokenizer.chat_template.tool_use"] == "B"
    assert kv["tokenizer.chat_templates"] == ["tool_use"]
    assert kv_values(gguf_tokenizer_metadata(directory, tiny_config, target="bitnet.cpp"))[
        "tokenizer.chat_template"] == BITNET_CHAT_TEMPLATE


def test_vocab_padded_to_config_size(tiny_dir, tiny_config):
    kv = kv_values(gguf_tokenizer_metadata(tiny_dir, {**tiny_config, "vocab_size": 515}, target="llama.cpp"))
    assert kv["tokenizer.ggml.tokens"][-3:] == ["[PAD512]", "[PAD513]", "[PAD514]"]
    assert kv["tokenizer.ggml.token_type"][-3:] == [5, 5, 5] and kv["tokenizer.ggml.scores"][-1] == -1000.0
    with pytest.raises(FormatError, match=r"tokenizer\.model: has token id 511 but config.json vocab_size is 500$"):
        gguf_tokenizer_metadata(tiny_dir, {**tiny_config, "vocab_size": 500}, target="llama.cpp")


# --- reverse: GGUF metadata -> tokenizer files ----------------------------------------


def test_llama3_rebuilt_tokenizer_encodes_like_the_original(tmp_path, llama3_entries, llama3_tokenizer):
    files = tokenizer_files_from_gguf(kv_values(llama3_entries["llama.cpp"]))
    rebuilt = Tokenizer.from_str(files["tokenizer.json"])
    assert encodings(rebuilt, SAMPLES, True) == encodings(llama3_tokenizer, SAMPLES, True)
    assert encodings(rebuilt, SAMPLES, False) == encodings(llama3_tokenizer, SAMPLES, False)
    ids = llama3_tokenizer.encode(SAMPLES[8]).ids
    assert rebuilt.decode(ids) == llama3_tokenizer.decode(ids)
    config = json.loads(files["tokenizer_config.json"])
    assert (config["bos_token"], config["eos_token"], config["add_bos_token"]) == \
        ("<|begin_of_text|>", "<|end_of_text|>", True)
    # and the rebuilt files convert back to the same KVs
    directory = write_files(tmp_path, files)
    again = gguf_tokenizer_metadata(directory, LLAMA3_CONFIG, target="llama.cpp")
    assert again == llama3_entries["llama.cpp"]


def test_llama3_rebuilt_from_peer_kv_without_pre(llama3_peer_kv, llama3_tokenizer):
    kv = {k: (f["value"]["value"] if f["type"] == "array" else f["value"]) for k, f in llama3_peer_kv.items()}
    assert "tokenizer.ggml.pre" not in kv
    files = tokenizer_files_from_gguf(kv)
    rebuilt = Tokenizer.from_str(files["tokenizer.json"])
    assert encodings(rebuilt, SAMPLES, True) == encodings(llama3_tokenizer, SAMPLES, True)
    assert json.loads(files["tokenizer_config.json"])["chat_template"] == BITNET_CHAT_TEMPLATE


@pytest.fixture(scope="session")
def tiny_rebuilt(tiny_a) -> dict[str, str]:
    with GGUFFile(tiny_a / "tiny-a-i2_s.gguf") as peer:
        return tokenizer_files_from_gguf({key: peer.get(key) for key in peer.kv})


def test_tiny_a_rebuilt_from_peer_gguf(tmp_path, tiny_rebuilt, tiny_tokenizer, tiny_dir, tiny_config):
    rebuilt = Tokenizer.from_str(tiny_rebuilt["tokenizer.json"])
    assert encodings(rebuilt, SAMPLES, False) == encodings(tiny_tokenizer, SAMPLES, False)
    assert rebuilt.encode("hi").ids == [1] + tiny_tokenizer.encode("hi").ids  # the GGUF says add_bos_token
    ids = tiny_tokenizer.encode(SAMPLES[8]).ids
    assert rebuilt.decode(ids) == tiny_tokenizer.decode(ids)
    original = json.loads((tiny_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert json.loads(tiny_rebuilt["tokenizer.json"])["model"]["merges"] == original["model"]["merges"]
    directory = write_files(tmp_path, tiny_rebuilt)
    assert gguf_tokenizer_metadata(directory, tiny_config, target="bitnet.cpp") == \
        gguf_tokenizer_metadata(tiny_dir, tiny_config, target="bitnet.cpp")


def test_tiny_a_rebuilt_loads_in_transformers(tmp_path, tiny_rebuilt, tiny_dir):
    from transformers import AutoTokenizer

    rebuilt = AutoTokenizer.from_pretrained(write_files(tmp_path, tiny_rebuilt))
    original = AutoTokenizer.from_pretrained(tiny_dir)
    for text in SAMPLES:
        ids = [t(text, add_special_tokens=False)["input_ids"] for t in (rebuilt, original)]
        assert ids[0] == ids[1], text
    assert rebuilt("hi")["input_ids"][0] == 1 and rebuilt.eos_token == "</s>"


@settings(deadline=None, max_examples=40)
@given(text=st.text(st.characters(codec="utf-8"), max_size=40))
def test_tiny_a_rebuilt_encodes_any_text_alike(tiny_rebuilt, tiny_tokenizer, text):
    rebuilt = Tokenizer.from_str(tiny_rebuilt["tokenizer.json"])
    assert encodings(rebuilt, [text], False) == encodings(tiny_tokenizer, [text], False)


@pytest.mark.parametrize("kv, message", [
    ({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]}, "is neither gpt2 nor llama"),
    ({"tokenizer.ggml.model": "llama"}, "tokenizer.ggml.tokens is missing"),
    ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.token_type": [1]},
     "has 1 entries for 2 tokens"),
    ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.bos_token_id": 1},
     "is not a token id below 1"),
    ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2", "tokenizer.ggml.tokens": ["a"],
      "tokenizer.ggml.merges": ["a b"]}, "'qwen2' has no tokenizer.json equivalent"),
    ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.merges": ["a b c"]},
     r"merges\[0\] = 'a b c' is not two parts"),
    ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": [b"\xff"]}, "not UTF-8"),
])
def test_reverse_rejects_bad_metadata(kv, message):
    with pytest.raises(FormatError, match=message.replace("(", r"\(")):
        tokenizer_files_from_gguf(kv)


# --- tokenizer.model protobuf ---------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = _varint(number << 3 | wire)
    return key + (_varint(len(payload)) + payload if wire == 2 else payload)


def _piece(text: str, score: float | None, kind: int | None, junk: bool) -> bytes:
    body = _field(1, 2, text.encode("utf-8"))
    body += b"" if score is None else _field(2, 5, struct.pack("<f", score))
    body += b"" if kind is None else _field(3, 0, _varint(kind))
    return body + (_field(9, 0, _varint(300)) + _field(10, 1, bytes(8)) if junk else b"")


@settings(deadline=None, max_examples=60)
@given(pieces=st.lists(st.tuples(st.text(min_size=1, max_size=8),
                                 st.none() | st.floats(width=32, allow_nan=False),
                                 st.none() | st.integers(1, 6), st.booleans()), min_size=1, max_size=20))
def test_protobuf_pieces_round_trip(pieces):
    data = _field(2, 2, b"\x08\x02") + b"".join(_field(1, 2, _piece(*p)) for p in pieces) + _field(3, 2, b"")
    parsed = parse_sentencepiece_model(data)
    assert [t.text for t in parsed] == [p[0] for p in pieces]
    assert f32_bytes([t.score for t in parsed]) == f32_bytes([0.0 if p[1] is None else p[1] for p in pieces])
    assert [t.type for t in parsed] == [1 if p[2] is None else p[2] for p in pieces]


@settings(deadline=None, max_examples=200)
@given(data=st.binary(max_size=64))
def test_protobuf_reader_fails_only_with_format_errors(data):
    try:
        parse_sentencepiece_model(b"\x0a" + data)
    except FormatError as err:
        assert "\n" not in str(err)


@pytest.mark.parametrize("mangle, error, message", [
    (lambda d: d[: len(d) // 2], TruncatedFile, r"field 1 at byte \d+ needs \d+ bytes, \d+ remain"),
    (lambda d: d[:-1], TruncatedFile, "remain"),
    (lambda d: b"", FormatError, r"holds no SentencePiece pieces \(0 bytes\)"),
    (lambda d: b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n", LfsPointer, "git-lfs"),
    (lambda d: b"\x0b" + d, FormatError, "wire type 3"),
    (lambda d: b"\x08\x01" + d, FormatError, "ModelProto field 1 at byte 0 has wire type 0"),
    (lambda d: b"\xff" * 11, FormatError, "longer than 10 bytes"),
    (lambda d: _field(1, 2, _piece("x", 0.0, 9, False)) + d, FormatError, "piece 0 'x' has type 9"),
    (lambda d: _field(1, 2, _field(1, 2, b"\xc3(")) + d, FormatError, "piece 0 .* is not UTF-8"),
    (lambda d: _field(1, 2, _field(2, 0, b"\x01")) + d, FormatError, "field 2 has wire type 0, expected 5"),
    (lambda d: _field(1, 2, _field(3, 0, b"\x06")) + d, FormatError, "piece 0 .*has no text"),
])
def test_corrupt_tokenizer_model(tmp_path, tiny_dir, mangle, error, message):
    directory = tiny_variant(tmp_path, tiny_dir, keep=())
    (directory / "tokenizer.model").write_bytes(mangle((tiny_dir / "tokenizer.model").read_bytes()))
    with pytest.raises(error, match=message) as caught:
        gguf_tokenizer_metadata(directory, {}, target="llama.cpp")
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(directory / "tokenizer.model"))


# --- corrupt or missing JSON ---------------------------------------------------------


def _with_model(data: dict, **changes) -> dict:
    return {**data, "model": {**data["model"], **changes}}


@pytest.mark.parametrize("mangle, error, message", [
    (lambda t, j: t[:5000].encode(), FormatError, r"is not valid JSON: .* at line \d+ column \d+"),
    (lambda t, j: "version https://git-lfs.github.com/spec/v1\n", LfsPointer, "git-lfs pointer"),
    (lambda t, j: b"\xff\xfe\xfa", FormatError, "is not valid JSON"),
    (lambda t, j: "[1, 2]", FormatError, "holds a JSON list, expected an object"),
    (lambda t, j: json.dumps({"model": {"type": "BPE"}}), FormatError, "has no model.vocab object"),
    (lambda t, j: json.dumps(_with_model(j, vocab={**j["model"]["vocab"], "zz": -3})), FormatError,
     r"model.vocab\['zz'\] = -3 is not a token id"),
    (lambda t, j: json.dumps(_with_model(j, vocab={**j["model"]["vocab"], "zz": 5})), FormatError,
     "gives 1 ids to two tokens"),
    (lambda t, j: json.dumps(_with_model(j, merges=j["model"]["merges"] + ["a b c"])), FormatError,
     r"merges\[\d+\] = 'a b c' is neither"),
    (lambda t, j: json.dumps(_with_model(j, merges=[" ".join(m) for m in j["model"]["merges"][:3]] + [["a", "b"]])),
     FormatError, r"merges\[0\] = .* is neither"),  # the two spellings mixed
    (lambda t, j: json.dumps(_with_model(j, type="WordPiece")), FormatError, "'WordPiece' is neither"),
    (lambda t, j: json.dumps({**j, "added_tokens": [{"id": 5, "content": "<|x|>"}]}), FormatError,
     "id 5 is .* in model.vocab but added token '<|x|>'"),
    (lambda t, j: json.dumps({**j, "added_tokens": [{"id": "5", "content": "x"}]}), FormatError,
     "added_tokens must be a list"),
])
def test_corrupt_tokenizer_json(tmp_path, gpt2_style_json, mangle, error, message):
    data = mangle(gpt2_style_json, json.loads(gpt2_style_json))
    (tmp_path / "tokenizer.json").write_bytes(data if isinstance(data, bytes) else data.encode())
    with pytest.raises(error, match=message.replace("|", r"\|")) as caught:
        gguf_tokenizer_metadata(tmp_path, {}, target="llama.cpp")
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(tmp_path / "tokenizer.json"))


def test_corrupt_tokenizer_config(tmp_path, tiny_dir):
    directory = tiny_variant(tmp_path, tiny_dir)
    (directory / "tokenizer_config.json").write_text('{"bos_token": "<s>",')
    with pytest.raises(FormatError, match=r"tokenizer_config\.json: is not valid JSON"):
        gguf_tokenizer_metadata(directory, {}, target="llama.cpp")


def test_missing_tokenizer_and_bad_target(tmp_path, tiny_dir):
    with pytest.raises(MissingFile, match=r"tokenizer\.json: not found, and there is no tokenizer\.model"):
        gguf_tokenizer_metadata(tmp_path, {}, target="llama.cpp")
    with pytest.raises(UsageError, match="unknown tokenizer target 'ollama'"):
        gguf_tokenizer_metadata(tiny_dir, {}, target="ollama")


# --- the family vectors: bitnet.cpp's convert-hf-to-gguf-bitnet.py and mainline ----------------


def _array_digest(values, subtype: GGUFValueType) -> str:
    """As fixtures/extract_tokenizer_kv.py digests the peers' arrays."""
    if subtype == GGUFValueType.FLOAT32:
        return hashlib.sha256(f32_bytes(values)).hexdigest()
    return hashlib.sha256(json.dumps(list(values), ensure_ascii=False).encode()).hexdigest()


FAMILY_KV = json.loads((Path(__file__).parents[1] / "fixtures" / "fam-tokenizer-kv.json").read_text())["families"]


@pytest.mark.parametrize("family, target", [(f, t) for f in FAMILY_KV for t in ("bitnet.cpp", "llama.cpp")])
def test_family_vectors_equal_peer_kvs(tiny_dir, tiny_config, family, target):
    """Each family checkpoint carries tiny-a's tokenizer files; bitnet.cpp converts Llama-format
    and 1bitLLM families with convert-hf-to-gguf-bitnet.py, whose vocabulary layout is mainline's.
    Our extra key: add_bos_token. Not written: bitnet.cpp's LlamaModel copies tokenizer_config's
    add_prefix_space (null here) as add_space_prefix false, which switches off SentencePiece's
    leading space in the fork while transformers keeps it."""
    peer = FAMILY_KV[family][target]
    config = {**tiny_config, "architectures": FAMILY_KV[family]["architectures"]}
    ours = entry_map(gguf_tokenizer_metadata(tiny_dir, config, target=target))
    skipped = {"tokenizer.ggml.add_space_prefix"} if "LlamaForCausalLM" in config["architectures"] \
        and target == "bitnet.cpp" else set()
    assert set(peer) - set(ours) == skipped
    assert [k for k in ours if k in peer] == [k for k in peer if k not in skipped]  # the peer's order
    assert set(ours) - set(peer) == {"tokenizer.ggml.add_bos_token"}
    for key in set(peer) - skipped:
        value, vtype, sub = ours[key]
        if peer[key]["type"] == "array":
            assert (vtype, sub.name.lower(), len(value)) == (GGUFValueType.ARRAY, peer[key]["array_of"],
                                                              peer[key]["count"]), key
            assert _array_digest(value, sub) == peer[key]["sha256"], key
        else:
            assert (vtype.name.lower(), value) == (peer[key]["type"], peer[key]["value"]), key
