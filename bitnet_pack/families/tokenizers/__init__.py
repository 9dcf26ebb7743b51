"""Tokenizer files <-> GGUF `tokenizer.*` metadata: byte-level BPE (`metadata`),
pre-tokenizers (`pre`), SentencePiece (`spm`) and the way back (`reverse`).
"""
