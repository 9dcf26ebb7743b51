"""bf16 <-> f32 without torch or ml_dtypes: bf16 is the top half of an f32.

numpy has no bfloat16, so bf16 arrays travel as uint16 bit patterns.
"""
from __future__ import annotations

import numpy as np


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """uint16 bf16 bit patterns -> float32 (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bf16 bit patterns, round to nearest even (torch's .to(bfloat16)).

    NaN stays a quiet NaN; Inf stays Inf.
    """
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    # uint32 wraps only for NaN bit patterns, which are replaced below
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded = np.where(nan, ((bits >> 16) | 0x40).astype(np.uint16), rounded)
    return rounded


def round_to_bf16(values: np.ndarray | float) -> np.ndarray:
    """float32 values rounded to the nearest bf16, returned as float32."""
    return bf16_to_f32(f32_to_bf16(np.asarray(values, dtype=np.float32)))


def f32_to_stored(values: np.ndarray, type_name: str) -> np.ndarray:
    """float32 values as "BF16" (uint16 bits), "F16" or "F32" storage, round to nearest even."""
    if type_name == "BF16":
        return f32_to_bf16(values)
    return np.asarray(values, dtype=np.float32).astype(np.float16 if type_name == "F16" else np.float32)
