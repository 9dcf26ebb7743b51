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
from .layouts import get_layout, layout_names
from .ternary import TernaryWeight, quantize_activations, ternarize

__all__ = ["BitnetPackError", "TernaryWeight", "__version__", "get_layout", "layout_names",
           "quantize_activations", "ternarize"]
