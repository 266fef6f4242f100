import hashlib
import itertools
import json
import re
import sqlite3
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import copy_of

from avemotion import paper

from .conftest import (
    ROOT,
    ArchiveServer,
    copy_archives,
    copy_project,
    project_with,
    project_with_corrupt_archive,
    small_config,
    snakemake,
)


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a Snakemake run or dry-run."""
    table = output.split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def test_dry_run_of_the_full_reproduction_lists_every_job(tmp_path):
    project = copy_project(tmp_path / "p")
    result = snakemake(project, "-n", "-p")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert (
        counts["download_archive"] == 24 and counts["extract_clips"] == 24 and counts["extract_audio"] == 24
    )
    # The published facial tracking, downloaded once, then one tracking job per actor.
    assert counts["download_tracking"] == 1 and counts["extract_openface"] == 24
    assert counts["extract_features"] == 5  # LMS, Face KPD, Face AU, Eyes KPD, Head pose
    # One job per fold for each of the 5 features (training its 8 one-vs-rest models).
    # Per fold 8-class for the 4 with a Table 2 cell, and the 15 multimodal cells (fusion).
    # Three seeds each (training.seeds), a job per seed.
    assert counts["train_binary"] == 5 * 5 * 3 and counts["train_multiclass"] == (4 + 15) * 5 * 3
    # The pretrained half: patches per actor; Wav2Vec2-B and the three ResNets fine-tuned per fold, one model
    # per emotion (Table 1), Wav2Vec2-L and the ResNets per fold (Table 2), whose fold models give the frozen
    # features; one seed (training.finetune_seeds).
    assert counts["crop_patches"] == 24 and counts["prefetch_backbone"] == 3
    assert counts["finetune_binary"] == 4 * 5 and counts["finetune_multiclass"] == 4 * 5
    assert counts["extract_frozen"] == 4 * 5
    # Aggregation: the tables, their figures, the MLflow parent runs.
    assert counts["build_tables"] == counts["draw_figures"] == counts["log_parent_runs"] == 1
    assert sum(counts.values()) - counts["total"] == counts["total"] == 314 + 2 * (25 + 95)
    assert "make_demo_archives" not in counts and "prefetch_tracker_model" not in counts
    for backbone in ("resnet", "wav2vec2_base", "wav2vec2_large"):
        assert f"python -m avemotion.backbones prefetch --name {backbone}" in result.stdout
    assert "zenodo.org/records/1188976/files/Video_Speech_Actor_07.zip" in result.stdout
    assert "zenodo.org/records/3255102/files/FacialTracking_Actors_01-24.zip" in result.stdout
    assert "--md5 5753bbc64a9a790f8a8d3e03cba526ee --size 417163019" in result.stdout


def test_dry_run_of_the_demo_lists_both_complete_tables(tmp_path):
    project = copy_project(tmp_path / "p")
    result = snakemake(project, "-n", "--workflow-profile", "workflow/profiles/demo")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    # The full reproduction's DAG on 12 actors, with the demo data generated instead of downloaded and the
    # tiny random backbones built instead of prefetched: 9 Table 1 rows, 23 Table 2 cells, each one job that
    # trains its 5 folds in turn (jobs.group_folds), as are the 4 frozen-feature extractions.
    assert counts["make_demo_archives"] == 1 and "download_tracking" not in counts
    assert "prefetch_backbone" not in counts
    # TIM-Net configurations in groups of up to 4 (jobs.configurations_per_job): Table 1's 5 engineered rows
    # in 2 jobs, Table 2's 7 cells without a backbone in 2 and its 12 fusions with one in 3.
    binary = {k: n for k, n in counts.items() if k.startswith("train_binary")}
    multiclass = {k: n for k, n in counts.items() if k.startswith("train_multiclass")}
    assert binary == {"train_binary_group1": 1, "train_binary_group2": 1} and counts["finetune_binary"] == 4
    assert multiclass == {f"train_multiclass_group{i}": 1 for i in range(1, 6)}
    assert counts["finetune_multiclass"] == 4
    # 12 actors (demo.yaml): one extraction, audio, tracking and patch job each
    assert counts["extract_frozen"] == 4 and counts["extract_openface"] == counts["crop_patches"] == 12
    assert counts["total"] == 90
    # one job's outputs: every fold's folder
    command = next(
        line for line in result.stdout.splitlines() if "avemotion.train" in line and "/lms/binary/" in line
    )
    assert all(
        f"results/train/lms/binary/{t}/seed1/fold{k}" in command for t in paper.CLASSES for k in range(5)
    )


def test_demo_subset_runs_from_archives_to_tables(demo_run):
    project, result = demo_run
    counts = job_counts(result.stdout + result.stderr)
    # one job per group of 2 configurations, task and seed (2 seeds) for both folds (jobs.group_folds,
    # configurations_per_job)
    assert counts["train_binary_group1"] == 2 and counts["extract_openface"] == 4
    assert counts["train_multiclass_group1"] == counts["train_multiclass_group2"] == 2  # singles, fusions
    assert not any(k in counts for k in ("train_binary", "train_multiclass", "train_binary_group2"))
    assert counts["crop_patches"] == 4 and counts["finetune_multiclass"] == 2
    assert "finetune_binary" not in counts and counts["extract_frozen"] == 2
    t1 = pd.read_csv(project / "results/tables/table1.csv")
    lms = t1[t1.configuration == "lms"]
    run = t1.configuration.isin(["lms", "face_kpd"])
    assert (
        t1[run]["mean"].notna().all() and (t1[run]["n_folds"] == 2).all() and (t1[run]["n_seeds"] == 2).all()
    )
    assert t1[~run]["mean"].isna().all()
    # the table cells are the mean of the metrics of every fold and seed, the interval over the 2 seed means
    values = {
        (k, s): json.loads(
            (project / f"results/train/lms/binary/angry/seed{s}/fold{k}/metrics.json").read_text()
        )["macro_f1"]
        for k in (0, 1)
        for s in (1, 2)
    }
    cell = lms[lms.emotion == "angry"].iloc[0]
    assert cell["mean"] == pytest.approx(sum(values.values()) / 4, abs=1e-4)
    seed_means = [(values[0, s] + values[1, s]) / 2 for s in (1, 2)]
    assert cell["std_seeds"] == pytest.approx(abs(seed_means[0] - seed_means[1]) / 2**0.5, abs=1e-4)
    assert cell["interval"] == "seeds" and cell["ci_low"] <= cell["mean"] <= cell["ci_high"]
    assert cell["paper_inside"] == float(cell["ci_low"] <= 0.83 <= cell["ci_high"])
    # a fine-tuned backbone trains one seed: its interval is over the folds
    t2 = pd.read_csv(project / "results/tables/table2.csv").set_index("configuration")
    assert t2.loc["eyes_resnet", "n_seeds"] == 1 and t2.loc["eyes_resnet", "interval"] == "folds"
    assert t2.loc["lms", "n_seeds"] == 2 and t2.loc["lms", "interval"] == "seeds"
    md2 = (project / "results/tables/table2.md").read_text()
    number = r"-?\d+\.\d\d"
    assert re.search(
        rf"\| None \| — \| {number} \[{number}, {number}\] ±{number} folds ±{number} seeds, pooled {number} "
        rf"\(paper 65\.60 (inside|outside), [+-]\d+\.\d\d\) \| "
        rf"{number} \[{number}, {number}\] ±{number} folds, pooled {number} \(paper: not published\) \|",
        md2,
    )
    clips = pd.read_csv(project / "results/clips/clips.csv")
    assert len(clips) == 32 and set(clips.emotion) == set(paper.CLASSES)
    assert (clips.set_index("actor").fold.groupby(level=0).first().to_dict()) == {1: 0, 2: 1, 3: 0, 4: 1}
    assert np.load(project / "results/features/lms/features.npy").shape == (32, 88, 24)
    kpd = np.load(project / "results/features/face_kpd/features.npy")
    assert kpd.shape == (32, 88, 780) and np.isfinite(kpd).all()
    # Neutral-frame normalisation: distances near 1 (the reference face).
    assert 0.8 < np.median(kpd) < 1.2
    sidecar = json.loads((project / "results/tracking/Actor_02/01-01-05-01-01-01-02.json").read_text())
    assert sidecar["backend"] == "mediapipe" and sidecar["tracked_frames"] == sidecar["video_frames"]


def mlflow_runs(project):
    with sqlite3.connect(project / "results/mlflow/mlflow.db") as db:
        return db.execute(
            "select e.name, r.name, r.status, r.lifecycle_stage, t.value from runs r "
            "join experiments e on e.experiment_id = r.experiment_id "
            "join tags t on t.run_uuid = r.run_uuid and t.key = 'avemotion.job'"
        ).fetchall()


def test_every_fold_job_is_one_finished_mlflow_run(demo_run):
    project, _ = demo_run
    rows = mlflow_runs(project)
    active = [r for r in rows if r[3] == "active"]
    # Table 1: 2 rows x 8 emotions x 2 folds x 2 seeds; Table 2: 4 cells on arrays x 2 folds x 2 seeds, 2
    # fine-tuned backbones x 2 folds x 1 seed: one run per model
    assert len(active) == 64 + 16 + 4 and len({r[4] for r in active}) == 84
    assert all(r[2] == "FINISHED" for r in active)
    assert {r[0] for r in active} == {"avemotion/table1-binary", "avemotion/table2-multiclass"}
    assert {
        "Table 2 / LMS / seed 1 / fold 1",
        "Table 2 / LMS / seed 2 / fold 1",
        "Table 2 / Eyes ResNet / seed 1 / fold 0",
        "Table 2 / Eyes ResNet + LMS / seed 2 / fold 1",
        "Table 2 / Face KPD + Wav2Vec2-L / seed 1 / fold 0",
    } <= {r[1] for r in active}


def test_each_configuration_is_one_parent_run_holding_its_fold_runs(demo_run):
    project, _ = demo_run
    parents = json.loads((project / "results/mlflow/parents.json").read_text())
    assert sorted(parents["table1"]) == ["face_kpd", "lms"]
    assert sorted(parents["table2"]) == sorted(
        ["lms", "face_kpd", "eyes_resnet", "wav2vec2_large", "eyes_resnet+lms", "face_kpd+wav2vec2_large"]
    )
    with sqlite3.connect(project / "results/mlflow/mlflow.db") as db:
        children = dict(
            db.execute(
                "select t.value, count(*) from tags t join runs r on r.run_uuid = t.run_uuid "
                "where t.key = 'mlflow.parentRunId' and r.lifecycle_stage = 'active' group by t.value"
            ).fetchall()
        )
        metrics = dict(
            db.execute(
                "select key, value from latest_metrics where run_uuid = ?",
                (parents["table2"]["eyes_resnet+lms"],),
            ).fetchall()
        )
        params = dict(
            db.execute(
                "select key, value from params where run_uuid = ?", (parents["table2"]["lms"],)
            ).fetchall()
        )
    # a Table 1 row: 8 emotions x 2 folds x 2 seeds; a Table 2 cell: 2 folds x 2 seeds
    assert children[parents["table1"]["lms"]] == 32 and children[parents["table2"]["eyes_resnet+lms"]] == 4
    t2 = pd.read_csv(project / "results/tables/table2.csv").set_index("configuration")
    for stat in ("mean", "std_folds", "std_seeds", "ci_low", "ci_high", "pooled", "paper", "paper_inside"):
        assert metrics[f"accuracy_{stat}"] == pytest.approx(t2.loc["eyes_resnet+lms", stat]), stat
    assert 0 <= metrics["accuracy_ci_low"] <= metrics["accuracy_ci_high"] <= 100
    assert params["n_seeds"] == "2" and params["interval"] == "t over seed means"


def test_backbones_fine_tune_per_fold_and_give_frozen_per_fold_features(demo_run):
    project, _ = demo_run
    clips = pd.read_csv(project / "results/clips/clips.csv")
    t2 = pd.read_csv(project / "results/tables/table2.csv")
    for feature, shape in (("eyes_resnet", (32, 88, 512)), ("wav2vec2_large", (32, 146, 48))):
        folds = []
        for k in (0, 1):
            metrics = json.loads(
                (
                    project / f"results/finetune/{feature}/multiclass/all/seed1/fold{k}/metrics.json"
                ).read_text()
            )
            assert metrics["n_train"] == 16 and metrics["n_test"] == 16 and metrics["device"] == "cpu"
            index = pd.read_csv(project / f"results/features/{feature}/fold{k}/index.csv")
            assert index["clip"].tolist() == clips["clip"].tolist()
            folds.append(np.load(project / f"results/features/{feature}/fold{k}/features.npy"))
            assert folds[-1].shape == shape and np.isfinite(folds[-1]).all()
        assert not np.allclose(folds[0], folds[1])  # each fold's own fine-tuned backbone
        assert t2[t2.configuration == feature]["n_folds"].tolist() == [2]
    # the patches the ResNets saw: the demo's 24 x 24, 10 fine-tuning frames and the central 88
    sidecar = json.loads((project / "results/patches/Actor_03/01-01-04-01-01-01-03.json").read_text())
    assert sidecar["size"] == 24 and len(sidecar["frames"]["finetune"]) == 10
    assert len(sidecar["frames"]["central"]) == 88


def test_fusion_trains_on_each_folds_frozen_features_and_fills_its_cells(demo_run):
    project, _ = demo_run
    t2 = pd.read_csv(project / "results/tables/table2.csv").set_index("configuration")
    clips = pd.read_csv(project / "results/clips/clips.csv")
    for name, dims in (("eyes_resnet+lms", [512, 24]), ("face_kpd+wav2vec2_large", [780, 48])):
        assert t2.loc[name, "n_folds"] == 2 and 0 <= t2.loc[name, "mean"] <= 100
        backbone = 0 if name.startswith("eyes_resnet") else 1  # the branch with frozen per-fold features
        for k, s in itertools.product((0, 1), (1, 2)):
            folder = project / f"results/train/{name}/multiclass/all/seed{s}/fold{k}"
            metrics = json.loads((folder / "metrics.json").read_text())
            assert [b["feature"] for b in metrics["branches"]] == name.split("+")
            ck = torch.load(folder / "checkpoint.pt", weights_only=True)
            assert [b["in_features"] for b in ck["model_config"]["branches"]] == dims
            # that fold's frozen features, standardised with that fold's training clips
            key = name.split("+")[backbone]
            frozen = np.load(project / f"results/features/{key}/fold{k}/features.npy")
            train_rows = (clips["fold"] != k).to_numpy()
            expected = frozen[train_rows].mean(axis=(0, 1), dtype=np.float64)
            np.testing.assert_allclose(ck["mean"][backbone].numpy(), expected, rtol=1e-4, atol=1e-5)


def test_rerun_does_nothing_and_forced_rerun_keeps_one_run(demo_run, tmp_path):
    project = copy_of(demo_run[0], tmp_path / "p")
    again = snakemake(project)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    target = "results/train/lms/multiclass/all/seed1/fold1/metrics.json"
    before = json.loads((project / target).read_text())
    forced = snakemake(project, "--force", target)
    assert forced.returncode == 0, forced.stderr[-3000:]
    after = json.loads((project / target).read_text())
    assert after["accuracy"] == before["accuracy"]  # deterministic on CPU
    job = [r for r in mlflow_runs(project) if r[4] == "table2/lms/multiclass/all/seed1/fold1"]
    assert [r[3] for r in job].count("active") == 1 and len(job) == 2


def test_report_builds(demo_run, tmp_path):
    project = copy_of(demo_run[0], tmp_path / "p")
    result = snakemake(project, "--report", "results/report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (project / "results/report.html").read_text()
    assert len(html) > 10_000
    # every table and figure, under its caption's words
    for name in ("table1.tex", "table2.md", "table1_heatmap.png", "table2_grid.png", "table2_intervals.png"):
        assert name in html, name
    for words in ("Confusion matrices", "Training curves", "pooled", "95 % interval"):
        assert words in html, words


def test_bad_config_key_fails_before_any_job(tmp_path):
    config = small_config()
    config["training"]["learnig_rate"] = 0.1
    project = project_with(tmp_path / "p", config)
    result = snakemake(project)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "config key 'training'" in output and "learnig_rate" in output and "remove that key" in output
    assert not (project / "results").exists()


def test_pretrained_weights_elsewhere_must_exist_before_any_job(tmp_path):
    # A user's own copy of the weights, named in config: the DAG needs it (no prefetch rule writes it there)
    # and says which file is missing before anything runs; nothing falls back to random weights.
    config = small_config()
    config["backbones"]["resnet"].update({"init": "pretrained", "layers": None, "path": "/data/w/resnet"})
    project = project_with(tmp_path / "p", config)
    result = snakemake(project, "-n")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Missing input files" in output and "affected files:\n        /data/w/resnet" in output


def test_out_of_range_value_names_the_key(tmp_path):
    config = small_config()
    config["training"]["hyperparameters"]["lms"]["binary"]["batch_size"] = 0
    project = project_with(tmp_path / "p", config)
    result = snakemake(project, "-n")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "batch_size" in output and "minimum" in output


def test_corrupt_archive_fails_clearly_and_leaves_nothing(demo_run, tmp_path):
    demo_project, _ = demo_run
    project = project_with_corrupt_archive(demo_project, tmp_path)
    result = snakemake(project, "--keep-going", "results/clips/clips.csv")
    assert result.returncode != 0
    log = (project / "logs/extract_clips/03.log").read_text()
    assert "Video_Speech_Actor_03.zip" in log
    assert not (project / "results/clips/Actor_03").exists()
    assert not any(p.name.startswith(".tmp") for p in (project / "results/clips").iterdir())
    assert (project / "results/clips/Actor_01").is_dir()  # the good archives are done


def test_truncated_mp4_fails_with_the_file_named(demo_run, tmp_path):
    demo_project, _ = demo_run

    def truncate_one_clip(src, dest):
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
            for info in zin.infolist():
                data = zin.read(info)
                if info.filename.endswith("01-01-03-01-01-01-02.mp4"):
                    data = data[: len(data) // 3]
                zout.writestr(info, data)

    archives = copy_archives(
        demo_project / "results/demo/archives",
        tmp_path / "archives",
        {"Video_Speech_Actor_02.zip": truncate_one_clip},
    )
    project = project_with(tmp_path / "p", small_config(archives_dir=str(archives), demo=None))
    result = snakemake(project, "--keep-going", "results/audio/Actor_02.npz", "results/audio/Actor_01.npz")
    assert result.returncode != 0
    log = (project / "logs/extract_audio/02.log").read_text()
    assert "01-01-03-01-01-01-02.mp4" in log and "truncated" in log
    assert not (project / "results/audio/Actor_02.npz").exists()
    assert (project / "results/audio/Actor_01.npz").exists()


def test_download_rule_over_http_resumes_and_refuses_a_corrupt_archive(demo_run, tmp_path):
    """The download rule's real code path against the demo archives served on 127.0.0.1: actor 2's transfer
    is cut after 300 kB and resumed with a Range request; actor 3 arrives damaged and fails its md5."""
    demo_project, _ = demo_run
    folder = demo_project / "results/demo/archives"
    md5 = {
        f"Video_Speech_Actor_{a:02d}.zip": hashlib.md5(
            (folder / f"Video_Speech_Actor_{a:02d}.zip").read_bytes()
        ).hexdigest()
        for a in (1, 2, 3, 4)
    }
    server = ArchiveServer(
        folder, cut={"Video_Speech_Actor_02.zip": 300_000}, damaged={"Video_Speech_Actor_03.zip"}
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        project = project_with(
            tmp_path / "p", small_config(archives_dir=None, demo=None, base_url=url, md5=md5)
        )
        result = snakemake(project, "--keep-going", "results/clips/clips.csv")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode != 0  # actor 3 cannot be fetched intact
    assert ("Video_Speech_Actor_02.zip", "bytes=300000-") in server.requests
    downloads = project / "results/download"
    got = hashlib.md5((downloads / "Video_Speech_Actor_02.zip").read_bytes()).hexdigest()
    assert got == md5["Video_Speech_Actor_02.zip"]
    record = json.loads((downloads / "Video_Speech_Actor_02.json").read_text())
    assert record["md5"] == got and record["source"].startswith("http://127.0.0.1:")
    assert (project / "results/clips/Actor_02").is_dir()
    log = (project / "logs/download_archive/03.log").read_text()
    assert "Video_Speech_Actor_03.zip" in log and md5["Video_Speech_Actor_03.zip"] in log
    assert sorted(p.name for p in downloads.iterdir() if "03" in p.name) == []  # no archive, part or record
    assert not (project / "results/clips/clips.csv").exists()


def test_conda_environment_installs_this_checkout(tmp_path):
    """Under --software-deployment-method conda every rule names envs/avemotion.yaml, and its post-deploy
    script installs the project from the checkout it belongs to (wherever Snakemake copied the yaml)."""
    rules = [path.read_text() for path in (ROOT / "workflow/rules").glob("*.smk")]
    n_rules = sum(len(re.findall(r"^rule \w+:", text, re.MULTILINE)) for text in rules)
    assert sum(text.count('conda:\n        "../../envs/avemotion.yaml"') for text in rules) == n_rules
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\necho "$@" > "$ARGS"\n')
    (fake / "python").chmod(0o755)
    subprocess.run(
        ["bash", str(ROOT / "envs/avemotion.post-deploy.sh")],
        cwd=tmp_path,
        env={"PATH": f"{fake}:/usr/bin:/bin", "ARGS": str(tmp_path / "args")},
        check=True,
    )
    args = (tmp_path / "args").read_text().split()
    assert args[:3] == ["-m", "pip", "install"] and args[-2] == "-e"
    assert (Path(args[-1]) / "pyproject.toml").is_file() and Path(args[-1]) == ROOT


def test_the_slurm_profile_turns_the_full_reproduction_into_140_slurm_jobs(tmp_path):
    """Snakemake's own grouping (tests/cluster/slurm_jobs.py) of the 554-job DAG under the slurm profile."""
    project = copy_project(tmp_path / "p")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests/cluster/slurm_jobs.py")],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads(result.stdout.splitlines()[-1])
    assert counts["per_group_or_rule"] == {
        "unpack": 1,  # 24 extract_clips
        "build_clip_table": 1,
        "actor": 4,  # 24 extract_audio + 24 (extract_openface -> crop_patches), 12 pieces per job
        "features": 1,  # 5 extract_features
        "finetune_binary": 20,
        "finetune_multiclass": 20,
        "extract_frozen": 20,
        "train": 72,  # (25 train_binary + 95 train_multiclass) x 3 seeds, 5 per job
        "aggregate": 1,  # build_tables, draw_figures, log_parent_runs
    }
    assert counts["total"] == 140
