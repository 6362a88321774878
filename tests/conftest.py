"""Shared fixtures: paths to the real public data and a throwaway CA."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.synth import TestCA

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
SAMPLE = REPO / "data" / "sample"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real public data (shared/data/real), skipping when it is not beside the repo."""
    if not REAL.exists():
        pytest.skip("shared/data/real is not beside this checkout")
    return REAL


@pytest.fixture(scope="session")
def test_ca() -> TestCA:
    """A throwaway issuing CA."""
    return TestCA(name="ctscan Test Issuing CA")
