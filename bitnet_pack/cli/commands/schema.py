"""The one JSON shape of `convert --json`, `convert --dry-run --json` and `inspect --json`
(documented in the README, "JSON output"). Every key is always present (null when it does not
apply), so a consumer reads the three alike:

    schema          "bitnet-pack/1"
    command         "convert" | "inspect"
    dry_run         true for `convert --dry-run`
    path            SRC as resolved (a hub SRC: its snapshot folder or file)
    source          "org/name@<commit>" for a hub SRC, else null
    kind, layout    SRC's kind ("bf16-master", "hf-packed", "gguf") and projection layout
    family          "2b4t", "1bitllm", "llama", "emb-qwen3" or "emb-gemma3"
    output, outtype OUT and its outtype (inspect: null)
    exists          dry run: whether OUT exists already (a real run needs --force); else null
    files           [{"path", "role"}] every file written, or that a real run writes: "gguf",
                    "kernel_config" (a TL GGUF's ini), "checkpoint" (a directory) and its "file"s
    tensors         [{"name", "dtype", "shape", "nbytes", "layout", "beta", "share"}]: inspect,
                    SRC's tensors (beta and share for ternary ones); convert, OUT's tensors
                    (dtype: the stored type or layout)
    tensor_count    len(tensors)
    bytes_read      bytes of SRC's tensors; bytes_written: of OUT's tensors (planned in a dry run)
    push_to_hub     the repo asked for; pushed: the commit URL once uploaded
    notes           what the readers and writers decided or rounded (the `note:` lines)
    model           inspect: {"layers", "vocab", "context", "hidden", "parameters", "tensor_bytes",
                    "file_bytes"}; convert: null
    pooling, embedding_size   inspect of a BitNet embedding model: "last"/"mean"/"cls" and the
                    pooled vector's length; else null
"""
from __future__ import annotations

SCHEMA = "bitnet-pack/1"


def _row(name: str, dtype: str, shape, nbytes, layout=None, beta=None, share=None) -> dict:
    return {"name": name, "dtype": dtype, "shape": list(shape), "nbytes": nbytes, "layout": layout, "beta": beta,
            "share": share}


def convert_json(report, push_repo: str | None) -> dict:
    """A `ConvertReport` (a real run or a dry run) in the schema."""
    tensors = [_row(p.name, p.kind, p.shape, p.nbytes) for p in report.planned]
    return {
        "schema": SCHEMA, "command": "convert", "dry_run": report.dry_run, "path": report.source_path,
        "source": report.hub_source, "kind": report.source_kind, "layout": report.source_layout,
        "family": report.family, "output": str(report.output), "outtype": report.outtype,
        "exists": report.existed if report.dry_run else None,
        "files": [{"path": path, "role": role} for path, role in report.files],
        "tensors": tensors, "tensor_count": len(tensors), "bytes_read": report.bytes_read,
        "bytes_written": report.bytes_written, "push_to_hub": push_repo, "pushed": report.pushed,
        "notes": list(report.notes), "model": None, "pooling": None, "embedding_size": None,
    }


def inspect_json(inspection) -> dict:
    """An `Inspection` in the schema."""
    tensors = [_row(t.name, t.dtype, t.shape, t.nbytes, t.layout, t.beta, t.share) for t in inspection.tensors]
    return {
        "schema": SCHEMA, "command": "inspect", "dry_run": False, "path": inspection.path,
        "source": inspection.source, "kind": inspection.kind, "layout": inspection.layout,
        "family": inspection.family, "output": None, "outtype": None, "exists": None, "files": [],
        "tensors": tensors, "tensor_count": len(tensors),
        "bytes_read": sum(t.nbytes or 0 for t in inspection.tensors), "bytes_written": None,
        "push_to_hub": None, "pushed": None, "notes": list(inspection.notes), "model": inspection.model,
        "pooling": inspection.pooling, "embedding_size": inspection.embedding_size,
    }
