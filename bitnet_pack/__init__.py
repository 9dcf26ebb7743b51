"""bitnet-pack: move BitNet b1.58 models between every layout real runtimes load.

The packing API for other runtimes:

    from bitnet_pack import ternarize, get_layout
    tw = ternarize(master_weight_f32)             # absmean, exactly as transformers
    blob = get_layout("i2_s").encode(tw)          # the bytes bitnet.cpp loads
    back = get_layout("i2_s").decode(blob, tw.shape)
"""
from __future__ import annotations

__version__ = "0.1.0"

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


__all__ = ["BitnetPackError", "TernaryWeight", "__version__", "get_layout", "layout_names",
           "quantize_activations", "ternarize"]
