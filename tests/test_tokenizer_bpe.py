"""Byte-level BPE tokenizers of the real BitNet families, both ways: Llama 3 (`llama-bpe`, the
shared Llama 3 tokenizer) and Falcon3 / Falcon-E (small tokenizers trained here with their
pre-tokenizer), with the `tokenizer.ggml.pre` each runtime accepts."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import regex
from click.testing import CliRunner
from gguf import GGUFValueType
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile, KVField
from bitnet_pack.errors import FormatError
from bitnet_pack.families.gguf_meta import make_target
from bitnet_pack.families.tokenizers import metadata as tokenizer_module
from bitnet_pack.families.tokenizers.metadata import gguf_tokenizer_metadata
from bitnet_pack.families.tokenizers.pre import CHECK_TEXT, HASHES, check_hash, runtime_name, split_rules
from bitnet_pack.families.tokenizers.reverse import tokenizer_files_from_gguf
from bitnet_pack.pipeline.sinks.gguf_tokenizer import tokenizer_kvs

FALCON_E_HASH = next(h for h, identity in HASHES.items() if identity == "falcon-e")
TEXTS = [
    "Hello, world!! 12345 $x+=y <a> don't", "3.14159 1,000,000 2025-06-03 0x1F 1314151",
    "  two spaces,   three, \t tab\n\nnewlines\r\nCRLF   ", "émoji 🤖👍🏽 中文 русский ～…", "''''```\"\"....!!??",
    "def f(x):\n    return x**2  # comment", "", CHECK_TEXT,
]
# bitnet.cpp's fork (40ed0f2, src/llama-vocab.cpp) splits falcon3 / falcon_e text with these
# regexes in turn; every fragment is split into matches and the gaps between them
FORK_FALCON_REGEXES = [r"[\p{P}\$\+<=>\^~\|`]+",
                       r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)", r"[0-9]"]


def kv_values(entries) -> dict:
    return {key: value for key, value, _, _ in entries}


def falcon_style_tokenizer(vocab_size: int = 480) -> Tokenizer:
    """A small BPE with the Falcon3 / Falcon-E pre-tokenizer, trained on a few sentences."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Punctuation("contiguous"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        pre_tokenizers.Digits(individual_digits=True)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=[">>TITLE<<", ">>ABSTRACT<<", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 30 + ["the license of the work, and the other terms"] * 40, trainer)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


@pytest.fixture(scope="module")
def falcon_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("falcon-tok")
    falcon_style_tokenizer().save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|endoftext|>", "chat_template": "{{ messages }}", "tokenizer_class": "PreTrainedTokenizerFast"}))
    return directory


@pytest.fixture(scope="module")
def falcon_tokenizer(falcon_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(falcon_dir / "tokenizer.json"))


def encodings(tokenizer: Tokenizer, texts) -> list[list[int]]:
    return [tokenizer.encode(t).ids for t in texts]


# --- how the converters identify a pre-tokenizer -----------------------------------------


def test_check_hash_of_the_llama3_tokenizer_is_the_one_converters_map_to_llama_bpe(shared_vectors: Path):
    digest = check_hash(shared_vectors / "llama3-tokenizer" / "tokenizer.json")
    assert HASHES[digest] == "llama3"
    assert digest == "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5"


def test_falcon_rules_recognised_and_hash_unknown(falcon_dir: Path):
    data = json.loads((falcon_dir / "tokenizer.json").read_text())
    assert split_rules(data["pre_tokenizer"]) == "falcon3"
    assert check_hash(falcon_dir / "tokenizer.json") not in HASHES  # a retrained vocabulary


@pytest.mark.parametrize("change", [
    lambda steps: steps[:2],  # no Digits step
    lambda steps: [steps[0], steps[1], {"type": "Digits", "individual_digits": False}],  # Falcon 1's
    lambda steps: [{"type": "Punctuation", "behavior": "Isolated"}] + steps[1:],
    lambda steps: [steps[1], steps[0], steps[2]],  # order matters
])
def test_other_rules_are_not_falcon3(falcon_dir: Path, change):
    steps = json.loads((falcon_dir / "tokenizer.json").read_text())["pre_tokenizer"]["pretokenizers"]
    assert split_rules({"type": "Sequence", "pretokenizers": change(steps)}) is None


def fork_fragments(text: str) -> list[tuple[int, int]]:
    """llama.cpp's unicode_regex_split for a list of regexes: (start, end) of each fragment."""
    fragments = [(0, len(text))] if text else []
    for pattern in FORK_FALCON_REGEXES:
        split = []
        for start, end in fragments:
            at = start
            for match in regex.finditer(pattern, text[start:end]):
                if match.start() + start > at:
                    split.append((at, match.start() + start))
                split.append((match.start() + start, match.end() + start))
                at = match.end() + start
            if at < end:
                split.append((at, end))
        fragments = split
    return fragments


