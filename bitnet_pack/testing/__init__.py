"""Test helpers for downstream projects: hypothesis strategies and assertions."""
from .assertions import assert_same_ternary
from .strategies import ternary_codes, ternary_weights

__all__ = ["assert_same_ternary", "ternary_codes", "ternary_weights"]
