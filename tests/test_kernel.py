"""The compiled kernel against the numpy reference: exact int32 sums, identical float32 bits,
on every backend this build and CPU run (plus the reference itself, "numpy")."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from functools import partial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.engine import kernel
from bitnet_pack.errors import FormatError, NotTernary, ShapeError, UnknownLayout, UsageError
from bitnet_pack.formats.ternary import TernaryWeight, quantize_activations

BACKENDS = kernel.available_backends()
COMPILED = [b for b in BACKENDS if b != "numpy"]
PURE = os.environ.get("BITNET_PACK_PUREPYTHON", "") not in ("", "0")


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


def random_codes(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.integers(-1, 2, shape).astype(np.int8)


def packed(codes: np.ndarray, layout: str, beta: float = 0.73) -> kernel.PackedMatrix:
    return kernel.PackedMatrix.from_ternary(TernaryWeight(codes, np.float32(beta)), layout)


def assert_same_everywhere(matrix: kernel.PackedMatrix, q: np.ndarray, x: np.ndarray) -> None:
    """The reference equals the definition (int64 sums; y = float32(sums) / s * beta with
    ternary.quantize_activations), and ternary_matmul_int and ternary_linear equal the
    reference on every compiled backend (none in pure mode: the definition check remains)."""
    want_int = kernel.reference_matmul_int(matrix, q)
    want_int_check = q.astype(np.int64) @ matrix.codes().astype(np.int64).T
    assert np.array_equal(want_int, want_int_check), "the reference itself is not exact"
    want_y = kernel.reference_linear(matrix, x)
    q_x, s_x = quantize_activations(np.asarray(x, np.float32).reshape(-1, matrix.shape[1]))
    sums = q_x.astype(np.int64) @ matrix.codes().astype(np.int64).T
    definition = sums.astype(np.float32) / s_x[:, None] * np.float32(matrix.beta)
    assert np.array_equal(bits(want_y.reshape(definition.shape)), bits(definition)), "reference_linear"
    for backend in COMPILED:
        with kernel.use_backend(backend):
            got_int = kernel.ternary_matmul_int(matrix, q)
            got_y = kernel.ternary_linear(matrix, x)
        assert got_int.dtype == np.int32 and got_y.dtype == np.float32
        assert np.array_equal(got_int, want_int), f"{backend}: int32 sums differ"
        assert np.array_equal(bits(got_y), bits(want_y)), f"{backend}: float32 outputs differ"


# ---- build and selection -----------------------------------------------------------------


def test_extension_is_built_unless_pure_python():
    if PURE:
        assert kernel.BACKEND == "numpy" and BACKENDS == ("numpy",)
    else:
        assert kernel._ext is not None, "bitnet_pack.engine._kernels did not build (set BITNET_PACK_PUREPYTHON=1 to test without)"
        assert "scalar" in BACKENDS
        if not os.environ.get("BITNET_PACK_CPU"):
            assert kernel.BACKEND == BACKENDS[-1]


def test_use_backend_restores_and_refuses_unknown():
    before = kernel.BACKEND
    with kernel.use_backend("numpy"):
        assert kernel.BACKEND == "numpy"
    assert kernel.BACKEND == before
    with pytest.raises(UsageError, match="not available"):
        with kernel.use_backend("avx1024"):
            pass
    assert kernel.BACKEND == before


def run_import(env_update: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITNET_PACK_")}
    env.update(env_update)
    code = ("import warnings; warnings.simplefilter('always')\n"
            "from bitnet_pack.engine import kernel\n"
            "print(kernel.BACKEND, kernel._ext is None)")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=os.getcwd(), timeout=120)


@pytest.mark.parametrize("wanted", BACKENDS)
def test_env_picks_the_backend(wanted):
    done = run_import({"BITNET_PACK_CPU": wanted} | ({"BITNET_PACK_PUREPYTHON": "1"} if PURE else {}))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == wanted
    assert "RuntimeWarning" not in done.stderr


def test_env_asking_for_a_missing_path_warns_and_falls_back():
    done = run_import({"BITNET_PACK_CPU": "avx1024"} | ({"BITNET_PACK_PUREPYTHON": "1"} if PURE else {}))
    assert done.returncode == 0, done.stderr
    assert "BITNET_PACK_CPU=avx1024 is not available here" in done.stderr
    assert done.stdout.split()[0] == BACKENDS[-1]


def test_env_pure_python_skips_the_extension():
    done = run_import({"BITNET_PACK_PUREPYTHON": "1", "BITNET_PACK_CPU": "scalar"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["numpy", "True"]
    assert "BITNET_PACK_CPU=scalar is not available here" in done.stderr


# ---- exactness -----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["i2_s", "hf"])
@pytest.mark.parametrize("m", [1, 5, 37, 130])
@pytest.mark.parametrize("k", [128, 256, 384, 2560])
def test_random_products_match_reference(layout, m, k):
    rng = np.random.default_rng([m, k, len(layout)])
    matrix = packed(random_codes(rng, (m, k)), layout, beta=rng.uniform(0.01, 3.0))
    for n in (1, 3, 17):
        q = rng.integers(-128, 128, (n, k)).astype(np.int8)
        x = (rng.standard_normal((n, k)) * rng.uniform(1e-3, 1e3, (n, 1))).astype(np.float32)
        assert_same_everywhere(matrix, q, x)


@pytest.mark.parametrize("m", [1, 3, 6, 13])
@pytest.mark.parametrize("k", [1, 7, 63, 65, 100, 200, 1000])
def test_hf_odd_shapes_match_reference(m, k):
    """hf takes any in_features: partial vectors at the row end, M not a multiple of 4."""
    rng = np.random.default_rng([m, k])
    matrix = packed(random_codes(rng, (m, k)), "hf")
    for n in (1, 2, 5, 9):
        q = rng.integers(-128, 128, (n, k)).astype(np.int8)
        x = rng.standard_normal((n, k)).astype(np.float32)
        assert_same_everywhere(matrix, q, x)


@pytest.mark.parametrize("layout", ["i2_s", "hf"])
def test_prompt_sized_batches_match_reference(layout):
    """N past the kernel's 64-token blocks, with a ragged last block and tile."""
    rng = np.random.default_rng(14)
    matrix = packed(random_codes(rng, (37, 384)), layout)
    q = rng.integers(-128, 128, (131, 384)).astype(np.int8)
    x = rng.standard_normal((131, 384)).astype(np.float32)
    assert_same_everywhere(matrix, q, x)