# bytes >= 0x80 that ByteLevel shows as numeric characters (0xB2 '²', 0xB3, 0xB9, 0xBC-0xBE)
NUMERIC_LOOKING_BYTES = {b for b in range(0x80, 0x100) if chr(b).isnumeric()}


def without_numeric_looking_bytes(text: str) -> str:
    return "".join(c for c in text if not NUMERIC_LOOKING_BYTES & set(c.encode()))


@pytest.mark.parametrize("text", TEXTS)
def test_falcon_rules_split_text_as_the_fork_does(falcon_tokenizer: Tokenizer, text: str):
    """The tokenizer.json rules we name falcon3/falcon_e split text exactly where the fork's
    loader splits it (so the name and the rebuilt tokenizer.json agree with the runtime), for
    text without the characters of the next test."""
    text = without_numeric_looking_bytes(text)
    spans = [span for _, span in falcon_tokenizer.pre_tokenizer.pre_tokenize_str(text)]
    assert spans == fork_fragments(text)


def test_hf_digits_step_also_cuts_inside_characters(falcon_tokenizer: Tokenizer):
    """A quirk of the rules, not of the name: HF's Digits runs on the byte-level text, where
    the byte 0xBD reads as U+00BD (a numeric character), so it cuts skin-tone emoji (and 想,
    E6 83 B3) apart; the fork's [0-9] on the raw text does not. Token ids can differ there
    between transformers and bitnet.cpp."""
    pieces = falcon_tokenizer.pre_tokenizer.pre_tokenize_str(" \U0001f3fd")  # bytes F0 9F 8F BD
    assert [piece for piece, _ in pieces] == ["\u0120\u00f0\u0141\u0131", "\u00bd"]
    assert fork_fragments(" \U0001f3fd") == [(0, 2)]
    assert NUMERIC_LOOKING_BYTES == {0xB2, 0xB3, 0xB9, 0xBC, 0xBD, 0xBE}


# --- forward: the name each runtime accepts ------------------------------------------------


def test_falcon3_style_tokenizer_named_falcon3_for_both(falcon_dir: Path):
    for target in ("bitnet.cpp", "llama.cpp"):
        kv = kv_values(gguf_tokenizer_metadata(falcon_dir, {"architectures": ["LlamaForCausalLM"]}, target=target))
        assert (kv["tokenizer.ggml.model"], kv["tokenizer.ggml.pre"]) == ("gpt2", "falcon3")
        assert kv["tokenizer.ggml.add_bos_token"] is False  # mainline would add BOS for falcon3 otherwise
        assert kv["tokenizer.chat_template"] == "{{ messages }}"  # convert-hf keeps the checkpoint's
        assert "tokenizer.ggml.scores" not in kv
        assert kv["tokenizer.ggml.eos_token_id"] == 2 and kv["tokenizer.ggml.token_type"][:3] == [3, 3, 3]


def test_falcon_e_hash_gives_each_runtime_its_name(falcon_dir: Path, monkeypatch):
    """Falcon-E's tokenizer has Falcon3's rules; only the converters' hash tells them apart
    (here the hash of Falcon-E's released tokenizer stands in for its vocabulary)."""
    monkeypatch.setattr(tokenizer_module, "check_hash", lambda path: FALCON_E_HASH)
    names = {target: kv_values(gguf_tokenizer_metadata(falcon_dir, {}, target=target))["tokenizer.ggml.pre"]
             for target in ("bitnet.cpp", "llama.cpp")}
    assert names == {"bitnet.cpp": "falcon_e", "llama.cpp": "falcon-h1"}


@pytest.mark.parametrize("given_name", ["falcon_e", "falcon-h1"])
def test_pre_given_in_either_spelling_is_written_as_the_target_spells_it(falcon_dir: Path, given_name: str):
    for target, expected in (("bitnet.cpp", "falcon_e"), ("llama.cpp", "falcon-h1")):
        kv = kv_values(gguf_tokenizer_metadata(falcon_dir, {}, target=target, pre=given_name))
        assert kv["tokenizer.ggml.pre"] == expected
    assert runtime_name("my-own", "llama.cpp") == "my-own"


