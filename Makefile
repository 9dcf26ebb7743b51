# bitnet-pack: `make demo` and `make test` are all a new machine needs.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.bitnet-pack-installed
OUT    ?= out
PYTEST_WORKERS ?= 2

.PHONY: install demo test test-pure bench lint fixture clean

$(STAMP): pyproject.toml meson.build kernels/meson.build
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "meson-python>=0.16" "meson>=1.2" ninja "Cython>=3" "numpy>=2"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation -e '.[test,bench,lint]'
	touch $@

install: $(STAMP)

BP := $(VENV)/bin/bitnet-pack

demo: $(STAMP)
	rm -rf $(OUT)/demo && mkdir -p $(OUT)/demo
	$(BP) --version
	$(BP) convert fixtures/tiny-bitnet $(OUT)/demo/tiny-bitnet-packed --outtype hf-packed
	$(BP) convert $(OUT)/demo/tiny-bitnet-packed $(OUT)/demo/tiny-bitnet-I2_S.gguf --outtype i2_s
	$(BP) convert $(OUT)/demo/tiny-bitnet-packed $(OUT)/demo/tiny-bitnet-TQ2_0.gguf --outtype tq2_0
	$(BP) convert $(OUT)/demo/tiny-bitnet-I2_S.gguf $(OUT)/demo/tiny-bitnet-back --outtype hf-packed
	$(BP) inspect $(OUT)/demo/tiny-bitnet-I2_S.gguf
	$(BP) verify $(OUT)/demo/tiny-bitnet-packed $(OUT)/demo/tiny-bitnet-I2_S.gguf --tokens 8
	$(BP) verify $(OUT)/demo/tiny-bitnet-packed $(OUT)/demo/tiny-bitnet-TQ2_0.gguf --tokens 8

test: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS)
	BITNET_PACK_PUREPYTHON=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "not interop" tests/test_kernel.py tests/test_kernel_layouts.py tests/test_model.py tests/test_fastpath.py tests/test_streaming_memory.py

bench: $(STAMP)
	$(PY) benches/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check bitnet_pack tests benches fixtures/make_fixture.py

fixture: $(STAMP)
	$(PY) fixtures/make_fixture.py

clean:
	rm -rf build $(OUT) .pytest_cache .hypothesis
