"""What a model of each architecture is: tensor names, activation, sub-norms, tying
(`arch`), the checks a source must pass (`validate`), GGUF hyper-parameter keys
(`gguf_meta`) and tokenizers (`tokenizers/`).
"""
