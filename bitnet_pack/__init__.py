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

__version__ = "0.1.0"

from .api import ConvertReport, Model, convert, inspect, open, roundtrip, verify
from .errors import BitnetPackError

# The rest loads on first use (PEP 562), so the console script handles signals before numpy
# and the kernel load (see `launch`).
_LAZY = {"get_layout": "layouts", "layout_names": "layouts", "TernaryWeight": "ternary",
         "quantize_activations": "ternary", "ternarize": "ternary"}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'bitnet_pack' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = ["BitnetPackError", "ConvertReport", "Model", "TernaryWeight", "__version__", "convert", "get_layout",
           "inspect", "layout_names", "open", "quantize_activations", "roundtrip", "ternarize", "verify"]
