"""The workflow on a real SLURM cluster: slurmctld, slurmd and munged started on this machine by
tests/cluster/slurm.sh (Debian's slurm-wlm 22.05), jobs submitted through workflow/profiles/slurm as shipped.

The slice: the small demo's archives (copied from the local run), the clips, audio, LMS features and two
Wav2Vec2-L fine-tunings with their frozen features (the GPU rules: gpu partition, one GPU each), the LMS models
of both tables, and the aggregation with its MLflow parent runs, logged into the profile's file store. Every
output is compared with the local run of the same config (``demo_run``), and the SLURM side is read from
``scontrol show job``: partition, GPUs, state and how many sbatch jobs the groups made.

Needs root (to install slurm-wlm and munge and to run the daemons) or an installed SLURM; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import record_setup, slurm_installed
from mlflow.tracking import MlflowClient

from avemotion import config as avcfg

from .conftest import BIN, ROOT, copy_archives, project_with, project_with_corrupt_archive, small_config

SCRIPT = ROOT / "tests" / "cluster" / "slurm.sh"
# The slice's Table 2 cells: a speech feature, a fine-tuned backbone (GPU rules) and nothing that needs the face.
SLICE = {"table1": ["lms"], "table2": ["lms", "wav2vec2_large"]}
# What a cluster without slurmdbd needs (README "Running on a cluster"), and a first status check after 2 s
# instead of 40 (each of the slice's dependency levels would wait that long).
NO_ACCOUNTING = (
    "--slurm-status-command",
    "squeue",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks",
    "2",
)
GPU_RULES = {"finetune_binary", "finetune_multiclass", "extract_frozen"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A single-node SLURM cluster for this module; every daemon it starts is stopped at the end."""
    if shutil.which("sbatch") is None and os.geteuid() != 0:
        pytest.skip("SLURM is not installed and installing slurm-wlm needs root")
    start = time.monotonic()
    slurm_installed(tmp_path_factory)  # started in the background when the session began
    folder = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURMCTLD_PORT": str(free_port()), "SLURMD_PORT": str(free_port())}
    subprocess.run([SCRIPT, "start", folder], check=True, env=env, timeout=900)
    pids = [int((folder / name).read_text()) for name in ("slurmctld.pid", "slurmd.pid", "munge/munged.pid")]
    record_setup(tmp_path_factory, "slurm cluster (install and start)", time.monotonic() - start)
    try:
        yield folder
    finally:
        subprocess.run([SCRIPT, "stop", folder], check=True, timeout=60)
        alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        assert not alive, f"daemons still running after stop: {alive}"


