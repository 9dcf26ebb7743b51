"""The layout registry: a layout defined in this file alone (no project file touched) is
written by `convert`, read by `inspect` and run by `verify` through the generic kernel walk;
a name no layout answers to is refused everywhere, by name; a name is registered once; and
other packages register layouts through the `bitnet_pack.layouts` entry-point group."""
from __future__ import annotations

import importlib.metadata
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings

import bitnet_pack
from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.engine import kernel
from bitnet_pack.errors import DuplicateLayout, NotTernary, UnknownLayout, UnknownTensorType, UsageError
from bitnet_pack.formats import layouts as registry
from bitnet_pack.formats.ggml_types import TypeTable
from bitnet_pack.formats.kernel_formats import walk_of
from bitnet_pack.formats.layouts import Layout, LayoutSpec, get_layout, layout_names
from bitnet_pack.formats.ternary import TernaryWeight
from bitnet_pack.pipeline.naming import default_name, strip_type_suffix
from bitnet_pack.pipeline.sinks.factory import outtype_spellings
from bitnet_pack.pipeline.sinks.gguf import GGUFSink, default_target
from bitnet_pack.proof.testing import assert_layout_round_trips, layout_weights

TOY_TYPE_ID = 250  # no runtime's id: the GGUF type tables learn it from the entry alone
PROMPT = [1, 15, 27, 300, 42]


def define_toy() -> type[Layout]:
    """`toy2`: rows cut into 16-element blocks of 4 bytes, element i of a block at bits
    2*(i % 4) of byte i // 4 (code = t + 1, the FIRST element in the LOW bits); after the
    codes, beta as a little-endian f32 (so a tensor is M*K/4 + 4 bytes):

        byte[4b + j]:  bit 7 6      | 5 4        | 3 2        | 1 0
                           e[4j + 3] | e[4j + 2]  | e[4j + 1]  | e[4j]      of block b
    """

    class Toy2(Layout):
        spec = LayoutSpec(name="toy2", block_size=16, type_size=4, tail_bytes=4, scale="tail:f32",
                          source="tests/test_layout_registry.py",
                          aliases=("toy-two",), type_name="TOY2", type_ids={"mainline": TOY_TYPE_ID}, file_type=TOY_TYPE_ID,
                          runtimes=("llama.cpp",), kernel="generic")

        def encode(self, weight: TernaryWeight) -> np.ndarray:
            self.check_shape(weight.shape)
            codes = (weight.codes.astype(np.int16) + 1).astype(np.uint8).reshape(-1, 4)
            body = codes[:, 0] | codes[:, 1] << 2 | codes[:, 2] << 4 | codes[:, 3] << 6
            return np.concatenate([body, np.frombuffer(np.float32(weight.beta).astype("<f4").tobytes(), np.uint8)])

        def decode(self, data: np.ndarray, shape: tuple[int, int], beta: float | None = None) -> TernaryWeight:
            flat = self._check_blob(data, shape)
            fields = (flat[:-4, None] >> np.array([0, 2, 4, 6], np.uint8)) & 3
            if np.any(fields == 3):
                raise NotTernary(f"{int(np.count_nonzero(fields == 3))} toy2 codes are 3")
            codes = (fields.astype(np.int8) - 1).reshape(shape)
            stored = np.frombuffer(flat[-4:].tobytes(), "<f4")[0]
            self.check_given_beta(stored, beta)
            return TernaryWeight(codes, self.read_beta(stored, codes))

    return Toy2


@pytest.fixture
def toy():
    """The toy layout, registered for one test and removed after it (other tests list layouts)."""
    layout = get_layout(define_toy().spec.name)
    yield layout
    registry.unregister("toy2")


def test_the_entry_feeds_every_table(toy):
    assert get_layout("TOY-TWO") is toy and "toy2" in layout_names() and "toy2" in outtype_spellings()
    table = TypeTable.for_target(None)
    assert table.name(TOY_TYPE_ID) == "TOY2" and table.type_id("TOY2") == TOY_TYPE_ID
    assert table.nbytes(TOY_TYPE_ID, (8, 32)) == 8 * 32 // 4 + 4
    assert TypeTable.for_target("2025").name(TOY_TYPE_ID) is None  # listed under mainline only
    assert strip_type_suffix("tiny-model-TOY2") == strip_type_suffix("tiny-model-toy-two") == "tiny-model"
    assert default_name("tiny-model", 2 * 10**6, "toy2") == default_name("tiny-model", 2 * 10**6, "tq2_0").replace("TQ2_0", "TOY2")
    assert default_name("tiny-model", 2 * 10**6, "toy2").endswith("-TOY2.gguf")
    assert default_target("toy2") == "llama.cpp"
    with pytest.raises(UsageError, match="--outtype toy2 runs only in llama.cpp; bitnet.cpp takes i2_s, "):
        GGUFSink(Path("x.gguf"), "toy2", target="bitnet.cpp")