@settings(deadline=None, max_examples=25)
@given(layout=st.sampled_from(["i2_s", "hf"]), m=st.integers(1, 70), blocks=st.integers(1, 12),
       extra=st.integers(0, 127), n=st.integers(1, 9), seed=st.integers(0, 2**32 - 1))
def test_hypothesis_products_match_reference(layout, m, blocks, extra, n, seed):
    k = blocks * 128 + (extra if layout == "hf" else 0)
    rng = np.random.default_rng(seed)
    density = rng.uniform(0, 1)
    codes = (random_codes(rng, (m, k)) * (rng.random((m, k)) < density)).astype(np.int8)
    q = rng.integers(-128, 128, (n, k)).astype(np.int8)
    x = rng.standard_normal((n, k)).astype(np.float32)
    assert_same_everywhere(packed(codes, layout), q, x)


@pytest.mark.parametrize("layout,k", [("i2_s", 8192 + 384), ("hf", 8192 + 37), ("i2_s", 1 << 16), ("hf", 1 << 16)])
@pytest.mark.parametrize("code", [-1, 1])
@pytest.mark.parametrize("value", [-128, 127])
def test_extremes_do_not_saturate(layout, k, code, value):
    """Codes all 2 (t=+1) or 0 (t=-1) times q all -128 or 127 over many int16 flush periods,
    up to the largest in_features the kernel takes: any saturation or int16 wrap in the
    maddubs paths, or int32 overflow of the scaled VNNI lanes, would show here."""
    m = 9
    matrix = packed(np.full((m, k), code, np.int8), layout)
    q = np.full((2, k), value, np.int8)
    q[1, ::2] = -128 if value == 127 else 127  # alternating signs as a second token
    want = (q.astype(np.int64).sum(axis=1) * code)[:, None].repeat(m, axis=1)
    for backend in BACKENDS:
        with kernel.use_backend(backend):
            got = kernel.ternary_matmul_int(matrix, q)
        assert np.array_equal(got, want), backend
    x = np.full((1, k), -3.0, np.float32)
    assert_same_everywhere(matrix, q, x)


