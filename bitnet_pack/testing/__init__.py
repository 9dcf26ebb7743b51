"""Compatibility path: the testing helpers live in `bitnet_pack.proof.testing` (issue 16).

`from bitnet_pack.testing import layout_weights, assert_matches_trace, ...` keeps working for
other projects' tests (every name of `bitnet_pack.proof.testing.__all__`, hypothesis strategies
still loaded on first use). Submodules moved: import `bitnet_pack.proof.testing.strategies` etc.
New code imports `bitnet_pack.proof.testing`. (reorg: compatibility re-export)
"""
from __future__ import annotations

from ..proof import testing as _impl

__all__ = list(_impl.__all__)


def __getattr__(name: str):
    return getattr(_impl, name)


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(globals()))