def test_every_c_walk_number_belongs_to_one_walk():
    """The entries' kernel_id are the C's BP_LAYOUT_* numbers, one walk each, none unused."""
    header = (Path(__file__).parents[1] / "kernels" / "bitnet_kernels.h").read_text()
    defined = sorted(int(n) for n in re.findall(r"#define BP_LAYOUT_\w+ (\d+)", header))
    walks = {layout.spec.kernel: layout.spec.kernel_id for layout in registry.layouts()
             if layout.spec.kernel != "generic"}
    assert sorted(walks.values()) == defined and len(set(walks.values())) == len(walks)


@settings(max_examples=25, deadline=None)
@given(weight=layout_weights("i2_s", max_rows=16, max_cols=256))
def test_toy_round_trips_and_generic_walk_multiplies(weight):
    """Codes and beta back from the bytes; the generic walk's products equal i2_s's C walk."""
    define_toy()
    try:
        blob = assert_layout_round_trips("toy2", weight)
        toy_matrix = kernel.PackedMatrix.from_bytes("toy2", blob, weight.shape)
        i2s = kernel.PackedMatrix.from_ternary(weight, "i2_s")
        assert (toy_matrix.walk, toy_matrix.layout, toy_matrix.beta) == ("hf", "toy2", np.float32(weight.beta))
        x = np.random.default_rng(weight.shape[0]).standard_normal((3, weight.shape[1])).astype(np.float32)
        for backend in kernel.available_backends():
            with kernel.use_backend(backend):
                assert np.array_equal(kernel.ternary_linear(toy_matrix, x).view(np.uint32),
                                      kernel.ternary_linear(i2s, x).view(np.uint32)), backend
    finally:
        registry.unregister("toy2")


def test_generic_walk_refuses_bad_bytes_and_a_wrong_beta(toy):
    weight = TernaryWeight(np.ones((2, 16), np.int8), np.float32(0.5))
    blob = toy.encode(weight)
    with pytest.raises(Exception, match="carry beta 0.5"):
        kernel.PackedMatrix("toy2", blob, (2, 16), 0.25)
    bad = blob.copy()
    bad[0] = 0xFF
    with pytest.raises(NotTernary, match="4 toy2 codes are 3"):
        kernel.PackedMatrix.from_bytes("toy2", bad, (2, 16))


def test_convert_inspect_verify_a_toy_layout(toy, tiny_a: Path, tmp_path: Path):
    """The whole path, from the entry alone: convert writes TOY2 tensors (type id 250, the
    entry's file type), inspect reads them back by that id, verify runs them and the
    source with bit-identical logits."""
    out = tmp_path / "tiny-a-toy2.gguf"
    report = bitnet_pack.convert(tiny_a / "tiny-a-packed", out, outtype="toy-two", embedding_type="bf16")
    assert report.outtype == "toy2" and out.is_file()
    seen = bitnet_pack.inspect(out)
    assert seen.layout == "toy2"
    dtypes = {t.dtype for t in seen.tensors if t.layout == "toy2"}
    assert dtypes == {"TOY2"} and sum(t.layout == "toy2" for t in seen.tensors) == 14
    with GGUFFile(out) as file:
        assert file.get("general.file_type") == TOY_TYPE_ID and file.get("general.architecture") == "bitnet"
    verdict = bitnet_pack.verify(tiny_a / "tiny-a-packed", out, ids=PROMPT, tokens=4)
    assert verdict.identical and verdict.ok, verdict.summary()
    i2s = bitnet_pack.convert(tiny_a / "tiny-a-packed", tmp_path / "tiny-a-i2_s.gguf", outtype="i2_s",
                              embedding_type="bf16").output
    texts = [CliRunner().invoke(main, ["generate", str(path), "--prompt", "Hello", "--tokens", "3", "--json"])
             for path in (out, i2s)]  # the same GGUF tokenizer, the same greedy tokens
    assert [t.exit_code for t in texts] == [0, 0] and texts[0].stdout == texts[1].stdout.replace(
        str(i2s), str(out)), (texts[0].stdout, texts[1].stdout)

    registry.unregister("toy2")  # the file now holds a type id nothing knows: refused by number
    with pytest.raises(UnknownTensorType, match=f"type id {TOY_TYPE_ID} is unknown"):
        bitnet_pack.inspect(out)
    define_toy()  # for the fixture's teardown


