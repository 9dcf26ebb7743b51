"""`bitnet-gpu`: the int2 weights of bitnet.cpp's W2A8 GPU checkpoint (`gpu/generate.py`).

microsoft/BitNet 16da220, gpu/pack_weight.py `convert_weight_int8_to_int2`, on an [N, K] int8
matrix of ternary codes (N % 16 == 0, K % 32 == 0). Four steps:

1. code = t + 2 (1, 2, 3; 0 is never written);
2. tiles of 16 x 32 (N/16 x K/32 of them, row-major), each read in the GPU's shared-memory
   order: tile element (i, j) is source element (row, col) of the tile with
       u = 2i + j // 16,   row = 8 * (u // 16) + u % 8,   col = j % 16 + 16 * ((u % 16) // 8)
3. four codes per byte, the FIRST in the LOW bits: byte b of a tile row holds j = 4b .. 4b+3;
4. inside each little-endian int32 (16 codes, offsets o = 0..15 of step 3), code o moves to
   bit 8 * (o % 4) + 2 * (o // 4):

       int32 bit: 31 30 | 29 28 | ... | 9 8 | 7 6  | 5 4  | 3 2 | 1 0
       offset o :  15   |  11   | ... |  1  |  12  |  8   |  4  |  0

   so byte n of the word holds offsets n, n+4, n+8, n+12 (low bits first).

The bytes are stored as int8 [N, K/4] (tile-major data reinterpreted, not rows). beta is not in
them: `<name>.weight_scale` is a bf16 [4] of 1/s per fused part (q, k, v, 0 / gate, up, 0, 0 /
beta, 0, 0, 0), and the GPU kernel multiplies part p's rows by slot p. The fused tensors and
the scales are the sink's business (sinks/bitnet_gpu.py); this module is the bytes, and the
numbers bitnet.cpp's converter computes (`gpu_quantize`).
"""
from __future__ import annotations

import numpy as np

from ...errors import NotTernary, ShapeError
from ..dtypes import bf16_to_f32, f32_to_bf16
from ..ternary import ABSMEAN_EPS, TernaryWeight, absmean, check_ternary
from . import Layout, LayoutSpec

NAME = "bitnet-gpu"
TILE = (16, 32)
SCALE_SLOTS = 4

