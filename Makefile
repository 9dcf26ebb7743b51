# bitnet-pack: `make demo` and `make test` are all a new machine needs.
# `make demo` installs the core and the kernel only; `make test` adds the test and lint extras
# (pytest, hypothesis, torch, transformers, ruff). The CLI is then .venv/bin/bitnet-pack
# (or `source .venv/bin/activate` to have `bitnet-pack` on PATH).
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
CORE   := $(VENV)/.bitnet-pack-core
EXTRAS := $(VENV)/.bitnet-pack-extras
OUT    ?= out
PYTEST_WORKERS ?= 2
# The editable install records the ninja it rebuilds with on every import: the venv's own binary,
# not one found on PATH (a pyenv shim costs ~0.5 s per start-up).
VENV_TOOLS := NINJA=$(abspath $(VENV))/bin/ninja PATH="$(abspath $(VENV))/bin:$$PATH"

.PHONY: install demo test test-pure bench lint fixture clean

$(CORE): pyproject.toml meson.build kernels/meson.build
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "== build tools (meson-python, Cython, numpy)"
	$(PIP) install --progress-bar on "meson-python>=0.16" "meson>=1.2" ninja "Cython>=3" "numpy>=2"
	@echo "== bitnet-pack and its kernel (compiling the C/Cython kernel takes a minute or two)"
	$(VENV_TOOLS) $(PIP) install --progress-bar on --no-build-isolation -e .
	touch $@

$(EXTRAS): $(CORE)
	@echo "== test, bench and lint extras (torch, transformers, pytest, hypothesis, ruff)"
	$(VENV_TOOLS) $(PIP) install --progress-bar on --no-build-isolation -e '.[test,bench,lint]'
	touch $@

install: $(EXTRAS)

BP := $(VENV)/bin/bitnet-pack

demo: $(CORE)
	rm -rf $(OUT)/demo && mkdir -p $(OUT)/demo
	$(BP) --version
	$(BP) convert fixtures/tiny-bitnet $(OUT)/demo/tiny-bitnet-packed --outtype hf-packed
	$(BP) convert $(OUT)/demo/tiny-bitnet-packed $(OUT)/demo/tiny-bitnet-I2_S.gguf --outtype i2_s
	$(BP) convert $(OUT)/demo/tiny-bitnet-packed $(OUT)/demo/tiny-bitnet-TQ2_0.gguf --outtype tq2_0
	$(BP) convert $(OUT)/demo/tiny-bitnet-I2_S.gguf $(OUT)/demo/tiny-bitnet-back --outtype hf-packed
	$(BP) inspect $(OUT)/demo/tiny-bitnet-I2_S.gguf
	$(BP) verify $(OUT)/demo/tiny-bitnet-packed $(OUT)/demo/tiny-bitnet-I2_S.gguf --tokens 8
	$(BP) verify $(OUT)/demo/tiny-bitnet-packed $(OUT)/demo/tiny-bitnet-TQ2_0.gguf --tokens 8
	@echo "== done: the CLI is $(BP) (or: source $(VENV)/bin/activate)"

test: $(EXTRAS)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS)
	BITNET_PACK_PUREPYTHON=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "not interop" tests/test_kernel.py tests/test_kernel_layouts.py tests/test_model.py tests/test_fastpath.py tests/test_streaming_memory.py tests/test_kernel_iq_bn.py

bench: $(EXTRAS)
	$(PY) benches/run.py

lint: $(EXTRAS)
	$(VENV)/bin/ruff check bitnet_pack tests benches fixtures/make_fixture.py

fixture: $(CORE)
	$(PY) fixtures/make_fixture.py

clean:
	rm -rf build $(OUT) .pytest_cache .hypothesis
