"""Per-job start-up (avemotion.bench_startup): the arithmetic by hand, and the rules read from the workflow."""

import pytest

from avemotion import bench_startup


def test_rule_rows_by_hand():
    commands = {
        "train_binary": "python -m avemotion.train --spec {params.specs:q} --tracking-uri {params.uri:q}",
        "train_multiclass": "python -m avemotion.train --spec {params.specs:q} --tracking-uri {params.uri:q}",
        "extract_audio": "python -m avemotion.audio --out {output}",
        "all": "",
    }
    counts = {"train_binary": 5, "train_multiclass": 10, "extract_audio": 3, "all": 1}
    imports = {"avemotion.train": 2.0, "avemotion.audio": 0.5}
    runs_per_job = {"train_binary": 8, "train_multiclass": 5}  # multiclass: 5 folds per job (grouped)
    mlflow = {"avemotion.train": 1.0}  # what MLflow adds to the training module's imports
    rows = {r.rule: r for r in bench_startup.rule_rows(commands, counts, imports, mlflow, 0.25, runs_per_job)}
    assert set(rows) == {"train_binary", "train_multiclass", "extract_audio"}  # rule all runs nothing
    # binary: 2.0 import + 1.0 MLflow import + 8 runs x 0.25 = 5.0 s a job, 5 jobs
    assert rows["train_binary"].per_job_s == pytest.approx(5.0) and rows["train_binary"].total_s == 25.0
    assert rows["train_multiclass"].per_job_s == pytest.approx(4.25)  # 2.0 + 1.0 + 5 x 0.25
    assert rows["extract_audio"].mlflow_s == 0 and rows["extract_audio"].total_s == pytest.approx(1.5)


def test_job_seconds_sums_the_last_runs_benchmark_files(tmp_path):
    header = "s\th:m:s\tmax_rss\n"
    (tmp_path / "train_binary" / "lms").mkdir(parents=True)
    (tmp_path / "train_binary" / "lms" / "fold0.tsv").write_text(header + "12.5\t0:00:12\t100\n")
    (tmp_path / "train_binary" / "lms" / "fold1.tsv").write_text(header + "7.5\t0:00:07\t100\n")
    (tmp_path / "extract_audio").mkdir()
    (tmp_path / "extract_audio" / "actor01.tsv").write_text(header + "3.0\t0:00:03\t50\n")
    assert bench_startup.job_seconds(tmp_path) == {"train_binary": 20.0, "extract_audio": 3.0}


def test_rule_commands_and_job_counts_come_from_the_workflow(root):
    commands, counts, runs = bench_startup.rule_commands(root, root / "workflow" / "profiles" / "demo")
    assert bench_startup.MODULE.search(commands["train_multiclass_group1"]).group(1) == "avemotion.train"
    assert "--tracking-uri" in commands["train_binary_group1"]
    # The demo's DAG, every job forced (so the tracker model's prefetch counts); rule all runs nothing. Its
    # training jobs group the 5 folds (jobs.group_folds) and up to 4 TIM-Net configurations of a task
    # (jobs.configurations_per_job): Table 1's 5 rows in 2 jobs, Table 2's 19 cells on arrays in 5.
    groups = {f"train_binary_group{i}": 1 for i in (1, 2)} | {
        f"train_multiclass_group{i}": 1 for i in range(1, 6)
    }
    assert counts == {
        "make_demo_archives": 1, "prefetch_tracker_model": 1, "download_archive": 12, "extract_clips": 12,
        "build_clip_table": 1, "extract_audio": 12, "extract_openface": 12, "crop_patches": 12,
        "extract_features": 5, "finetune_binary": 4, "finetune_multiclass": 4, "extract_frozen": 4,
        **groups, "build_tables": 1, "draw_figures": 1, "log_parent_runs": 1,
    }  # fmt: skip
    # fold jobs (MLflow runs) per training job: 8 targets x 5 folds x 2 or 3 rows; 5 folds x 3 or 4 cells
    assert runs == {
        "train_binary_group1": 80,
        "train_binary_group2": 120,
        "finetune_binary": 40,
        "train_multiclass_group1": 20,
        "train_multiclass_group2": 15,
        "train_multiclass_group3": 20,
        "train_multiclass_group4": 20,
        "train_multiclass_group5": 20,
        "finetune_multiclass": 5,
    }
