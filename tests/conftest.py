"""Shared test fixtures: paths to the committed vectors and the shared set beside the repo."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
TINY_A = FIXTURES / "tiny-a"
SHARED_VECTORS = Path(os.environ.get("BITNET_PACK_SHARED", ROOT.parent / "shared")) / "vectors"

settings.register_profile("ci", derandomize=True, database=None, deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=40)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def tiny_a() -> Path:
    """fixtures/tiny-a: the peers' conformance vectors, copied into the repo."""
    return TINY_A


@pytest.fixture(scope="session")
def shared_vectors() -> Path:
    """../shared/vectors: needed only for the Llama 3 tokenizer, which stays out of the repo."""
    if not (SHARED_VECTORS / "llama3-tokenizer" / "tokenizer.json").is_file():
        raise RuntimeError(f"{SHARED_VECTORS} is missing: clone the repo beside ../shared (or set BITNET_PACK_SHARED)")
    return SHARED_VECTORS
