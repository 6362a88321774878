"""Shared fixtures: paths to the real public data (tests/fixtures) and a throwaway CA."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.synth import TestCA

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "tests" / "fixtures"
SAMPLE = REPO / "data" / "sample"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real public data in the repository (tests/fixtures, each folder with its README)."""
    return REAL


@pytest.fixture(scope="session")
def test_ca() -> TestCA:
    """A throwaway issuing CA."""
    return TestCA(name="ctscan Test Issuing CA")
