"""SIGKILL at a random point of a stage's job, then the resume a user runs; nothing lost, nothing duplicated.

Each case copies the finished small demo project (``demo_run``: 4 actors, 2 folds, every stage) and asks for
one job of a stage to run again (``snakemake <its output> --forcerun <its output>``; for training the whole
workflow, so everything downstream of it runs again too), killing the job with SIGKILL once it has used a random
fraction of the CPU time it took in the finished project (its Snakemake benchmark; CPU time, not wall time, so
that the point does not move with the machine's load: the suite runs in two workers) after it starts (for
training: after it opens its first MLflow run, so the kill cuts a run short; the seed picks the fraction):

- ``job``: only the job's process dies (the OOM killer); Snakemake sees the job fail and stops;
- ``node``: Snakemake and the job die together (a node lost, ``kill -9`` of the whole session), leaving
  Snakemake's lock and its incomplete-job markers behind.

Then the README's resume: ``snakemake --unlock`` after a lost node, then the same command again (the
profiles set ``--rerun-incomplete``), with a consumer of the killed job's output added as a target where
there is a cheap one (tracking: the actor's patches; audio: the LMS features; a fine-tuning: its frozen
features), so the resume provably feeds the redone file to the next step. (A plain ``snakemake`` would not
do: after a job fails Snakemake deletes its outputs, and it does not rebuild a missing intermediate file
whose consumers are up to date.) The checks: every result file (downloaded archive, clips,
tracking, patches, audio, features, fold metrics, predictions, confusion matrices, training curves without
their wall-clock column, tables) is the uninterrupted run's, byte for byte (every step, training included,
is deterministic on the CPU: the stated tolerance is zero); every checkpoint holds the same tensors; no
temporary file or build folder of a killed write is left; every fold job has exactly one active FINISHED
MLflow run, no run is left RUNNING, and the runs the killed attempt opened ended KILLED (or FINISHED, for a
fold job the attempt completed before it died), all of them superseded by the resume's; each configuration
of each table has exactly one active parent run, which its fold runs point to (after a resume that logged
the parents again).

The download is killed in a fresh project fetching from a slow HTTP server on 127.0.0.1: the resume must
continue the part file with a Range request and give the demo's archive and clips.

Stages covered: download, tracking, patches, audio, each feature kind (engineered: LMS, Face KPD; frozen
backbone: Eyes ResNet, Wav2Vec2-L), backbone fine-tuning, training (TIM-Net), aggregation (tables, parent
runs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
from conftest import copy_of
from mlflow.tracking import MlflowClient
from workflow.conftest import BIN, ArchiveServer, project_with, small_config, snakemake

from avemotion import runs


@dataclass(frozen=True)
class Stage:
    """One job of a stage: ``target`` a file it writes, ``words`` of its command line, ``benchmark`` its
    Snakemake benchmark (its recorded run time), ``resume`` the resume's extra targets (a consumer of the
    output); ``whole``: the kill run and the resume ask for the whole workflow, the job forced; ``in_run``: the
    random point is counted from the job's first MLflow run opening (its imports take half of its time, more on
    a loaded machine, and a kill before any run exists would not test the reaping)."""

    target: str
    words: tuple[str, ...]
    benchmark: str
    resume: tuple[str, ...] = ()
    whole: bool = False
    in_run: bool = False


STAGES = {
    "tracking": Stage(
        "results/tracking/Actor_02",
        ("avemotion.tracking", "--actor 02"),
        "benchmarks/extract_openface/02.tsv",
        resume=("results/patches/Actor_02",),
    ),
    "patches": Stage(
        "results/patches/Actor_03", ("avemotion.patches", "--actor 03"), "benchmarks/crop_patches/03.tsv"
    ),
    "audio": Stage(
        "results/audio/Actor_04.npz",
        ("avemotion.audio", "--actor 04"),
        "benchmarks/extract_audio/04.tsv",
        resume=("results/features/lms/features.npy",),
    ),
    "features/lms": Stage(
        "results/features/lms/features.npy",
        ("avemotion.features lms",),
        "benchmarks/extract_features/lms.tsv",
    ),
    "features/face_kpd": Stage(
        "results/features/face_kpd/features.npy",
        ("avemotion.features face_kpd",),
        "benchmarks/extract_features/face_kpd.tsv",
    ),
    "features/eyes_resnet": Stage(
        "results/features/eyes_resnet/fold1/features.npy",
        ("avemotion.finetune frozen", "--feature eyes_resnet"),
        "benchmarks/extract_frozen/eyes_resnet/folds.tsv",
    ),
    "features/wav2vec2_large": Stage(
        "results/features/wav2vec2_large/fold0/features.npy",
        ("avemotion.finetune frozen", "--feature wav2vec2_large"),
        "benchmarks/extract_frozen/wav2vec2_large/folds.tsv",
    ),
    "finetune": Stage(
        "results/finetune/wav2vec2_large/multiclass/all/seed1/fold0/metrics.json",
        ("avemotion.finetune train", "wav2vec2_large"),
        "benchmarks/finetune_multiclass/wav2vec2_large/seed1/folds.tsv",
        resume=("results/features/wav2vec2_large/fold0/features.npy",),
    ),
    "training": Stage(
        "results/train/lms/multiclass/all/seed1/fold0/metrics.json",
        ("avemotion.train", "/lms/multiclass/all/seed1/fold1"),
        "benchmarks/train_multiclass_group1/seed1/folds.tsv",
        whole=True,
        in_run=True,
    ),
    "aggregation/tables": Stage(
        "results/tables/table2.csv", ("avemotion.tables",), "benchmarks/build_tables/build_tables.tsv"
    ),
    "aggregation/parents": Stage(
        "results/mlflow/parents.json",
        ("avemotion.runs parents",),
        "benchmarks/log_parent_runs/log_parent_runs.tsv",
    ),
}
CASES = [
    ("tracking", 1, "job"),
    ("tracking", 2, "node"),
    ("patches", 3, "node"),
    ("audio", 4, "job"),
    ("features/lms", 5, "node"),
    ("features/face_kpd", 6, "job"),
    ("features/eyes_resnet", 7, "node"),
    ("features/wav2vec2_large", 8, "job"),
    ("finetune", 9, "job"),
    ("training", 3, "job"),
    ("training", 4, "node"),
    ("aggregation/tables", 10, "node"),
    ("aggregation/parents", 11, "job"),
    ("aggregation/parents", 12, "node"),
]
# What `make reproduce` runs with (it sets --rerun-incomplete): the same command again is this one.
PROFILE = ("--workflow-profile", "workflow/profiles/default")
SKIP = ("results/mlflow", "results/figures", "results/report.html")


def result_files(project: Path) -> dict[str, Path]:
    """Every result file a rerun must reproduce, by relative path."""
    out = {}
    for path in sorted((project / "results").rglob("*")):
        rel = path.relative_to(project).as_posix()
        if path.is_file() and not rel.startswith(SKIP):
            out[rel] = path
    return out


def same(a: Path, b: Path) -> bool:
    if a.name == "history.csv":  # its epoch_seconds column is a timing
        return (
            pd.read_csv(a).drop(columns="epoch_seconds").equals(pd.read_csv(b).drop(columns="epoch_seconds"))
        )
    if a.suffix == ".pt":
        x, y = (torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in (a, b))
        return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    return a.read_bytes() == b.read_bytes()


def recorded_cpu_seconds(project: Path, benchmark: str) -> float:
    """The CPU time the job took in the baseline run (Snakemake's benchmark, sampled: a slight underestimate):
    a point of the job's work that does not move with the machine's load, where wall time does (the baseline
    may run beside other tests, a kill case alone, or the other way round)."""
    return float(pd.read_csv(project / benchmark, sep="\t")["cpu_time"].iloc[-1])


def cpu_seconds(process: psutil.Process) -> float:
    """The CPU time ``process`` and its descendants have used so far (those that ended and were waited for
    included)."""
    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        for p in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    return total


def find_job(session: psutil.Process, words: tuple[str, ...]) -> psutil.Process | None:
    """The job's Python process among the session's descendants (not the shell that started it)."""
    for child in session.children(recursive=True):
        try:
            args = child.cmdline()
        except psutil.Error:
            continue
        if args and Path(args[0]).name.startswith("python") and all(w in " ".join(args) for w in words):
            return child
    return None


def kill_during(
    project: Path,
    args: list[str],
    words: tuple[str, ...],
    delay: float,
    mode: str,
    ready: Callable[[], bool] = lambda: True,
    clock: str = "cpu",
) -> tuple[bool, float]:
    """Run ``snakemake args`` and SIGKILL the job ``delay`` s after it starts and ``ready()`` holds (s of the
    job's CPU time, ``clock="cpu"``, or of wall time, ``"wall"``), at a moment
    ``ready()`` holds again (training: while one of its runs is open, so the kill cuts a run short; a job of
    several configurations, folds or seeds has gaps between its runs, where loading and writing happen);
    whether the kill hit the job while it ran, and when (ms since the epoch, MLflow's clock)."""
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(project), "MLFLOW_TRACKING_URI": ""}
    command = [str(BIN / "snakemake"), "--cores", "2", *PROFILE, *args]
    session = subprocess.Popen(
        command,
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    parent = psutil.Process(session.pid)
    job, deadline = None, time.monotonic() + 300
    while job is None and session.poll() is None and time.monotonic() < deadline:
        job = find_job(parent, words)
        time.sleep(0.02)
    landed, killed_at = False, time.time() * 1000
    if job is not None:
        while not ready() and alive(job):
            time.sleep(0.05)
        if clock == "wall":
            time.sleep(delay)
        else:
            until = cpu_seconds(job) + delay
            while alive(job) and cpu_seconds(job) < until:
                time.sleep(0.01)
        while not ready() and alive(job):
            time.sleep(0.02)
        landed = alive(job)
        killed_at = time.time() * 1000
        if mode == "node":
            os.killpg(session.pid, signal.SIGKILL)
        else:
            try:
                with_job = [job, *job.children(recursive=True)]
            except psutil.NoSuchProcess:  # it ended on its own meanwhile
                with_job = []
            for p in with_job:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.send_signal(signal.SIGKILL)
    session.wait(timeout=300)
    return landed, killed_at


def open_runs(project: Path) -> set[str]:
    """The ids of the store's RUNNING runs, read straight from its SQLite file: a few milliseconds, where
    MlflowClient's search takes a large part of a second on a loaded machine, and a small demo's run can be
    over by then (the kill must land while a run is open)."""
    store = project / "results/mlflow/mlflow.db"
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)) as db:
        return {row[0] for row in db.execute("select run_uuid from runs where status = 'RUNNING'")}


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def job_runs(project: Path) -> list:
    """Every fold-job and parent run of the project's store, active and deleted."""
    uri = f"sqlite:///{project / 'results/mlflow/mlflow.db'}"
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(ids, run_view_type=3, max_results=10000)  # active and deleted
    return [r for r in found if runs.JOB_TAG in r.data.tags or runs.PARENT_TAG in r.data.tags]


def leftovers(project: Path) -> list[str]:
    """Temporary files and build folders of killed writes (``.<name>.*.tmp``, ``.<name>.tmp-<pid>``,
    ``.tmp-<name>``, ``<name>.part``) anywhere under results/."""
    found = []
    for path in (project / "results").rglob("*"):
        name = path.name
        if name.endswith(".part") or (name.startswith(".") and (".tmp" in name or name.startswith(".tmp-"))):
            found.append(path.relative_to(project).as_posix())
    return sorted(found)


def compare(want: dict[str, Path], got: dict[str, Path]) -> tuple[list[str], list[str]]:
    """(missing, different) relative paths of ``got`` against ``want``."""
    missing = sorted(set(want) - set(got))
    differ = sorted(p for p in want.keys() & got.keys() if not same(want[p], got[p]))
    return missing, differ


def check_runs(
    project: Path, before: set[str], killed_at: float, expect_killed: bool, parents_ran: bool
) -> int:
    """The MLflow checks of the module docstring (the parents' only where the resume logged them again); the
    number of runs checked."""
    found = job_runs(project)
    active = [r for r in found if r.info.lifecycle_stage == "active"]
    by_job: dict[str, list] = {}
    for r in active:
        if runs.JOB_TAG in r.data.tags:
            by_job.setdefault(r.data.tags[runs.JOB_TAG], []).append(r.info.status)
    assert all(statuses == ["FINISHED"] for statuses in by_job.values()), by_job
    jobs = {r.data.tags[runs.JOB_TAG] for r in found if runs.JOB_TAG in r.data.tags}
    assert len(by_job) == len(jobs)  # no fold job without its run
    assert not [r for r in found if r.info.status == "RUNNING"]
    parents: dict[str, list] = {}
    for r in active:
        if runs.PARENT_TAG in r.data.tags:
            parents.setdefault(r.data.tags[runs.PARENT_TAG], []).append(r.info)
    assert all(len(p) == 1 and p[0].status == "FINISHED" for p in parents.values()), parents
    for r in active:  # "table2/lms/multiclass/all/fold0" is a child of the parent "table2/lms"
        if parents_ran and runs.JOB_TAG in r.data.tags:
            configuration = "/".join(r.data.tags[runs.JOB_TAG].split("/")[:2])
            assert r.data.tags.get(runs.PARENT_ID_TAG) == parents[configuration][0].run_id
    # The killed attempt's runs: superseded (deleted) by the resume's; KILLED where the kill cut them short
    # (SIGKILL: reaped when the job ran again), FINISHED where the attempt had finished that fold job or parent
    # before it died (Snakemake then discarded its files with the rest of the job's outputs).
    attempt = [r for r in found if r.info.run_id not in before and r.info.start_time <= killed_at]
    assert all(r.info.lifecycle_stage == "deleted" for r in attempt if r.info.status != "FINISHED")
    assert all(r.info.status in ("KILLED", "FAILED", "FINISHED") for r in attempt)
    if expect_killed:
        assert any(r.info.status == "KILLED" for r in attempt), [r.info.status for r in attempt]
    return len(found)


@pytest.mark.parametrize(("stage", "seed", "mode"), CASES, ids=[f"{s}-{m}-seed{k}" for s, k, m in CASES])
def test_a_job_killed_at_a_random_point_resumes_to_the_same_results(
    demo_run, tmp_path, stage, seed, mode, ledger
):
    baseline, _ = demo_run
    project = copy_of(baseline, tmp_path / "p")
    job = STAGES[stage]
    rng = random.Random(seed)
    before = {r.info.run_id for r in job_runs(project)}
    if job.in_run:  # a point of the job's training, after its imports

        def ready() -> bool:
            return bool(open_runs(project) - before)

        delay = rng.uniform(0.0, 0.4) * recorded_cpu_seconds(baseline, job.benchmark)
    else:
        ready, delay = (lambda: True), rng.uniform(0.1, 0.9) * recorded_cpu_seconds(baseline, job.benchmark)

    command = ["--forcerun", job.target] if job.whole else [job.target, "--forcerun", job.target]
    landed, killed_at = kill_during(project, command, job.words, delay, mode, ready)
    ledger(stage, faults=1, kills_landed=int(landed))

    if mode == "node":  # what the README says to do after a lost node: clear the dead session's lock
        assert snakemake(project, *PROFILE, "--unlock").returncode == 0
    # The same command again, a consumer of the output added where there is a cheap one.
    resumed = snakemake(
        project, *PROFILE, *(command if job.whole else [job.target, *job.resume, *command[1:]])
    )
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    ledger(stage, reruns=1)

    assert leftovers(project) == [], "temporary files of a killed write were left behind"
    missing, differ = compare(result_files(baseline), result_files(project))
    ledger(stage, files_compared=len(result_files(baseline)), lost=len(missing) + len(differ))
    assert missing == [] and differ == []
    expect_killed = landed and stage == "training"  # a fine-tuning's kill may land before it opens a run
    parents_ran = job.whole or stage == "aggregation/parents"
    ledger(stage, runs_checked=check_runs(project, before, killed_at, expect_killed, parents_ran))


@pytest.mark.parametrize(("seed", "mode"), [(13, "job"), (14, "node")])
def test_a_download_killed_midway_resumes_its_part_file(demo_run, tmp_path, seed, mode, ledger):
    """A fresh project fetches Actor 02's archive from a slow server (16 kB per 40 ms) and is killed during
    the transfer; the resume continues the part file with a Range request and gives the demo's archive and
    its clips."""
    baseline, _ = demo_run
    folder = baseline / "results/demo/archives"
    name = "Video_Speech_Actor_02.zip"
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.glob("Video_Speech_Actor_*.zip")}
    server = ArchiveServer(folder, pace=0.04)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        project = project_with(
            tmp_path / "p", small_config(archives_dir=None, demo=None, base_url=url, md5=md5)
        )
        transfer = (folder / name).stat().st_size / 16384 * server.pace
        delay = 1.0 + random.Random(seed).uniform(0.1, 0.8) * transfer  # 1 s: the job's start-up
        words = ("avemotion.download fetch", name)
        landed, _ = kill_during(project, [f"results/download/{name}"], words, delay, mode, clock="wall")
        ledger("download", faults=1, kills_landed=int(landed))
        part = project / "results/download" / (name + ".part")
        kept = part.stat().st_size if part.exists() else 0
        if mode == "node":
            assert snakemake(project, *PROFILE, "--unlock").returncode == 0
        resumed = snakemake(project, *PROFILE, "results/clips/Actor_02")
        assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
        ledger("download", reruns=1)
    finally:
        server.shutdown()
        server.server_close()
    if kept:  # the kill came after the first bytes reached the disk: the resume continued them
        assert (name, f"bytes={kept}-") in server.requests, (kept, server.requests)
    assert leftovers(project) == []
    want = {k: v for k, v in result_files(baseline).items() if "Actor_02" in k and not k.endswith(".json")}
    want = {k: v for k, v in want.items() if k.startswith(("results/download/", "results/clips/"))}
    got = result_files(project)
    missing, differ = compare(want, got)
    ledger("download", files_compared=len(want), lost=len(missing) + len(differ))
    assert len(want) > 1 and missing == [] and differ == []
    record = json.loads((project / "results/download/Video_Speech_Actor_02.json").read_text())
    assert record["md5"] == md5[name]