def slurm_snakemake(project: Path, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(project), "MLFLOW_TRACKING_URI": ""}
    return subprocess.run(
        [str(BIN / "snakemake"), "--workflow-profile", "workflow/profiles/slurm", *NO_ACCOUNTING, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def slurm_jobs(project: Path) -> list[dict[str, str]]:
    """Every job of the cluster submitted from ``project`` (``scontrol show job``: finished jobs stay MinJobAge)."""
    shown = subprocess.run(
        ["scontrol", "show", "job", "--oneliner"], capture_output=True, text=True, check=True
    ).stdout
    jobs = [
        dict(field.split("=", 1) for field in line.split() if "=" in field) for line in shown.splitlines()
    ]
    return [job for job in jobs if job.get("WorkDir") == str(project)]


@pytest.fixture(scope="module")
def slurm_run(cluster, demo_run, tmp_path_factory):
    """The slice run through the slurm profile, from the archives the local run generated."""
    local, _ = demo_run
    folder = tmp_path_factory.mktemp("slurm-run")
    archives = copy_archives(local / "results/demo/archives", folder / "archives")
    config = small_config(archives_dir=str(archives), demo=None)
    config["experiments"] = SLICE
    # One job per configuration and fold on the cluster (config.yaml's default), against the local run's grouped
    # folds and configurations: the
    # outputs compared below are the same bytes either way.
    config["jobs"]["group_folds"] = False
    config["jobs"]["configurations_per_job"] = 1
    project = project_with(folder / "project", config)
    predicted = subprocess.run(
        [str(BIN / "python"), str(ROOT / "tests/cluster/slurm_jobs.py")],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[-1]
    result = slurm_snakemake(project)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return project, local, config, result, json.loads(predicted)


def test_outputs_equal_the_local_runs(slurm_run):
    project, local, config, _, _ = slurm_run
    arrays = ["results/features/lms/features.npy"] + [
        f"results/features/wav2vec2_large/fold{fold}/features.npy" for fold in range(2)
    ]
    for name in arrays:
        assert np.array_equal(np.load(project / name), np.load(local / name)), name
    for actor in range(1, 5):
        ours, theirs = (np.load(p / f"results/audio/Actor_{actor:02d}.npz") for p in (project, local))
        assert all(np.array_equal(ours[k], theirs[k]) for k in theirs.files)
    jobs = avcfg.fold_jobs(config)
    # LMS binary (8 emotions x 2 folds x 2 seeds), LMS 8-class (2 folds x 2 seeds), Wav2Vec2-L (2 folds, 1 seed)
    assert len(jobs) == 8 * 2 * 2 + 2 * 2 + 2
    for job in jobs:
        folder = avcfg.job_dir(*job)
        for name in ("metrics.json", "predictions.csv", "confusion.csv"):
            assert (project / folder / name).read_bytes() == (local / folder / name).read_bytes(), folder
    # The tables' cells of the slice: the same numbers (the local run has more cells).
    for table in ("table1", "table2"):
        ours = pd.read_csv(project / f"results/tables/{table}.csv").dropna(subset=["mean"])
        theirs = pd.read_csv(local / f"results/tables/{table}.csv")
        merged = ours.merge(theirs, on=[c for c in ours.columns if c in ("configuration", "emotion")])
        assert len(merged) == len(ours) > 0
        for column in ("n_seeds", "mean", "std_folds", "std_seeds", "ci_low", "ci_high", "pooled"):
            # NaN where a cell has no such value (one seed: no spread across seeds) on both sides
            assert np.array_equal(merged[f"{column}_x"], merged[f"{column}_y"], equal_nan=True), (
                table,
                column,
            )


def test_gpu_rules_land_on_the_gpu_partition_and_groups_batch_the_small_jobs(slurm_run):
    project, _, _, result, predicted = slurm_run
    jobs = slurm_jobs(project)
    assert len(jobs) == predicted["total"]  # what tests/cluster/slurm_jobs.py counts from the DAG
    assert jobs and all(job["JobState"] == "COMPLETED" for job in jobs)
    by_rule = {}
    for job in jobs:
        # The plugin's comment: "rule_<rule>_wildcards_..." for a job, "rule_<group>_<rules>" for a group job.
        by_rule.setdefault(job["Comment"].removeprefix("rule_").split("_wildcards")[0], []).append(job)
    gpu = [job for name, found in by_rule.items() if name in GPU_RULES for job in found]
    cpu = [job for name, found in by_rule.items() if name not in GPU_RULES for job in found]
    assert len(gpu) == 4  # 2 folds x (fine-tuning, frozen features)
    assert all(job["Partition"] == "gpu" and job.get("TresPerJob") == "gres:gpu:1" for job in gpu)
    assert all(job["Partition"] == "cpu" and "TresPerJob" not in job for job in cpu)
    # Groups: 4 actors unzipped in one job, their 4 audio arrays in one, the 8 LMS training jobs (2 folds of
    # each table, 2 seeds: every seed a job of its own) in 2 of up to 5; the fine-tunings and frozen features
    # one job each.
    assert len(by_rule["unpack_extract_clips"]) == 1
    assert len(by_rule["actor_extract_audio"]) == 1
    assert len(by_rule["train_train_binary_train_multiclass"]) == 2
    assert len(jobs) == 1 + 1 + 2 + 1 + 4 + 1 + 1  # + build_clip_table, features, GPU jobs, aggregation
    assert len(by_rule["aggregate_build_tables_draw_figures_log_parent_runs"]) == 1
    # Downloads are local rules: never a SLURM job.
    assert not any(name.startswith("download") for name in by_rule)
    submitted = result.stdout.count("has been submitted with SLURM jobid") + result.stderr.count(
        "has been submitted with SLURM jobid"
    )
    assert submitted == len(jobs)


def test_every_fold_job_is_one_finished_run_in_the_file_store(slurm_run):
    project, local, config, _, _ = slurm_run
    store = project / "results/mlflow/mlruns"
    assert store.is_dir() and not (project / "results/mlflow/mlflow.db").exists()
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    ours, theirs = MlflowClient(store.as_uri()), MlflowClient(f"sqlite:///{local}/results/mlflow/mlflow.db")
    experiments = ("avemotion/table1-binary", "avemotion/table2-multiclass")
    runs_by_job = {}
    for name in experiments:
        for run in ours.search_runs([ours.get_experiment_by_name(name).experiment_id], max_results=1000):
            if "avemotion.job" in run.data.tags:
                runs_by_job.setdefault(run.data.tags["avemotion.job"], []).append(run)
    assert len(runs_by_job) == len(avcfg.fold_jobs(config))
    assert all(len(found) == 1 and found[0].info.status == "FINISHED" for found in runs_by_job.values())
    # Nothing strayed into the Default experiment (concurrent jobs, one store).
    assert ours.search_runs(["0"]) == []
    local_ids = [theirs.get_experiment_by_name(name).experiment_id for name in experiments]
    for job, (run,) in runs_by_job.items():
        (twin,) = theirs.search_runs(local_ids, filter_string=f"tags.`avemotion.job` = '{job}'")
        timed = {"epoch_seconds"}  # wall-clock: the only metric that may differ
        assert {k: v for k, v in run.data.metrics.items() if k not in timed} == {
            k: v for k, v in twin.data.metrics.items() if k not in timed
        }, job
        assert set(run.data.metrics) == set(twin.data.metrics)
    parents = json.loads((project / "results/mlflow/parents.json").read_text())
    assert sorted(parents["table2"]) == ["lms", "wav2vec2_large"]


def test_a_failing_slurm_job_fails_the_workflow_and_names_its_log(cluster, demo_run, tmp_path):
    local, _ = demo_run
    project = project_with_corrupt_archive(local, tmp_path)
    result = slurm_snakemake(project, "results/clips/clips.csv", timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    (job,) = slurm_jobs(project)
    assert job["JobState"] == "FAILED"
    slurm_log = project / f".snakemake/slurm_logs/group_unpack_extract_clips/{job['JobId']}.log"
    assert str(slurm_log) in output, output[-3000:]
    # The SLURM log holds the job's own error, which names the rule's log; that one names the archive.
    assert "logs/extract_clips/03.log" in slurm_log.read_text()
    assert "Video_Speech_Actor_03.zip" in (project / "logs/extract_clips/03.log").read_text()
    assert not (project / "results/clips/Actor_03").exists()
