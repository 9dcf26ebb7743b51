"""Containers: bytes on disk (safetensors, GGUF). Nothing here knows what a ternary is."""