def test_an_unknown_layout_is_refused_by_name(tiny_a: Path, tmp_path: Path):
    with pytest.raises(UnknownLayout, match=re.escape(f"unknown layout 'toy9'; known: {', '.join(layout_names())}")):
        get_layout("toy9")
    with pytest.raises(UnknownLayout, match="unknown --outtype 'toy9'"):
        bitnet_pack.convert(tiny_a / "tiny-a-packed", tmp_path / "x.gguf", outtype="toy9")
    with pytest.raises(UnknownLayout, match="unknown layout 'toy9'"):
        kernel.PackedMatrix("toy9", np.zeros(36, np.uint8), (4, 32), 1.0)
    with pytest.raises(UnknownLayout, match="no kernel walk 'toy9'; walks: hf, i2_s"):
        walk_of("toy9")
    assert not (tmp_path / "x.gguf").exists()
    assert {"x86", "arm"} <= set(registry.variants())
    with pytest.raises(UnknownLayout, match=re.escape(f"unknown variant 'riscv'; known: {', '.join(registry.variants())}")):
        bitnet_pack.inspect(tiny_a / "tiny-a-i2_s.gguf", i2s_variant="riscv")


def test_a_name_is_registered_once(toy):
    with pytest.raises(DuplicateLayout, match="takes the name 'toy-two' of layout 'toy2'"):
        class Again(Layout):
            spec = LayoutSpec(name="toy3", block_size=16, type_size=4, scale="tail:f32", aliases=("toy_two",),
                              container="safetensors")
    with pytest.raises(DuplicateLayout, match="takes the name 'i2-s'"):
        class Clash(Layout):
            spec = LayoutSpec(name="I2_S", block_size=16, type_size=4, scale="tail:f32", container="safetensors")
    assert "toy3" not in layout_names() and get_layout("i2_s").spec.block_size == 128


def test_an_entry_must_be_complete():
    with pytest.raises(UsageError, match="give type_name and type_ids"):
        LayoutSpec(name="toy4", block_size=16, type_size=4, scale="tail:f32")
    with pytest.raises(UsageError, match="kernel walk 'i2_s' but no kernel_id"):
        LayoutSpec(name="toy4", block_size=16, type_size=4, scale="tail:f32", container="safetensors", kernel="i2_s")
    with pytest.raises(UsageError, match="beta_rounding must be one of"):
        LayoutSpec(name="toy4", block_size=16, type_size=4, scale="tail:f32", container="safetensors",
                   beta_rounding="fp8")