_I, _J = np.meshgrid(np.arange(TILE[0]), np.arange(TILE[1]), indexing="ij")
_U = 2 * _I + _J // 16
TILE_ROW = 8 * (_U // 16) + _U % 8  # tile element (i, j) comes from (TILE_ROW, TILE_COL)
TILE_COL = _J % 16 + 16 * ((_U % 16) // 8)
# Steps 2-4 as one gather: byte n of word w of tile row i holds offsets o = 4g + n (g = 0..3) at
# bits 2g, i.e. tile elements (i, 16w + 4g + n); SOURCE_* [i, 4w + n, g] name their source.
_W, _N, _G = np.meshgrid(np.arange(2), np.arange(4), np.arange(4), indexing="ij")
_TILE_J = (16 * _W + 4 * _G + _N).reshape(8, 4)  # [byte of the tile row, g]
SOURCE_ROW = TILE_ROW[:, _TILE_J]  # [16, 8, 4]
SOURCE_COL = TILE_COL[:, _TILE_J]
GROUP_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8)
_SOURCE = (SOURCE_ROW * TILE[1] + SOURCE_COL).reshape(-1)  # stored field -> tile element, flat
STORED_OF_ELEMENT = np.argsort(_SOURCE)  # tile element (row-major) -> its stored field


class BitnetGPU(Layout):
    spec = LayoutSpec(
        name=NAME,
        block_size=TILE[1],
        type_size=TILE[1] // 4,
        scale="tensor:bf16",  # weight_scale bf16[4] per fused tensor: 1/s rounded to bf16 (a note says so)
        beta_rounding="bf16",  # a slot holds beta rounded to bf16 (from a master: `gpu_beta`, quantize_master)
        source="bitnet.cpp gpu/pack_weight.py convert_weight_int8_to_int2 (16da220)",
        # a directory: model_state_int2.pt + model_state_fp16.pt (torch pickles, tensors only)
        container="torch",
        runtimes=("bitnet.cpp gpu/generate.py",),  # W2A8 CUDA kernel (decode), bf16 fake-quant model (prefill)
        sink="bitnet_pack.pipeline.sinks.bitnet_gpu:GPUSink",
        reader="bitnet_pack.pipeline.sources.bitnet_gpu:GPUCheckpoint",
    )
    embeds_scale = False

    def family_refusal(self, family: object) -> str | None:
        from ...families.arch import BITNET_2B4T

        if family is BITNET_2B4T:
            return None
        return (f"--outtype {self.name} writes bitnet.cpp's GPU model, a 2B4T graph (relu2, sub-norms); "
                f"the source is {family.title}")

    def check_shape(self, shape: tuple[int, ...], tensor: str | None = None) -> None:
        super().check_shape(shape, tensor=tensor)
        if shape[0] % TILE[0]:
            raise ShapeError(f"{self.name} needs out_features % {TILE[0]} == 0 (16 x 32 tiles), got out_features "
                             f"{shape[0]} (shape {list(shape)})", tensor=tensor)

    def nbytes(self, shape: tuple[int, int]) -> int:
        self.check_shape(shape)
        return shape[0] * shape[1] // 4

    def stored_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        self.check_shape(shape)
        return (shape[0], shape[1] // 4)

    def encode(self, weight: TernaryWeight) -> np.ndarray:
        """int8 [N, K/4], as torch.save stores it in model_state_int2.pt."""
        self.check_shape(weight.shape)
        check_ternary(weight.codes)
        n, k = weight.shape
        codes = weight.codes.view(np.uint8) + np.uint8(2)  # t + 2 (int8 -1 is 255: wraps to 1)
        tiles = np.ascontiguousarray(codes.reshape(n // 16, 16, k // 32, 32).transpose(0, 2, 1, 3))
        fields = np.take(tiles.reshape(n // 16, k // 32, 512), _SOURCE, axis=-1).reshape(n // 16, k // 32, 16, 8, 4)
        out = fields[..., 0].copy()
        for g in range(1, 4):
            out |= fields[..., g] << GROUP_SHIFTS[g]
        return out.view(np.int8).reshape(n, k // 4)

    def decode(self, data: np.ndarray, shape: tuple[int, int], beta: float | None = None) -> TernaryWeight:
        if beta is None:
            raise ShapeError("the bitnet-gpu layout keeps beta in weight_scale; pass beta=")
        n, k = shape
        want = self.stored_shape(shape)
        packed = np.ascontiguousarray(data)
        if packed.shape != want or packed.dtype.itemsize != 1:
            raise ShapeError(f"{self.name} weight for shape {list(shape)} must be int8 {list(want)}, "
                             f"got {packed.dtype}{list(packed.shape)}")
        stored = packed.view(np.uint8).reshape(n // 16, k // 32, 16, 8, 1)
        fields = (stored >> GROUP_SHIFTS) & np.uint8(3)  # [tile, tile, i, byte, g]
        zero = int(np.count_nonzero(fields == 0))
        if zero:
            raise NotTernary(f"{zero} of {n * k} {self.name} codes are 0 (no ternary value; codes are t + 2), "
                             f"shape {list(shape)}")
        tiles = np.take(fields.reshape(n // 16, k // 32, 512), STORED_OF_ELEMENT, axis=-1)
        tiles -= np.uint8(2)
        ternary = np.ascontiguousarray(tiles.reshape(n // 16, k // 32, 16, 32).transpose(0, 2, 1, 3))
        ternary = ternary.view(np.int8).reshape(n, k)
        checked = self.read_beta(beta, ternary)
        if checked != np.float32(beta):  # an all-zero part with weight_scale 0
            return TernaryWeight(np.zeros(shape, np.int8), checked)
        return TernaryWeight(ternary, np.float32(beta))

    def quantize_master(self, source: object, entry: object) -> tuple[TernaryWeight, np.ndarray] | None:
        """What bitnet.cpp's GPU converter makes of a bf16 master's projection (`gpu_quantize`),
        or None when `source` is not a bf16 master (then the codes are kept as given)."""
        files = getattr(source, "files", None)
        if getattr(source, "kind", None) != "bf16-master" or getattr(entry, "dtype", None) != "BF16" or files is None:
            return None
        bits = files.raw(entry.name)
        return gpu_quantize(bits, absmean(bf16_to_f32(bits)))


# ---- the numbers bitnet.cpp's converter computes (gpu/convert_checkpoint.py) ---------------


def _bf16(values: np.ndarray | float) -> np.ndarray:
    return bf16_to_f32(f32_to_bf16(np.asarray(values, np.float32)))


def _bf16_scalar(value: float) -> np.float32:
    return np.float32(_bf16(value).reshape(-1)[0])


def gpu_beta(mean: float) -> np.float32:
    """The weight_scale slot of a part whose fp32 mean|W| is `mean`, as `quant_weight_int8`
    computes it in bf16: m = bf16(mean), s = bf16(1 / max(m, 1e-5)), slot = bf16(1 / s). Two
    reciprocals in bf16 can move it an ulp away from bf16(mean)."""
    return _bf16_scalar(np.float32(1) / _gpu_s(np.float32(mean)))


def slot_of(beta: float) -> np.float32:
    """The weight_scale slot written for a given beta (not from a master): the nearest bf16."""
    return _bf16_scalar(np.float32(beta))


def _gpu_s(mean: np.float32) -> np.float32:
    m = max(_bf16_scalar(mean), _bf16_scalar(ABSMEAN_EPS))
    return _bf16_scalar(np.float32(1) / m)


def gpu_quantize(bits: np.ndarray, mean: np.float32) -> tuple[TernaryWeight, np.ndarray]:
    """bitnet.cpp's `quant_weight_int8` on a bf16 master (uint16 bits), given its fp32 mean|W|:
    every product W * s is rounded to bf16 before round-half-even, so a code can differ from
    transformers' float32 absmean. Returns (codes with the slot's beta, the -0.0 mask of
    `quant_weight_fp16`: zero codes whose W * s was negative)."""
    s = _gpu_s(mean)
    product = _bf16(bf16_to_f32(bits) * s)
    codes = np.clip(np.rint(product), -1, 1).astype(np.int8)
    return TernaryWeight(codes, gpu_beta(mean)), (codes == 0) & np.signbit(product)


def fake_quant_bits(weight: TernaryWeight, negative_zero: np.ndarray | None = None) -> np.ndarray:
    """model_state_fp16.pt's projection: bf16 bits of t / s = t * slot (exact), -0.0 where
    `negative_zero` says bitnet.cpp's round() left one."""
    magnitude = int(f32_to_bf16(np.array([weight.beta], np.float32))[0])
    table = np.array([0x8000 | magnitude, 0, magnitude], np.uint16)  # by code + 1
    bits = np.take(table, weight.codes.view(np.uint8) + np.uint8(1))  # int8 -1 is 255: wraps to 0
    if negative_zero is not None:
        bits |= negative_zero.view(np.uint8).astype(np.uint16) << 15
    return bits
