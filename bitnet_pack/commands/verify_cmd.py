"""bitnet-pack verify A B: greedy decode of both checkpoints, logits compared at every step."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import VerificationMismatch
from .common import emit_json, examples
from .model_io import loaded, prompt_ids

DEFAULT_PROMPT = "BitNet b1.58 stores every weight as"


@click.command("verify", epilog=examples(
    "bitnet-pack verify ./packed out.gguf --prompt 'Hello' --tokens 16",
    "bitnet-pack verify ./master out.gguf --ids 1,15,27 --json",
    "bitnet-pack verify out.gguf ggml-model-i2_s.gguf --numerics bitnet.cpp --atol 1e-3"))
@click.argument("a", type=str)
@click.argument("b", type=str)
@click.option("--prompt", default=None, help=f"Prompt text, encoded with A's tokenizer [default: {DEFAULT_PROMPT!r}].")
@click.option("--ids", default=None, help="Prompt as token ids, e.g. 1,15,27 (instead of --prompt).")
@click.option("--tokens", default=16, show_default=True, type=click.IntRange(1), help="Greedy steps.")
@click.option("--atol", default=0.0, show_default=True, type=click.FloatRange(0), help="Allowed |diff| of logits.")
@click.option("--numerics", type=click.Choice(["reference", "bitnet.cpp"]), default="reference", show_default=True,
              help="Float arithmetic of both runs: fp32 reference, or bitnet.cpp's f16 KV cache.")
@click.option("--kernel-config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="kernel_config.ini for TL1/TL2 GGUFs that do not carry their tiling.")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON on stdout.")
def command(a: str, b: str, prompt: str | None, ids: str | None, tokens: int, atol: float, numerics: str,
            kernel_config: Path | None, as_json: bool) -> None:
    """Run A and B (paths or hub repo ids) greedily and show bit-identical logits, or where and by how much they differ.

    Exit 0 when every compared logit is identical (or within --atol), 3 otherwise.
    """
    from ..verify import verify

    with loaded(a, numerics, kernel_config) as (model_a, tokenizer), loaded(b, numerics, kernel_config) as (model_b, _):
        prompt_tokens = prompt_ids(ids, prompt if prompt is not None or ids else DEFAULT_PROMPT, tokenizer)
        report = verify(model_a, model_b, prompt_tokens, tokens, atol=atol)
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(report.summary())
    if not report.ok:
        first = report.first_divergence or report.first_token_mismatch
        where = "prompt" if first.step is None else f"step {first.step}"
        raise VerificationMismatch(f"{a} and {b} differ at {where}, position {first.position}: max |diff| "
                                   f"{first.max_abs_diff:.4g}; {report.cause}")
