"""The `bitnet-pack` command line: `launch` (the console script), `main` (the click group)
and one module per command in `commands/`. Nothing here is imported by the library.

This __init__ imports nothing: `launch` must run before click, numpy or the kernel load.
"""
