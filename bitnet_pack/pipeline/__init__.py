"""Source -> ternary tensors -> layout -> sink: `sources/` read checkpoints, `sinks/` write
them, `convert` joins the two; `options`, output `naming`, the `hub` and `progress`.
"""
