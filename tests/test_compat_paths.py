"""Public import paths that moved in issue 16's reorganisation stay importable as thin
re-exports. (reorg: compatibility re-export: the script that moved them leaves this file's names alone.)"""
import importlib
import subprocess
import sys

import pytest


def test_bitnet_pack_testing_serves_the_same_objects_as_its_new_home() -> None:
    old = importlib.import_module("bitnet_pack.testing")
    new = importlib.import_module("bitnet_pack.proof.testing")
    assert old.__all__ == new.__all__ and "record_trace" in old.__all__
    for name in [*new.__all__, "mutated_bytes"]:
        assert getattr(old, name) is getattr(new, name), name
    with pytest.raises(AttributeError):
        old.no_such_helper  # noqa: B018


def test_star_import_of_the_old_path_gives_every_public_name() -> None:
    code = "from bitnet_pack.testing import *; print(sorted(k for k in dir() if not k.startswith('_')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(out) == sorted(importlib.import_module("bitnet_pack.proof.testing").__all__)


def test_the_version_lives_below_the_root_and_the_root_reexports_it() -> None:
    import bitnet_pack
    from bitnet_pack._version import __version__

    assert bitnet_pack.__version__ == __version__
