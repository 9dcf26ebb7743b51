"""The decode: kernel bindings (`kernel`, `kernel_half`), float operations
(`floatops`), the model (`model`) with ggml's `quant_dot` and `ggml_rope`, the embedding
models' `encoder`, the declared `rounding`s a decode applies, greedy `generate` and the `runner`.
"""