def test_llama3_tokenizer_named_llama_bpe_for_both(shared_vectors: Path):
    """Llama3-8B-1.58 (LlamaForCausalLM): bitnet.cpp's convert-hf writes mainline's layout, and
    both runtimes spell the name alike, so the two targets get the same entries."""
    config = {"vocab_size": 128256, "architectures": ["LlamaForCausalLM"]}
    entries = {target: gguf_tokenizer_metadata(shared_vectors / "llama3-tokenizer", config, target=target)
               for target in ("bitnet.cpp", "llama.cpp")}
    assert entries["bitnet.cpp"] == entries["llama.cpp"]
    kv = kv_values(entries["llama.cpp"])
    assert kv["tokenizer.ggml.pre"] == "llama-bpe" and kv["tokenizer.ggml.add_bos_token"] is True
    assert "tokenizer.ggml.scores" not in kv and "tokenizer.chat_template" not in kv


def test_unloadable_tokenizer_json_is_a_format_error(tmp_path: Path, falcon_dir: Path):
    data = json.loads((falcon_dir / "tokenizer.json").read_text())
    merges = data["model"]["merges"]
    merges.append("zzz yyy" if isinstance(merges[0], str) else ["zzz", "yyy"])  # tokens not in the vocab
    data["pre_tokenizer"]["pretokenizers"] = data["pre_tokenizer"]["pretokenizers"][:2]  # unknown rules
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(FormatError, match=r"tokenizer\.json: the tokenizers library cannot load it") as caught:
        gguf_tokenizer_metadata(tmp_path, {}, target="llama.cpp")
    assert "\n" not in str(caught.value)


# --- reverse: tokenizer.json from the GGUF metadata ----------------------------------------


@pytest.mark.parametrize("pre", ["falcon3", "falcon_e", "falcon-h1"])
def test_falcon_tokenizer_rebuilt_from_gguf_encodes_alike(falcon_dir, falcon_tokenizer, pre):
    kv = kv_values(gguf_tokenizer_metadata(falcon_dir, {}, target="llama.cpp"))
    files = tokenizer_files_from_gguf({**kv, "tokenizer.ggml.pre": pre})
    rebuilt = Tokenizer.from_str(files["tokenizer.json"])
    assert encodings(rebuilt, TEXTS) == encodings(falcon_tokenizer, TEXTS)
    assert split_rules(json.loads(files["tokenizer.json"])["pre_tokenizer"]) == "falcon3"
    ids = falcon_tokenizer.encode(TEXTS[3]).ids
    assert rebuilt.decode(ids) == falcon_tokenizer.decode(ids)
    assert json.loads(files["tokenizer_config.json"])["eos_token"] == "<|endoftext|>"


@settings(deadline=None, max_examples=40)
@given(text=st.text(st.characters(codec="utf-8"), max_size=40))
def test_falcon_rebuilt_encodes_any_text_alike(falcon_dir, falcon_tokenizer, text):
    kv = kv_values(gguf_tokenizer_metadata(falcon_dir, {}, target="bitnet.cpp", pre="falcon_e"))
    rebuilt = Tokenizer.from_str(tokenizer_files_from_gguf(kv)["tokenizer.json"])
    assert rebuilt.encode(text).ids == falcon_tokenizer.encode(text).ids


def test_rebuilt_files_convert_back_to_the_same_kvs(tmp_path: Path, falcon_dir: Path):
    for target in ("bitnet.cpp", "llama.cpp"):
        entries = gguf_tokenizer_metadata(falcon_dir, {}, target=target)
        files = tokenizer_files_from_gguf(kv_values(entries))
        directory = tmp_path / target
        directory.mkdir()
        for name, text in files.items():
            (directory / name).write_text(text, encoding="utf-8")
        assert gguf_tokenizer_metadata(directory, {}, target=target) == entries


# --- through the converter: GGUF to GGUF renames, checkpoint round trip ----------------------


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture()
def falcon_e_model(tiny_a: Path, falcon_dir: Path, tmp_path: Path, monkeypatch) -> Path:
    """tiny-a's packed model with the Falcon-style tokenizer, identified as Falcon-E's."""
    monkeypatch.setattr(tokenizer_module, "check_hash", lambda path: FALCON_E_HASH)
    model = tmp_path / "model"
    shutil.copytree(tiny_a / "tiny-a-packed", model)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(falcon_dir / name, model / name)
    (model / "tokenizer.model").unlink(missing_ok=True)
    return model