# ---- activation quantization ----------------------------------------------------------------


def quantization_cases(k: int = 300) -> np.ndarray:
    rng = np.random.default_rng(7)
    rows = [rng.standard_normal(k) * scale for scale in (1e-30, 1e-6, 1e-3, 1, 7.5, 1e4, 1e30)]
    ties = np.zeros(k)
    ties[:9] = [127, 2.5, -3.5, 0.5, -0.5, 1.5, 126.5, -126.5, -2.5]  # s = 1: x*s = x exactly
    rows.append(ties)
    halves = np.zeros(k)
    halves[:6] = [254, 5, -7, 1, -1, 3]  # s = 0.5: ties at 2.5, -3.5, 0.5, -0.5, 1.5
    rows.append(halves)
    rows.append(np.zeros(k))  # all-zero row: s = 127 / 1e-5
    subnormal = np.zeros(k)
    subnormal[:3] = [1e-40, -3e-39, 1e-45]
    rows.append(subnormal)
    rows.append(np.full(k, -1.0))
    rows.append(np.linspace(-1, 1, k) * 1e-5)  # amax exactly at the eps
    return np.array(rows).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_quantization_is_bit_identical(backend):
    x = quantization_cases()
    want_q, want_s = quantize_activations(x)
    ref_q, ref_s = kernel.reference_quantize_activations(x)
    assert np.array_equal(ref_q, want_q) and np.array_equal(bits(ref_s), bits(want_s))
    with kernel.use_backend(backend):
        q, s = kernel.quantize_activations(x)
        q3, s3 = kernel.quantize_activations(x[:, None, :])
    assert q.dtype == np.int8 and s.dtype == np.float32
    assert np.array_equal(q, want_q) and np.array_equal(bits(s), bits(want_s))
    assert np.array_equal(q3.reshape(q.shape), q) and np.array_equal(s3.reshape(-1), s)
    assert np.array_equal(q[7, :9], [127, 2, -4, 0, 0, 2, 126, -126, -2])
    assert np.array_equal(q[8, :6], [127, 2, -4, 0, 0, 2])
    assert not q[9].any() and s[9] == np.float32(127) / np.float32(1e-5)


