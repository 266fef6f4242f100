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


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One complete small demo run (tests/workflow/conftest.py's small_config), shared by the workflow and the
    fault-injection tests that inspect its results or copy it."""
    from workflow.conftest import project_with, small_config, snakemake

    project = project_with(tmp_path_factory.mktemp("demo") / "project", small_config())
    result = snakemake(project)
    assert result.returncode == 0, result.stderr[-5000:]
    return project, result
