"""What bytes mean: the ternary semantics, one module per layout (and how the kernel walks
its bytes: `kernel_formats`), float and GGML types, ggml's float quantizers (`quant_floats`)
and float arithmetic (`floatmath`), bitnet.cpp's TL tilings.

Nothing here opens a model; everything above builds on it.
"""