@pytest.mark.parametrize("layout", ["i2_s", "hf"])
def test_linear_on_quantization_edge_rows(layout):
    k = 384
    x = quantization_cases(k)
    rng = np.random.default_rng(3)
    matrix = packed(random_codes(rng, (11, k)), layout)
    assert_same_everywhere(matrix, quantize_activations(x)[0], x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_activations_raise(backend, bad):
    matrix = packed(random_codes(np.random.default_rng(0), (4, 128)), "i2_s")
    x = np.ones((3, 128), np.float32)
    x[1, 5] = bad
    with kernel.use_backend(backend):
        with pytest.raises(kernel.NonFiniteActivation, match="1 of 3 activation rows"):
            kernel.ternary_linear(matrix, x)
        with pytest.raises(kernel.NonFiniteActivation):
            kernel.quantize_activations(x)


# ---- shapes and inputs ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_leading_dims_and_empty_batches(backend):
    rng = np.random.default_rng(5)
    matrix = packed(random_codes(rng, (10, 256)), "hf")
    x = rng.standard_normal((2, 3, 256)).astype(np.float32)
    with kernel.use_backend(backend):
        y = kernel.ternary_linear(matrix, x)
        y1 = kernel.ternary_linear(matrix, x[0, 0])
        empty = kernel.ternary_linear(matrix, np.zeros((0, 256), np.float32))
        ints = kernel.ternary_matmul_int(matrix, np.ones(256, np.int16))
    assert y.shape == (2, 3, 10) and y1.shape == (10,) and empty.shape == (0, 10) and ints.shape == (10,)
    assert np.array_equal(bits(y[0, 0]), bits(y1))
    assert np.array_equal(ints, matrix.codes().sum(axis=1))
    with pytest.raises(ShapeError, match="in_features 256"):
        kernel.ternary_linear(matrix, np.ones((1, 255), np.float32))
    with pytest.raises(UsageError, match="int8"):
        kernel.ternary_matmul_int(matrix, np.full((1, 256), 200))


def test_inputs_are_not_mutated_and_readonly_bytes_work():
    rng = np.random.default_rng(6)
    codes = random_codes(rng, (8, 256))
    blob = kernel.PackedMatrix.from_ternary(TernaryWeight(codes, np.float32(0.5)), "i2_s").data.copy()
    blob.setflags(write=False)
    matrix = kernel.PackedMatrix.from_bytes("i2_s", blob, (8, 256))
    assert matrix.data is blob and matrix.beta == np.float32(0.5)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    x_before = x.copy()
    assert_same_everywhere(matrix, quantize_activations(x)[0], x)
    assert np.array_equal(x, x_before)
    x_strided = np.asfortranarray(x)  # a non-contiguous caller array goes through a copy
    assert np.array_equal(bits(kernel.ternary_linear(matrix, x_strided)), bits(kernel.reference_linear(matrix, x)))


def test_packed_matrix_refuses_bad_bytes():
    rng = np.random.default_rng(8)
    good = packed(random_codes(rng, (4, 256)), "i2_s", beta=0.5)
    with pytest.raises(ShapeError, match="is 288 bytes, got 287"):
        kernel.PackedMatrix("i2_s", good.data[:-1], (4, 256), good.beta)
    with pytest.raises(FormatError, match="carry beta 0.5"):
        kernel.PackedMatrix("i2_s", good.data, (4, 256), np.float32(0.25))
    bad = good.data.copy()
    bad[17] = 0b11_01_01_11
    with pytest.raises(NotTernary, match="2 of 1024 i2_s codes are 3"):
        kernel.PackedMatrix("i2_s", bad, (4, 256), good.beta)
    with pytest.raises(ShapeError, match="multiple of 128|% 128"):
        kernel.PackedMatrix("i2_s", np.zeros(4 * 100 // 4 + 32, np.uint8), (4, 100), 1.0)
    with pytest.raises(ShapeError, match="must be uint8"):
        kernel.PackedMatrix("hf", np.zeros((1, 7), np.int8), (3, 7), 1.0)
    with pytest.raises(ShapeError, match=r"must be \[1, 7\]"):
        kernel.PackedMatrix("hf", np.zeros((2, 7), np.uint8), (3, 7), 1.0)
    hf = np.full((1, 7), 0x55, np.uint8)
    hf[0, 3] = 0xFF
    with pytest.raises(NotTernary, match="4 of 21 hf codes are 3"):
        kernel.PackedMatrix("hf", hf, (3, 7), 1.0)
    with pytest.raises(ShapeError, match="in_features <= 65536, got 65537"):
        kernel.PackedMatrix("hf", np.full((1, 65537), 0x55, np.uint8), (1, 65537), 1.0)
    with pytest.raises(UnknownLayout, match="unknown layout 'q4_0'; known: (.+, )?hf, i2_s, "):
        kernel.PackedMatrix("q4_0", good.data, (4, 256), good.beta)
    with pytest.raises(UsageError, match="pass beta="):
        kernel.PackedMatrix.from_bytes("hf", hf, (3, 7))


# ---- the peers' bytes -----------------------------------------------------------------------


def test_peer_i2s_and_hf_bytes_give_the_same_sums(tiny_a):
    """bitnet.cpp's I2_S tensors and transformers' packed tensors of tiny-a hold the same
    ternary codes: the kernel must give identical int32 sums reading either."""
    pairs = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    rng = np.random.default_rng(9)
    checked = 0
    with GGUFFile(tiny_a / "tiny-a-i2_s.gguf") as gguf, \
            safe_open(tiny_a / "tiny-a-packed" / "model.safetensors", framework="np") as st_file:
        for layer in range(2):
            for gname, hname in pairs.items():
                info = gguf.tensor_info(f"blk.{layer}.{gname}.weight")
                i2s = kernel.PackedMatrix.from_bytes("i2_s", gguf.tensor_bytes(info.name), info.shape)
                hf = kernel.PackedMatrix("hf", st_file.get_tensor(f"model.layers.{layer}.{hname}.weight"),
                                         info.shape, i2s.beta)
                q = rng.integers(-128, 128, (3, info.shape[1])).astype(np.int8)
                x = rng.standard_normal((3, info.shape[1])).astype(np.float32)
                assert_same_everywhere(i2s, q, x)
                assert_same_everywhere(hf, q, x)
                for backend in BACKENDS:
                    with kernel.use_backend(backend):
                        assert np.array_equal(kernel.ternary_matmul_int(i2s, q), kernel.ternary_matmul_int(hf, q))
                        assert np.array_equal(bits(kernel.ternary_linear(i2s, x)), bits(kernel.ternary_linear(hf, x)))
                checked += 1
    assert checked == 14


# ---- threads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["i2_s", "hf"])
def test_threaded_products_are_complete(layout):
    """Products large enough for the thread pool, on the slow scalar path too: the caller
    must not return before a helper has written its last rows."""
    rng = np.random.default_rng(13)
    matrix = packed(random_codes(rng, (1536, 4096)), layout)
    x = rng.standard_normal((2, 4096)).astype(np.float32)
    want = [kernel.reference_linear(matrix, x[:1]), kernel.reference_linear(matrix, x)]
    for backend in BACKENDS:
        with kernel.use_backend(backend):
            for _ in range(3):
                for n, expected in zip((1, 2), want, strict=True):
                    y = np.full((n, 1536), np.nan, np.float32)
                    y[...] = kernel.ternary_linear(matrix, x[:n])
                    assert np.array_equal(bits(y), bits(expected)), backend


def test_concurrent_callers_get_exact_results():
    """Several Python threads in the kernel at once: one runs on the thread pool, the others
    fall back to their own thread; every result must still be exact."""
    rng = np.random.default_rng(11)
    matrix = packed(random_codes(rng, (1024, 1024)), "i2_s")
    xs = [rng.standard_normal((n, 1024)).astype(np.float32) for n in (1, 1, 5, 9)]
    want = [kernel.reference_linear(matrix, x) for x in xs]
    failures: list[str] = []

    def worker(i: int) -> None:
        for _ in range(30):
            if not np.array_equal(bits(kernel.ternary_linear(matrix, xs[i])), bits(want[i])):
                failures.append(f"thread {i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def _child_product(matrix: kernel.PackedMatrix, x: np.ndarray, out: multiprocessing.Queue) -> None:
    out.put(kernel.ternary_linear(matrix, x))


def test_products_work_in_a_forked_child():
    """The pool's helper threads do not survive fork(); the child must start its own."""
    rng = np.random.default_rng(12)
    matrix = packed(random_codes(rng, (1024, 1024)), "i2_s")
    x = rng.standard_normal((3, 1024)).astype(np.float32)
    kernel.ternary_linear(matrix, x)  # the parent's pool is running now
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_child_product, args=(matrix, x, out))
    child.start()
    got = out.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert np.array_equal(bits(got), bits(kernel.reference_linear(matrix, x)))


# ---- the GIL --------------------------------------------------------------------------------


def assert_releases_gil(calls: dict[object, object]) -> None:
    """Each call lets a second thread run while it is inside C: with a huge switch interval
    the main thread never hands the GIL over while running Python, so the ticker can only
    take a timestamp between t0 and t1 if the call itself released the GIL."""
    stop = threading.Event()
    ticks: list[int] = []

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter_ns())
            time.sleep(0.0002)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    thread = threading.Thread(target=ticker)
    thread.start()
    inside = {}
    try:
        for key, call in calls.items():
            for _ in range(20):  # until the ticker has woken up during one call
                t0 = time.perf_counter_ns()
                call()
                t1 = time.perf_counter_ns()
                inside[key] = sum(t0 < t < t1 for t in list(ticks))
                if inside[key]:
                    break
    finally:
        sys.setswitchinterval(old)
        stop.set()
        thread.join()
    assert all(inside.values()), inside


def test_products_release_the_gil():
    """Structural: with a huge switch interval the main thread never hands the GIL over
    while it runs Python, so a second thread can only take a timestamp between t0 and t1
    if the C product itself released the GIL."""
    if not COMPILED:
        assert PURE
        pytest.skip("compiled backends only (BITNET_PACK_PUREPYTHON=1)")
    rng = np.random.default_rng(10)
    matrix = packed(random_codes(rng, (2048, 2048)), "i2_s")
    x = rng.standard_normal((64, 2048)).astype(np.float32)
    q = rng.integers(-128, 128, (64, 2048)).astype(np.int8)
    out_y = np.empty((64, 2048), np.float32)
    out_i = np.empty((64, 2048), np.int32)
    calls = {}
    for backend in COMPILED:
        calls[(backend, "linear")] = partial(kernel._ext.linear, backend, matrix.kernel_id, matrix.codes_bytes,
                                             2048, 2048, (), matrix.beta, x, out_y)
        calls[(backend, "matmul_int")] = partial(kernel._ext.matmul_int, backend, matrix.kernel_id, matrix.codes_bytes,
                                                 2048, 2048, (), q, out_i)
    assert_releases_gil(calls)


# ---- 16-bit weights (half_matmul, the lm_head) -------------------------------------------


def half_weights(rng: np.random.Generator, shape: tuple[int, int], kind: str, scale: float = 0.5) -> np.ndarray:
    values = (rng.standard_normal(shape) * scale).astype(np.float32)
    if kind == "bf16":
        return (values.view(np.uint32) >> 16).astype(np.uint16)
    return values.astype(np.float16).view(np.uint16)


def spelled_out_half_matmul(w: np.ndarray, kind: str, x: np.ndarray) -> np.ndarray:
    """The order of kernels/half_isa.h, one float32 scalar at a time."""
    f = kernel.half_to_float32(w, kind)
    y = np.empty((x.shape[0], w.shape[0]), np.float32)
    zero = np.float32(0.0)
    for n in range(x.shape[0]):
        for v in range(w.shape[0]):
            lanes = [zero] * 16
            for k in range(0, -(-w.shape[1] // 16) * 16):
                wk, xk = (f[v, k], x[n, k]) if k < w.shape[1] else (zero, zero)
                lanes[k % 16] = np.float32(lanes[k % 16] + np.float32(wk * xk))
            for half in (8, 4, 2, 1):
                lanes = [np.float32(lanes[j] + lanes[j + half]) for j in range(half)]
            y[n, v] = lanes[0]
    return y


def assert_half_same_everywhere(w: np.ndarray, kind: str, x: np.ndarray) -> None:
    want = kernel.reference_half_matmul(w, kind, x)
    for backend in BACKENDS:
        with kernel.use_backend(backend):
            got = kernel.half_matmul(w, kind, x)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.array_equal(bits(got), bits(want)), f"{backend} {kind}: float32 outputs differ"


@pytest.mark.parametrize("kind", ["bf16", "f16"])
def test_half_reference_is_the_specified_order(kind):
    rng = np.random.default_rng(20)
    w, x = half_weights(rng, (5, 37), kind), rng.standard_normal((2, 37)).astype(np.float32)
    want = spelled_out_half_matmul(w, kind, x)
    assert np.array_equal(bits(kernel.reference_half_matmul(w, kind, x)), bits(want))
    exact = x.astype(np.float64) @ kernel.half_to_float32(w, kind).astype(np.float64).T
    assert np.allclose(want, exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["bf16", "f16"])
@pytest.mark.parametrize("v", [1, 7, 37])
@pytest.mark.parametrize("k", [1, 15, 16, 17, 333, 2560])
@pytest.mark.parametrize("n", [1, 3])
def test_half_matmul_matches_reference(backend, kind, v, k, n):
    rng = np.random.default_rng(v * 10007 + k * 7 + n)
    w, x = half_weights(rng, (v, k), kind), rng.standard_normal((n, k)).astype(np.float32)
    want = kernel.reference_half_matmul(w, kind, x)
    with kernel.use_backend(backend):
        got = kernel.half_matmul(w, kind, x)
    assert np.array_equal(bits(got), bits(want))


@settings(deadline=None, max_examples=30)
@given(kind=st.sampled_from(["bf16", "f16"]), v=st.integers(1, 40), k=st.integers(1, 100),
       n=st.integers(1, 5), scale=st.sampled_from([1e-3, 1.0, 300.0]), seed=st.integers(0, 2**32 - 1))
def test_hypothesis_half_matmul_matches_reference(kind, v, k, n, scale, seed):
    rng = np.random.default_rng(seed)
    w = half_weights(rng, (v, k), kind, scale)
    assert_half_same_everywhere(w, kind, (rng.standard_normal((n, k)) * scale).astype(np.float32))


@pytest.mark.parametrize("kind", ["bf16", "f16"])
def test_every_finite_16_bit_value_converts_exactly(kind):
    """One weight per row, times 1: y is the weight's float32 value (-0 sums to +0)."""
    words = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    values = kernel.half_to_float32(words, kind)
    words = words[np.isfinite(values) & (words != 0x8000)]
    if kind == "f16":
        assert np.array_equal(kernel.half_to_float32(words, kind), words.view(np.float16).astype(np.float32))
    else:
        assert np.array_equal(bits(kernel.half_to_float32(words, kind)), bits(words.astype(np.uint32) << 16))
    x = np.ones((1, 1), np.float32)
    want = kernel.half_to_float32(words, kind)[None]
    assert np.array_equal(bits(kernel.reference_half_matmul(words[:, None], kind, x)), bits(want))
    assert_half_same_everywhere(words[:, None], kind, x)


@pytest.mark.parametrize("kind", ["bf16", "f16"])
def test_threaded_half_products_are_complete(kind):
    rng = np.random.default_rng(21)
    w = half_weights(rng, (4099, 301), kind, 0.02)
    x = rng.standard_normal((3, 301)).astype(np.float32)
    want = kernel.reference_half_matmul(w, kind, x)
    for backend in BACKENDS:
        with kernel.use_backend(backend):
            for n in (1, 3):
                y = np.full((n, 4099), np.nan, np.float32)
                y[...] = kernel.half_matmul(w, kind, x[:n])
                assert np.array_equal(bits(y), bits(want[:n])), backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_half_matmul_shapes_and_refusals(backend):
    rng = np.random.default_rng(22)
    w = half_weights(rng, (9, 20), "f16")
    x = rng.standard_normal((2, 3, 20)).astype(np.float32)
    before = x.copy()
    with kernel.use_backend(backend):
        got = kernel.half_matmul(w, "f16", x)
        assert got.shape == (2, 3, 9)
        assert np.array_equal(bits(got.reshape(6, 9)), bits(kernel.reference_half_matmul(w, "f16", x.reshape(6, 20))))
        assert np.array_equal(bits(kernel.half_matmul(w.view(np.float16), "f16", x)), bits(got))
        assert kernel.half_matmul(w, "f16", np.zeros((0, 20), np.float32)).shape == (0, 9)
        assert np.array_equal(x, before)
        with pytest.raises(ShapeError, match="in_features 20"):
            kernel.half_matmul(w, "f16", x[..., :19])
        with pytest.raises(ShapeError, match="uint16"):
            kernel.half_matmul(w.astype(np.int32), "bf16", x)
        with pytest.raises(UsageError, match="bf16, f16"):
            kernel.half_matmul(w, "f32", x)


def test_exact_half_bits_picks_a_lossless_type():
    rng = np.random.default_rng(23)
    bf16 = kernel.half_to_float32(half_weights(rng, (4, 6), "bf16"), "bf16")
    f16 = kernel.half_to_float32(half_weights(rng, (4, 6), "f16"), "f16")
    kind, words = kernel.exact_half_bits(bf16)
    assert kind == "bf16" and np.array_equal(bits(kernel.half_to_float32(words, kind)), bits(bf16))
    assert words.flags.c_contiguous and not np.shares_memory(words, bf16)
    mixed = f16.copy()
    mixed[0, 0] = np.float32(1 + 2**-10)  # f16 holds it, bf16 does not
    kind, words = kernel.exact_half_bits(mixed)
    assert kind == "f16" and np.array_equal(bits(kernel.half_to_float32(words, kind)), bits(mixed))
    assert kernel.exact_half_bits(mixed * np.float32(1 + 2**-20)) is None
    assert kernel.exact_half_bits(np.array([[1e30]], np.float32)) is None  # too wide for f16, too fine for bf16
    assert kernel.exact_half_bits(np.array([[1.0, 65504.0, 2.0**-24]], np.float32))[0] == "f16"


def test_half_matmul_releases_the_gil():
    """As test_products_release_the_gil, for the 16-bit product."""
    if not COMPILED:
        assert PURE
        pytest.skip("compiled backends only (BITNET_PACK_PUREPYTHON=1)")
    rng = np.random.default_rng(24)
    w = half_weights(rng, (8192, 2048), "bf16", 0.02)
    x = rng.standard_normal((4, 2048)).astype(np.float32)
    y = np.empty((4, 8192), np.float32)
    assert_releases_gil({b: partial(kernel._ext.half_matmul, b, "bf16", w, x, y) for b in COMPILED})


@pytest.mark.parametrize("kind", ["bf16", "f16", None])
def test_model_keeps_the_embedding_16_bit_and_uses_half_matmul(kind):
    """BitNetModel stores an exactly representable embedding as its 16-bit bits; lookup and
    logits read those values (None: values neither type holds stay float32)."""
    from bitnet_pack.engine.model import BitNetModel, HalfTensor, ModelConfig
    rng = np.random.default_rng(25)
    config = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 1, "num_attention_heads": 2,
              "num_key_value_heads": 1, "vocab_size": 77, "rope_theta": 10000.0, "tie_word_embeddings": True}
    embedding = kernel.half_to_float32(half_weights(rng, (77, 128), kind or "f16"), kind or "f16")
    if kind == "f16":
        embedding[0, 0] = np.float32(1 + 2**-10)  # not a bf16 value
    if kind is None:
        embedding[0, 0] = np.float32(1 + 2**-20)
    weights = {"model.embed_tokens.weight": embedding, "model.norm.weight": np.ones(128, np.float32)}
    for name, shape in ModelConfig.from_hf(config).tensor_shapes().items():
        if name.endswith("_proj.weight"):
            weights[name] = TernaryWeight(random_codes(rng, shape), np.float32(0.05))
        elif name not in weights:
            weights[name] = np.ones(shape, np.float32)
    model = BitNetModel(config, weights)
    held = model.tensors["model.embed_tokens.weight"]
    assert isinstance(held, HalfTensor) == (kind is not None)
    assert np.array_equal(bits(np.ascontiguousarray(held, np.float32)), bits(embedding))
    seen = []
    logits_of = model._logits
    model._logits = lambda h: seen.append(h) or logits_of(h)
    logits = model.prompt_logits([3, 5, 7])
    assert logits.shape == (3, 77) and np.array_equal(bits(logits[1]), bits(model.prefill([3, 5])))
    if kind is not None:
        assert held.kind == kind
        assert np.array_equal(bits(logits), bits(kernel.reference_half_matmul(held.bits, kind, seen[0])))
    else:
        from bitnet_pack.engine.floatops import reference_f32_matmul  # the f32 lm_head: floatops' lane order
        assert np.array_equal(bits(logits), bits(reference_f32_matmul(embedding, seen[0])))
