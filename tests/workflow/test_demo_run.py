"""The README's main job on the full demo dataset (`make demo`'s Snakemake call and profile), restricted to the
8-class fold jobs (the Table 2 cells) so that it fits the CI budget (about 13 minutes on 2 cores: demo data,
tracking of every frame, the features, 20 trainings). It proves the pipeline learns from each feature: every
8-class score must be far above chance. The complete `make demo`, tables included, adds the 200 binary jobs;
the small demo run of test_workflow.py builds the tables through the same rules."""

import json
import sqlite3

from avemotion import config as avcfg

from .conftest import ROOT, copy_project, snakemake

CONFIG = avcfg.load_config(ROOT / "config.yaml", ROOT / "workflow/profiles/demo/demo.yaml")
FEATURES = avcfg.implemented_configurations(CONFIG, "table2")


def test_demo_profile_every_feature_learns_far_above_chance(tmp_path):
    project = copy_project(tmp_path / "p")
    targets = [f"results/train/{f}/multiclass/all/fold{k}/metrics.json" for f in FEATURES for k in range(5)]
    result = snakemake(project, "--workflow-profile", "workflow/profiles/demo", *targets, timeout=1800)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert FEATURES == ["lms", "face_kpd", "face_au", "eyes_kpd"]
    for feature in FEATURES:
        folds = [json.loads((project / t).read_text())["accuracy"] for t in targets if f"/{feature}/" in t]
        # 8-class accuracy averaged over the 5 folds; chance is 1/8.
        assert sum(folds) / 5 > 0.5, (feature, folds)
    with sqlite3.connect(project / "results/mlflow/mlflow.db") as db:
        (finished,) = db.execute(
            "select count(*) from runs where status = 'FINISHED' and lifecycle_stage = 'active'"
        ).fetchone()
    assert finished == 20
    lost = (project / "logs/extract_features/face_kpd.log").read_text()
    assert "face lost (interpolated) in" in lost
