"""The README's main job: the whole DAG on the full demo dataset (`make demo`'s Snakemake call), about 10 minutes
on 2 cores. It proves the pipeline learns: the LMS scores must be far above chance."""

import sqlite3

import pandas as pd

from .conftest import copy_project, snakemake


def test_demo_profile_learns_far_above_chance(tmp_path):
    project = copy_project(tmp_path / "p")
    result = snakemake(project, "--workflow-profile", "workflow/profiles/demo", timeout=1800)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    t2 = pd.read_csv(project / "results/tables/table2.csv").set_index("configuration")
    assert t2.loc["lms", "n_folds"] == 5
    assert t2.loc["lms", "mean"] > 50.0  # 8-class accuracy %, chance 12.5 %
    t1 = pd.read_csv(project / "results/tables/table1.csv")
    lms = t1[t1.configuration == "lms"]
    assert (lms["n_folds"] == 5).all()
    assert lms["mean"].mean() > 0.65  # binary macro-F1 averaged over emotions; chance ~0.5
    with sqlite3.connect(project / "results/mlflow/mlflow.db") as db:
        (finished,) = db.execute(
            "select count(*) from runs where status = 'FINISHED' and lifecycle_stage = 'active'"
        ).fetchone()
    assert finished == 45
