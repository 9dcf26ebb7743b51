"""Evidence that nothing changed: `verify` (logits side by side), `diff` (ternary space),
`roundtrip`, golden `trace`s, `inspection` (and the embedding models' `embedding_*`), and
`testing` helpers for other projects.
"""
