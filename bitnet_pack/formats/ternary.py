"""The semantics every layout shares: absmean weights, absmax int8 activations.

One in-memory form per linear weight: `TernaryWeight(codes, beta)` with `codes` int8 in
{-1, 0, +1}, shape [out, in], and one per-tensor multiplier `beta` (W ~= codes * beta).

beta is finite and positive. The one exception is an all-zero projection, a legal ternary
tensor whose beta means nothing (W = 0 whatever it is): a layout that stores none (TQ, whose
all-zero blocks carry d = 0) or stores 0 (bitnet.cpp's quantizer on zero weights) reads back
as ZERO_BETA = 1.0, exact in every scale format (f32, fp16, bf16); `same_as` and every
comparison built on it ignore beta when all codes are 0. A stored beta that is NaN, Inf,
zero or negative next to a non-zero code is refused (`stored_beta`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FormatError, NonFiniteActivation, NonFiniteWeight, NotTernary, ShapeError
from .torchsum import torch_mean

ABSMEAN_EPS = np.float32(1e-5)
ACT_EPS = np.float32(1e-5)
ACT_QMAX = np.float32(127.0)
ZERO_BETA = np.float32(1.0)


@dataclass(frozen=True, eq=False)
class TernaryWeight:
    """Ternary codes [out, in] (int8) and the per-tensor multiplier beta (float32)."""

    codes: np.ndarray
    beta: np.float32

    def __post_init__(self) -> None:
        if self.codes.dtype != np.int8 or self.codes.ndim != 2:
            raise ShapeError(
                f"ternary codes must be 2-D int8, got {self.codes.ndim}-D {self.codes.dtype}"
            )
        object.__setattr__(self, "beta", np.float32(self.beta))

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape  # type: ignore[return-value]

    def dequantize(self) -> np.ndarray:
        """codes * beta in float32."""
        return self.codes.astype(np.float32) * self.beta

    def same_as(self, other: TernaryWeight) -> bool:
        """Exact equality of codes, shape and the bits of beta (any beta when all codes are 0)."""
        if self.shape != other.shape or not np.array_equal(self.codes, other.codes):
            return False
        same_beta = np.float32(self.beta).tobytes() == np.float32(other.beta).tobytes()
        return same_beta or not np.any(self.codes)

    @classmethod
    def from_torch(cls, codes, beta) -> TernaryWeight:
        """A TernaryWeight from torch: `codes` [out, in] holding -1/0/+1 (int8 is shared without a
        copy when it is a contiguous CPU tensor; other dtypes are converted), `beta` a float or a
        one-element tensor.

        Example:
            >>> tw = TernaryWeight.from_torch(torch.tensor([[1, 0, -1]], dtype=torch.int8), 0.5)  # doctest: +SKIP
        """
        array = to_numpy(codes)
        if array.dtype != np.int8:
            check_ternary(array)
            array = array.astype(np.int8)
        beta = beta.item() if hasattr(beta, "item") and not isinstance(beta, np.floating) else beta
        return cls(array, np.float32(beta))

    def to_torch(self):
        """(codes as a torch int8 tensor sharing this weight's memory, beta as a float32 0-d tensor)."""
        import torch

        return torch.from_numpy(self.codes), torch.tensor(float(self.beta), dtype=torch.float32)

    def counts(self) -> tuple[int, int, int]:
        """How many -1, 0 and +1 codes."""
        flat = self.codes.ravel()
        minus = int(np.count_nonzero(flat == -1))
        plus = int(np.count_nonzero(flat == 1))
        return minus, flat.size - minus - plus, plus


def to_numpy(array) -> np.ndarray:
    """A numpy view of a numpy array or a torch tensor (CPU tensors are shared, not copied;
    bf16/f16 tensors widen to float32, numpy having no bf16). torch is never imported here."""
    if hasattr(array, "detach") and hasattr(array, "numpy"):
        tensor = array.detach().cpu()
        if str(tensor.dtype) in ("torch.bfloat16", "torch.float16"):
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(array)


def check_ternary(codes: np.ndarray, *, tensor: str | None = None) -> None:
    """Raise NotTernary when `codes` holds anything but -1, 0, +1."""
    bad = np.count_nonzero((codes < -1) | (codes > 1))
    if bad:
        raise NotTernary(f"{bad} of {codes.size} codes are outside {{-1, 0, 1}}", tensor=tensor)


def stored_beta(beta: object, any_nonzero_code, *, layout: str, tensor: str | None = None) -> np.float32:
    """The beta a file stores, checked: finite and positive, or ZERO_BETA for an all-zero
    tensor that stores 0. `any_nonzero_code()` is only called (a pass over the codes) when
    the stored value is not positive."""
    value = np.float32(beta)
    if not np.isfinite(value):
        raise NonFiniteWeight(f"{layout} scale (beta) is {float(value)!r}, not a finite number", tensor=tensor)
    if value > 0:
        return value
    if value == 0 and not any_nonzero_code():
        return ZERO_BETA
    raise FormatError(f"{layout} scale (beta) is {float(value)!r} for a tensor with non-zero codes; "
                      "a ternary scale is positive", tensor=tensor)


def absmean(weight: np.ndarray) -> np.float32:
    """mean(|W|) in float32, bit-identical to transformers' `w.abs().mean()` on CPU
    (see `torchsum`: the last ulp decides the I2_S/TL scale bytes)."""
    return torch_mean(np.abs(np.asarray(weight, dtype=np.float32)))


def ternarize(weight: np.ndarray, *, tensor: str | None = None) -> TernaryWeight:
    """Absmean ternarization, exactly as transformers' `WeightQuant`:

        s = 1 / clamp(mean|W|, 1e-5);  t = clamp(round_half_even(W * s), -1, 1);  beta = 1 / s

    all in float32. All-zero weights (transformers: beta 1e-5) get ZERO_BETA, the same W = 0.

    Args:
        weight: a 2-D [out, in] float numpy array or torch tensor (bf16 widened exactly).
        tensor: a name for error messages.

    Returns:
        The `TernaryWeight` (int8 codes, float32 beta).

    Example:
        >>> tw = ternarize(np.array([[0.5, -0.1, -2.0, 0.0]], np.float32))
        >>> tw.codes.tolist(), float(tw.beta)
        ([[1, 0, -1, 0]], 0.6499999761581421)
    """
    w = np.asarray(to_numpy(weight), dtype=np.float32)
    if w.ndim != 2:
        raise ShapeError(f"a linear weight is 2-D, got shape {w.shape}", tensor=tensor)
    finite = np.isfinite(w)
    if not finite.all():
        bad = w.size - int(np.count_nonzero(finite))
        raise NonFiniteWeight(f"{bad} NaN/Inf values in a master weight", tensor=tensor)
    with np.errstate(over="ignore"):  # a sum past float32's range is inf: refused below
        mean = absmean(w)
    beta = checked_absmean_beta(mean, tensor=tensor)
    scale = np.float32(1.0) / max(mean, ABSMEAN_EPS)
    codes = np.clip(np.rint(w * scale), -1, 1).astype(np.int8)
    return TernaryWeight(codes, beta)


def checked_absmean_beta(mean: np.float32, *, tensor: str | None = None) -> np.float32:
    """beta = 1 / (1 / clamp(mean|W|, 1e-5)) in float32, as transformers computes it; a mean so
    large (bf16's maximum values) that the reciprocal underflows makes beta Inf: refused.
    All-zero weights (mean 0) give all-zero codes, whose beta is ZERO_BETA."""
    if mean == 0:
        return ZERO_BETA
    with np.errstate(over="ignore", divide="ignore"):
        beta = np.float32(1.0) / (np.float32(1.0) / max(np.float32(mean), ABSMEAN_EPS))
    if not np.isfinite(beta):
        raise NonFiniteWeight(f"mean|W| is {float(mean):.4g}: its scale beta = 1/(1/mean) overflows float32 "
                              f"to {float(beta)!r}; the weights are not a usable master", tensor=tensor)
    return np.float32(beta)


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token absmax int8 quantization of activations [..., features].

    Returns (q int8, s float32 [...]) with s = 127 / max(|x|, 1e-5) and
    q = clamp(round_half_even(x * s), -128, 127), all in float32; x ~= q / s.
    NonFiniteActivation when a row holds NaN/Inf (its s would be NaN or 0). This is the
    reference; `kernel.quantize_activations` is the same function in C.
    """
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        amax = np.maximum(np.abs(x).max(axis=-1), ACT_EPS).astype(np.float32)
        scale = (ACT_QMAX / amax).astype(np.float32)
        bad = int(np.count_nonzero(~(scale > 0)))
        if bad:
            raise NonFiniteActivation(f"{bad} of {scale.size} activation rows hold NaN/Inf")
        q = np.clip(np.rint(x * scale[..., None]), -128, 127).astype(np.int8)
    return q, scale
