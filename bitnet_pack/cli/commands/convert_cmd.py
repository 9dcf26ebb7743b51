"""bitnet-pack convert SRC [OUT] --outtype ...: parse, call `bitnet_pack.convert`, print."""
from __future__ import annotations

from pathlib import Path

import click

from ...api import ConvertReport, convert
from ...errors import UsageError
from ...formats.layouts import variants
from ...pipeline.progress import bars, bars_wanted
from ...pipeline.sinks.factory import canonical_outtype, outtype_spellings
from .common import PATH_OR_REPO, emit_json, examples, note
from .schema import convert_json

INI = click.Path(path_type=Path, dir_okay=False)


class Outtype(click.ParamType):
    """An outtype in any spelling the layouts take (TQ2_0, tq2-0, hf), or `auto`."""

    name = "outtype"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from ...errors import UsageError

        if str(value).lower() == "auto":
            return "auto"
        try:
            return canonical_outtype(str(value))
        except UsageError:
            self.fail(f"{value!r} is not one of {', '.join(map(repr, outtype_spellings()))} or 'auto'", param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
        from click.shell_completion import CompletionItem

        return [CompletionItem(n) for n in (*outtype_spellings(), "auto") if n.startswith(incomplete.lower())]


@click.command("convert", epilog=examples(
    "bitnet-pack convert ./master out.gguf --outtype i2_s",
    "bitnet-pack convert ggml-model-i2_s.gguf ./packed --outtype hf-packed --scale-dtype f32",
    "bitnet-pack convert ./packed 'model-{ftype}.gguf' --outtype tq2_0 --dry-run",
    "bitnet-pack convert org/name . --outtype tl2     # default name, in the current directory"))
@click.argument("src", type=PATH_OR_REPO)
@click.argument("out", required=False, type=PATH_OR_REPO)
@click.option("--outfile", default=None, type=PATH_OR_REPO, help="OUT as an option (llama.cpp's spelling).")
@click.option("--outtype", required=True, type=Outtype(),
              help="Layout of the projections in OUT (hf is hf-packed; tq2-0 is tq2_0; auto: i2_s for a GGUF "
                   "OUT, hf-packed for a directory).")
@click.option("--revision", default=None, help="Branch, tag or commit of a hub SRC (default: main).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--dry-run", is_flag=True, help="Print the plan (tensors, layouts, sizes); write nothing.")
@click.option("--push-to-hub", "push_repo", default=None, metavar="REPO",
              help="Upload OUT to this hub repo (created if needed) once complete; HF_TOKEN and the endpoint "
                   "are checked before converting.")
@click.option("--private", is_flag=True, help="[--push-to-hub] Create the repo private (default: public).")
@click.option("--commit-message", default=None, help="[--push-to-hub] The upload's commit message.")
@click.option("--token", default=None, help="[--push-to-hub] Hub token (default: HF_TOKEN, or `hf auth login`'s).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option("--i2s-variant", type=click.Choice(variants()), default=None,
              help="[I2_S GGUF SRC] Read its blocks as x86 (128/32, official files), arm (64/16) or 1x4 "
                   "(four rows per byte).")
@click.option("--src-kernel-config", type=INI, default=None,
              help="[TL1/TL2 GGUF SRC] kernel_config.ini with its tilings (default: its metadata, else "
                   "<stem>.kernel_config.ini beside it).")
@click.option("--target", type=click.Choice(["bitnet.cpp", "llama.cpp"]), default=None,
              help="[GGUF OUT] Runtime: sets the architecture name and keys. Default: the first runtime "
                   "the layout's entry lists (bitnet.cpp for its own types), llama.cpp for floats.")
@click.option("--arch", default=None, help="[GGUF OUT] Architecture name (bitnet.cpp: bitnet-b1.58 or bitnet-25).")
@click.option("--type-ids", type=click.Choice(["2025", "2026"]), default=None,
              help="[GGUF OUT] bitnet.cpp type-id generation: TL2 is 39 up to mid-2025 (default), 42 after.")
@click.option("--embedding-type", type=click.Choice(["f16", "bf16", "f32", "q8_0", "q6_k", "q5_k", "q4_k"],
                                                  case_sensitive=False),
              default=None,
              help="[GGUF OUT] Type of token_embd, and of output for untied models (default: the outtype's for "
                   "f32/f16/bf16, as convert_hf_to_gguf.py; else f16, as llama-quantize; bf16 or f32 keep a bf16 "
                   "master's embedding exactly; q8_0/q6_k/q5_k/q4_k quantize it byte for byte as llama-quantize "
                   "--token-embedding-type does, e.g. q6_k as bitnet.cpp recommends).")
@click.option("--output-type", type=click.Choice(["f16", "bf16", "f32", "q8_0", "q6_k", "q5_k", "q4_k"],
                                                  case_sensitive=False),
              default=None,
              help="[GGUF OUT] Type of output for untied models when it should differ from --embedding-type "
                   "(llama-quantize's --output-tensor-type).")
@click.option("--name", default=None, help="[GGUF OUT] general.name.")
@click.option("--out-kernel-config", type=INI, default=None,
              help="[tl1/tl2 OUT] kernel_config.ini giving the tilings to write (default: chosen automatically); "
                   "the tilings used are written beside OUT as <stem>.kernel_config.ini.")
@click.option("--max-shard-size", default=None, metavar="SIZE",
              help="[directory OUT] Shard the safetensors (e.g. 2G, 500M; decimal units).")
@click.option("--split-max-size", default=None, metavar="SIZE",
              help="[GGUF OUT] Write OUT in parts of at most SIZE bytes of tensors, as llama.cpp's gguf-split "
                   "(OUT-00001-of-0000N.gguf; e.g. 2G, 500MiB).")
@click.option("--scale-dtype", type=click.Choice(["bf16", "f32"]), default=None,
              help="[hf-packed OUT] dtype of weight_scale: bf16 (default, as transformers) rounds fp32 betas; "
                   "f32 keeps them exactly and transformers loads it.")
@click.option("--beta-rule", type=click.Choice(["numpy1", "numpy2", "exact"]), default=None,
              help="[BitNet embedding model, i2_s OUT] How beta = mean|W| is summed: numpy1 (default) as "
                   "bitnet.cpp's converter under its pinned numpy 1.26 (byte-identical files), numpy2 as under "
                   "numpy 2, exact the correctly rounded mean.")
@click.option("--float-type", type=click.Choice(["f16", "f32"]), default=None,
              help="[BitNet embedding model, i2_s OUT] Type of its norms and token_embd: f16 (default, as "
                   "bitnet.cpp's converter, which rounds Gemma3's 1+w) or f32 (every value kept).")
@click.option("--kernel-config", type=INI, default=None,
              help="Old spelling: --src-kernel-config when SRC is TL1/TL2, --out-kernel-config when OUT is.")
def command(src: str, out: str | None, outfile: str | None, outtype: str, revision: str | None, force: bool,
            dry_run: bool, push_repo: str | None, private: bool, commit_message: str | None, token: str | None,
            as_json: bool, split_max_size: str | None, **options: object) -> None:
    """Convert SRC into OUT with --outtype.

    SRC is a checkpoint directory, a .gguf or .safetensors file, or a hub repo id
    (org/name, or org/name/file.gguf) fetched through huggingface_hub.

    OUT's container follows its name: a directory gets a transformers safetensors
    checkpoint, a *.gguf path a GGUF file. OUT may hold {outtype} or {ftype}; left out,
    or given as a folder (., or ending in /), the output is named after the model in that
    folder, GGUF style (e.g. Bitnet-B1.58-2B-4T-I2_S.gguf; hf-packed and bf16 give a
    directory). Options marked [...] apply to that kind of SRC or OUT only; given
    elsewhere they are a usage error (exit 2).
    """
    if outfile is not None and out is not None:
        raise UsageError(f"OUT is given twice: {out} and --outfile {outfile}")
    out = outfile if out is None else out
    if outtype == "auto":  # bitnet.cpp's default quantization for a GGUF, transformers' packed form otherwise
        outtype = "hf-packed" if out is not None and _names_directory(out) else "i2_s"
    report = convert(src, out, outtype=outtype, revision=revision, force=force, dry_run=dry_run,
                     push_to_hub=push_repo, progress=bars(bars_wanted(as_json)), private=private,
                     commit_message=commit_message, token=token, split_max_size=split_max_size, **options)
    for message in report.notes:
        note(message)
    if dry_run:
        _print_plan(report, push_repo, as_json)
        return
    if as_json:
        emit_json(convert_json(report, push_repo))
        return
    click.echo(f"wrote {report.output} ({report.outtype}): {report.tensors} tensors, "
               f"{report.bytes_read / 1e6:.2f} MB read, {report.bytes_written / 1e6:.2f} MB written")
    if report.pushed is not None:
        click.echo(f"pushed to {report.pushed}")


def _names_directory(out: str) -> bool:
    from ...pipeline.naming import names_folder

    return not out.endswith(".gguf") and not names_folder(out) and not Path(out).is_dir()


def _print_plan(report: ConvertReport, push_repo: str | None, as_json: bool) -> None:
    planned, output = report.planned, report.output
    if as_json:
        emit_json(convert_json(report, push_repo))
        return
    width = max(len(p.name) for p in planned)
    for p in planned:
        click.echo(f"{p.name:<{width}}  {p.kind:<6}  {'x'.join(map(str, p.shape)):>12}  {p.nbytes:>12}")
    click.echo(f"{len(planned)} tensors, {report.bytes_written} bytes of tensor data -> {output}"
               f"{' (exists: a real run needs --force)' if output.exists() else ''}"
               f"{f', then pushed to {push_repo}' if push_repo else ''} (dry run: nothing written)")
