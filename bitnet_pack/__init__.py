"""bitnet-pack: move BitNet b1.58 models between every layout real runtimes load.

The library (each function returns a typed result; none prints or exits):

    import bitnet_pack
    report = bitnet_pack.convert("fixtures/tiny-bitnet", "tiny.gguf", outtype="i2_s")
    with bitnet_pack.open("tiny.gguf") as model:       # lazy: one tensor at a time
        for name, weight in model: ...                 # TernaryWeight or float32 array
    bitnet_pack.inspect("tiny.gguf"); bitnet_pack.verify(a, b); bitnet_pack.roundtrip(src)

The packing API for other runtimes (numpy or torch in and out):

    tw = bitnet_pack.ternarize(weight)                    # absmean, exactly as transformers
    blob = bitnet_pack.get_layout("i2_s").encode(tw)      # the bytes bitnet.cpp loads
    back = bitnet_pack.get_layout("i2_s").decode(blob, tw.shape)
"""
from __future__ import annotations

from ._version import __version__


def _launched() -> bool:
    """This process is the `bitnet-pack` command (console script or `python -m bitnet_pack`)."""
    import os
    import sys

    argv = getattr(sys, "orig_argv", sys.argv)
    return os.path.basename(sys.argv[0] if sys.argv else "") == "bitnet-pack" or any(
        flag == "-m" and module == "bitnet_pack" for flag, module in zip(argv, argv[1:], strict=False))


if _launched():  # the interruption policy before numpy and gguf load (launch installs it again)
    from . import interrupts as _interrupts

    _interrupts.install()

from .api import ConvertReport, Model, convert, inspect, open, roundtrip, verify  # noqa: E402
from .errors import BitnetPackError  # noqa: E402

# The rest loads on first use (PEP 562), so the console script handles signals before numpy
# and the kernel load (see `launch`).
_LAZY = {
    "get_layout": "formats.layouts",
    "layout_names": "formats.layouts",
    "TernaryWeight": "formats.ternary",
    "quantize_activations": "formats.ternary",
    "ternarize": "formats.ternary",
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'bitnet_pack' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = ["BitnetPackError", "ConvertReport", "Model", "TernaryWeight", "__version__", "convert", "get_layout",
           "inspect", "layout_names", "open", "quantize_activations", "roundtrip", "ternarize", "verify"]