def test_gguf_to_gguf_renames_falcon_e_for_the_target(falcon_e_model: Path, falcon_tokenizer, tmp_path: Path):
    code, _, err = run("convert", falcon_e_model, tmp_path / "a.gguf", "--outtype", "i2_s")
    assert code == 0, err
    with GGUFFile(tmp_path / "a.gguf") as file:
        assert file.get("tokenizer.ggml.pre") == "falcon_e"
    code, _, err = run("convert", tmp_path / "a.gguf", tmp_path / "b.gguf", "--outtype", "tq2_0",
                       "--target", "llama.cpp")
    assert code == 0, err
    with GGUFFile(tmp_path / "a.gguf") as a, GGUFFile(tmp_path / "b.gguf") as b:
        assert b.get("tokenizer.ggml.pre") == "falcon-h1"
        for key in a.kv:
            if key.startswith("tokenizer.") and key != "tokenizer.ggml.pre":
                same = a.get(key) == b.get(key)
                assert (np.all(same) if isinstance(same, np.ndarray) else same), key
    code, _, err = run("convert", tmp_path / "b.gguf", tmp_path / "c.gguf", "--outtype", "i2_s")
    assert code == 0, err
    with GGUFFile(tmp_path / "c.gguf") as file:
        assert file.get("tokenizer.ggml.pre") == "falcon_e"
    code, _, err = run("convert", tmp_path / "b.gguf", tmp_path / "packed", "--outtype", "hf-packed")
    assert code == 0, err
    code, out, err = run("generate", tmp_path / "b.gguf", "--prompt", "Hello, world!! 12345", "--tokens", "3")
    assert code == 0 and out.strip(), err + out  # tiny-a's random weights: any text
    rebuilt = Tokenizer.from_file(str(tmp_path / "packed" / "tokenizer.json"))
    assert [rebuilt.encode(t, add_special_tokens=False).ids for t in TEXTS] == encodings(falcon_tokenizer, TEXTS)
    # tiny-a is a 2B4T (BitNetForCausalLM): bitnet.cpp's convert-ms always writes add_bos_token true
    config = json.loads((tmp_path / "packed" / "tokenizer_config.json").read_text())
    with GGUFFile(tmp_path / "b.gguf") as file:
        assert config["add_bos_token"] is file.get("tokenizer.ggml.add_bos_token") is True
        assert rebuilt.encode("hi").ids[0] == file.get("tokenizer.ggml.bos_token_id")


def test_carried_gpt2_vocabulary_without_pre_gets_llama_bpe(shared_vectors: Path):
    """bitnet.cpp's 2B4T converter writes no tokenizer.ggml.pre; GGUF to GGUF adds the name
    the reverse assumes, right after tokenizer.ggml.model, for either target."""
    peer = json.loads((shared_vectors / "llama3-tokenizer.gguf-kv.json").read_text())["kv"]
    fields = {k: KVField(f["value"], GGUFValueType[f["type"].upper()]) for k, f in peer.items()
              if k.startswith("tokenizer.") and f["type"] != "array"}
    assert "tokenizer.ggml.pre" not in fields
    for target in ("bitnet.cpp", "llama.cpp"):
        kvs = tokenizer_kvs(SimpleNamespace(tokenizer_fields=fields), make_target(target))
        keys = [key for key, _ in kvs]
        assert keys[keys.index("tokenizer.ggml.model") + 1] == "tokenizer.ggml.pre"
        assert dict(kvs)["tokenizer.ggml.pre"].value == "llama-bpe"
        assert [k for k in keys if k != "tokenizer.ggml.pre"] == list(fields)
    spm = {"tokenizer.ggml.model": KVField("llama", GGUFValueType.STRING)}
    assert [k for k, _ in tokenizer_kvs(SimpleNamespace(tokenizer_fields=spm), make_target("llama.cpp"))] == \
        ["tokenizer.ggml.model"]


def test_the_hash_decides_over_the_split_rules(falcon_dir: Path, shared_vectors: Path, monkeypatch):
    """A released tokenizer is named as the converters name it whatever its rules look like;
    a file the tokenizers library cannot load is still named by its rules."""
    monkeypatch.setattr(tokenizer_module, "check_hash", lambda path: FALCON_E_HASH)
    kv = kv_values(gguf_tokenizer_metadata(shared_vectors / "llama3-tokenizer", {}, target="llama.cpp"))
    assert kv["tokenizer.ggml.pre"] == "falcon-h1"

    def unloadable(path):
        raise FormatError("the tokenizers library cannot load it", path=path)

    monkeypatch.setattr(tokenizer_module, "check_hash", unloadable)
    assert kv_values(gguf_tokenizer_metadata(falcon_dir, {}, target="bitnet.cpp"))["tokenizer.ggml.pre"] == "falcon3"


def test_rebuilt_falcon_tokenizer_loads_in_transformers(tmp_path: Path, falcon_dir: Path):
    from transformers import AutoTokenizer

    kv = kv_values(gguf_tokenizer_metadata(falcon_dir, {}, target="llama.cpp"))
    for name, text in tokenizer_files_from_gguf(kv).items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    rebuilt, original = AutoTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(falcon_dir)
    for text in TEXTS:
        assert rebuilt(text)["input_ids"] == original(text)["input_ids"], text
    assert rebuilt.eos_token == "<|endoftext|>" and rebuilt.chat_template == "{{ messages }}"