def test_other_packages_register_through_the_entry_point_group(tiny_a: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    """A module named by an entry point in `bitnet_pack.layouts` is imported on the registry's
    first use (not before), and its layouts are there."""
    (tmp_path / "toy_plugin.py").write_text(textwrap.dedent("""
        from bitnet_pack.formats.layouts import Layout, LayoutSpec

        class Plugged(Layout):
            spec = LayoutSpec(name="plugged", block_size=1, type_size=1, scale="tensor:bf16",
                              container="safetensors")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    point = importlib.metadata.EntryPoint(name="plugged", value="toy_plugin", group=registry.ENTRY_POINT_GROUP)
    asked = []

    def entry_points(*, group: str):
        asked.append(group)
        return [point] if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry, "_loaded", False)
    assert "toy_plugin" not in sys.modules and not asked
    try:
        assert get_layout("plugged").spec.container == "safetensors"
        assert asked == [registry.ENTRY_POINT_GROUP]
        with pytest.raises(UsageError, match="--outtype plugged is a directory layout no sink writes yet"):
            bitnet_pack.convert(tiny_a / "tiny-a-packed", tmp_path / "out", outtype="plugged")
    finally:
        registry.unregister("plugged")
        sys.modules.pop("toy_plugin", None)


def test_a_layout_brings_its_own_walk():
    """A layout with a C tile declares its walk name and C number in the entry and its Python
    reading (`kernel_walk`) beside its codec: here I2_S's bytes under another name and type."""
    from bitnet_pack.formats.layouts.i2s import I2S

    class Quarters(I2S):
        spec = LayoutSpec(name="quarters", block_size=128, type_size=32, tail_bytes=32, scale="tail:f32",
                          type_name="QUARTERS",
                          type_ids={"mainline": TOY_TYPE_ID + 1}, runtimes=("llama.cpp",), kernel="quarters",
                          kernel_id=get_layout("i2_s").spec.kernel_id)
        kernel_walk = walk_of("i2_s")

    try:
        weight = TernaryWeight(np.random.default_rng(3).integers(-1, 2, (8, 256)).astype(np.int8), np.float32(0.75))
        matrix = kernel.PackedMatrix.from_ternary(weight, "quarters")
        assert (matrix.walk, matrix.beta) == ("quarters", np.float32(0.75))
        assert np.array_equal(matrix.codes(), weight.codes)
        q = np.random.default_rng(4).integers(-128, 128, (2, 256)).astype(np.int8)
        for backend in kernel.available_backends():
            with kernel.use_backend(backend):
                assert np.array_equal(kernel.ternary_matmul_int(matrix, q), q.astype(np.int32) @ weight.codes.T)
    finally:
        registry.unregister("quarters")
    with pytest.raises(UnknownLayout, match="no kernel walk 'quarters'"):
        walk_of("quarters")


def test_a_rounding_layout_announces_its_rounding(tiny_a: Path, tmp_path: Path):
    """An entry with beta_rounding gets `lossy=` from the writer, and convert says how much
    it rounded: the note text comes from the entry."""
    toy = define_toy()

    class Toy2Bf16(toy):
        spec = LayoutSpec(name="toy2b", block_size=16, type_size=4, tail_bytes=4, scale="tail:f32",
                          type_name="TOY2B", type_ids={"mainline": TOY_TYPE_ID + 2}, file_type=TOY_TYPE_ID + 2,
                          runtimes=("llama.cpp",), beta_rounding="bf16")

        def encode(self, weight: TernaryWeight, *, lossy: bool = False) -> np.ndarray:
            rounded = self.rounded_beta(weight.beta)
            assert lossy or rounded == weight.beta
            return super().encode(TernaryWeight(weight.codes, rounded))

    try:
        report = bitnet_pack.convert(tiny_a / "tiny-a-bf16", tmp_path / "r.gguf", outtype="toy2b")
        notes = [n for n in report.notes if n.startswith("TOY2B stores beta as bf16: rounded ")]
        assert len(notes) == 1 and "bf16 betas are kept" not in notes[0], report.notes
        with GGUFFile(tmp_path / "r.gguf") as file:
            raw = file.tensor_bytes("blk.0.attn_q.weight")
        beta = np.frombuffer(raw[-4:].tobytes(), "<f4")[0]
        assert beta == registry.get_layout("toy2b").rounded_beta(beta) and beta.view(np.uint32) & 0xFFFF == 0
    finally:
        registry.unregister("toy2b")
        registry.unregister("toy2")


def test_a_runtime_of_its_own_speaks_through_its_layouts(tiny_a: Path, tmp_path: Path):
    """Ids under a table no other entry uses make that table (written, recorded, detected from the
    file type alone); the layout's hooks give the sink's and inspect's notes, the arch and the
    refusal, and what its runtime says about other layouts; no project file names it."""
    from bitnet_pack.proof.inspection import describe

    toy = define_toy()

    class ToyRt(toy):
        spec = LayoutSpec(name="toyrt", block_size=16, type_size=4, tail_bytes=4, scale="tail:f32",
                          type_name="TOYRT", type_ids={"toy-runtime": TOY_TYPE_ID + 3}, file_type=TOY_TYPE_ID + 3,
                          runtimes=("bitnet.cpp",))

        def target_refusal(self, target, also=()):
            return None if target == "bitnet.cpp" else f"toy-runtime reads bitnet.cpp's names, not {target}'s"

        def write_notes(self, entries, embedding_type):
            return [f"toyrt: {sum(e.kind == 'linear' for e in entries)} projections, embedding {embedding_type}"]

        def inspect_notes(self):
            return ["toyrt runs only in toy-runtime"]

        def notes_about(self, other):
            return [f"toy-runtime cannot run {other.name}"] if other.name == "tq2_0" else []

    try:
        with pytest.raises(UsageError, match="toy-runtime reads bitnet.cpp's names, not llama.cpp's"):
            GGUFSink(Path("x.gguf"), "toyrt", target="llama.cpp")
        out = tmp_path / "t.gguf"
        report = bitnet_pack.convert(tiny_a / "tiny-a-bf16", out, outtype="toyrt")
        assert any(n.startswith("toyrt: ") and "embedding f16" in n for n in report.notes), report.notes
        with GGUFFile(out) as file:
            assert file.types.flavour == "toy-runtime" and file.get("bitnet_pack.type_flavour") == "toy-runtime"
            assert file.tensor_info("blk.0.attn_q.weight").type_id == TOY_TYPE_ID + 3
        assert TypeTable.for_target("2025").name(TOY_TYPE_ID + 3) is None
        assert "toyrt runs only in toy-runtime" in describe(out).notes
        other = bitnet_pack.convert(tiny_a / "tiny-a-bf16", tmp_path / "q.gguf", outtype="tq2_0")
        assert "toy-runtime cannot run tq2_0" in other.notes
        assert "toy-runtime cannot run tq2_0" in describe(tmp_path / "q.gguf").notes
    finally:
        registry.unregister("toyrt")
        registry.unregister("toy2")


def test_a_directory_layout_names_its_own_sink_and_reader(tiny_a: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    """A directory layout whose entry names `sink=` and `reader=` is written by that sink
    (--outtype) and opened by that reader (when it claims the path), with no table edited:
    here hf-packed bytes in a directory marked BOXED."""
    from bitnet_pack.pipeline.sinks.factory import directory_outtypes, gguf_outtypes
    from bitnet_pack.pipeline.sources import open_checkpoint

    (tmp_path / "toy_boxed.py").write_text(textwrap.dedent("""
        from pathlib import Path

        from bitnet_pack.pipeline.sources.hf import HFCheckpoint
        from bitnet_pack.formats.layouts import LayoutSpec
        from bitnet_pack.formats.layouts.hf import HFPacked
        from bitnet_pack.pipeline.sinks.hf import HFSink

        class Boxed(HFPacked):
            spec = LayoutSpec(name="boxed", block_size=1, type_size=1, scale="tensor:bf16", container="torch",
                              sink="toy_boxed:BoxedSink", reader="toy_boxed:BoxedReader")
            kernel_walk = None

        class BoxedSink(HFSink):
            def __init__(self, path, outtype, **options):
                super().__init__(path, "hf-packed", **options)

            def _write_side_files(self):
                super()._write_side_files()
                (self.staged.temp / "BOXED").write_text("boxed")

        class BoxedReader(HFCheckpoint):
            @staticmethod
            def claims(path):
                return (Path(path) / "BOXED").is_file()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("toy_boxed")
    try:
        assert "boxed" in directory_outtypes() and "boxed" not in gguf_outtypes()
        out = tmp_path / "out"
        bitnet_pack.convert(tiny_a / "tiny-a-packed", out, outtype="boxed")
        assert (out / "BOXED").read_text() == "boxed"
        with open_checkpoint(out) as boxed, open_checkpoint(tiny_a / "tiny-a-packed") as packed:
            assert type(boxed).__name__ == "BoxedReader" and type(packed).__name__ == "HFCheckpoint"
            ours = {e.name: e for e in packed.entries()}
            linear = [e for e in boxed.entries() if e.kind == "linear"]
            assert linear and all(e.load().same_as(ours[e.name].load()) for e in linear)
        with pytest.raises(UsageError, match="--outtype boxed does not go in a GGUF file"):
            bitnet_pack.convert(tiny_a / "tiny-a-packed", tmp_path / "x.gguf", outtype="boxed")
    finally:
        registry.unregister("boxed")
        sys.modules.pop("toy_boxed", None)
    assert "boxed" not in directory_outtypes()


def test_sink_and_reader_belong_to_directory_layouts():
    with pytest.raises(UsageError, match="sink= and reader= are for directory layouts"):
        LayoutSpec(name="toy5", block_size=16, type_size=4, scale="tail:f32", type_name="TOY5",
                   type_ids={"mainline": 251}, sink="toy:Sink")
    with pytest.raises(UsageError, match="sink/reader is 'module:Class', got 'toy.Sink'"):
        LayoutSpec(name="toy5", block_size=16, type_size=4, scale="tail:f32", container="torch", sink="toy.Sink")
    gpu = get_layout("bitnet-gpu")
    assert registry.load_hook(gpu.spec.sink).__module__ == "bitnet_pack.pipeline.sinks.bitnet_gpu"
    assert registry.load_hook(gpu.spec.reader) in registry.readers()
