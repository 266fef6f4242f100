"""Shared fixtures: the project root and the validated full-reproduction config."""

from pathlib import Path

import pytest

from avemotion.config import load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def full_config() -> dict:
    return load_config(ROOT / "config.yaml")
