"""Resources that give out under a job: the disk fills while it writes, the MLflow server is down or dies.

Disk full: every output goes through ``avemotion.io`` (a temporary file beside it, renamed when whole; a job's
files as one group). The fault is injected two ways: an ``open`` whose files raise ``OSError(ENOSPC)`` after
a given number of bytes (what ``write(2)`` does on a full filesystem; no privileges needed), and, where the
tests run as root, a real full tmpfs, where numpy and torch fail at the C level in their own ways. Each case
checks the one error (it names the file, says to free space and rerun; no traceback), exit status 1, the
previous good files byte for byte, and that no temporary file is left; then that the same command, once
there is room, writes different files (so the comparison could have failed).

MLflow server down (``avemotion.runs``): a job's first request is its run's experiment lookup, before it
trains, so a job pointed at a server that does not answer fails fast: nothing trained, nothing written, one
error naming the URI and what to do, after MLflow's retries, which the project bounds (``runs.HTTP_DEFAULTS``,
checked with the production settings in a subprocess). A server that dies while a job trains fails the job
when it logs, with the same error, after its files are written; its run stays RUNNING and the job's next
attempt marks it KILLED.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import dataclasses
import errno
import io as pyio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from avemotion import features, io, paper, runs, train
from avemotion.config import JOB_OUTPUTS, train_spec

ROOT = Path(__file__).resolve().parents[2]
# No retries: a refused connection fails at once. The timeout only bounds a live server's answers, which a
# loaded 2-core machine can delay by seconds; a dead one refuses the connection whatever it is.
FAST_MLFLOW = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


# ----------------------------------------------------------------------------------------------- helpers


class FullDisk:
    """A file on a device with ``room`` bytes left: a write beyond it lands what fits, then raises ENOSPC."""

    def __init__(self, f, room: int, hits: list[str]):
        self._f, self.room, self.hits = f, room, hits

    def write(self, data):
        n = len(data) if isinstance(data, str) else memoryview(data).nbytes
        if n > self.room:
            self._f.write(data[: self.room])
            self.room = 0
            self.hits.append(self._f.name)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= n
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def fill_disk_at(mp: pytest.MonkeyPatch, name: str, room: int) -> list[str]:
    """From now on, the temporary file of output ``name`` (``.name.*.tmp``) fills the disk after ``room``
    bytes. Returns the temporary files the fault hit."""
    hits: list[str] = []
    real_open = builtins.open

    def open_(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        base = os.path.basename(os.fspath(file)) if isinstance(file, str | os.PathLike) else ""
        if "w" in mode and base.startswith(f".{name}.") and base.endswith(".tmp"):
            return FullDisk(f, room, hits)
        return f

    mp.setattr(builtins, "open", open_)
    mp.setattr(pyio, "open", open_)  # Path.write_text opens through io.open
    return hits


def snapshot(paths) -> dict[Path, bytes]:
    return {Path(p): Path(p).read_bytes() for p in paths}


def changed(before: dict[Path, bytes]) -> list[str]:
    """The files of ``before`` that are not byte for byte what they were (or are gone)."""
    return [p.name for p, data in before.items() if not p.exists() or p.read_bytes() != data]


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


def one_error(err: str) -> str:
    """The single ``error:`` line of a failed command's stderr, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def features_inputs(folder: Path, seed: int) -> list[str]:
    """The lms extraction's inputs: a clip table and one actor's audio (random, ``seed``), 4 clips."""
    clips = [f"01-01-0{e}-01-01-01-01" for e in range(1, 5)]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"clip": clips}).to_csv(folder / "clips.csv", index=False)
    audio = np.random.default_rng(seed).normal(size=(len(clips), 140_800)).astype(np.float32)
    np.savez(folder / "Actor_01.npz", clips=np.array(clips), audio=audio)
    params = json.dumps({"n_mels": 24, "n_fft": 4800, "hop_length": 1600, "f_max": 17000.0})
    clips_csv, npz = str(folder / "clips.csv"), str(folder / "Actor_01.npz")
    return ["lms", "--clips", clips_csv, "--inputs", npz, "--params", params]


def train_inputs(folder: Path, seed: int) -> list[str]:
    """A training job's inputs: 24 actors x 8 emotions, (16 frames, 8 dims) random features (``seed``)."""
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(
        [
            {"clip": f"{a:02d}-{e}", "actor": a, "emotion": e, "label": i, "path": f"{a:02d}-{e}.mp4"}
            for a in range(1, 25)
            for i, e in enumerate(paper.CLASSES)
        ]
    )
    table.to_csv(folder / "clips.csv", index=False)
    np.save(folder / "f.npy", np.random.default_rng(seed).normal(size=(len(table), 16, 8)).astype(np.float32))
    pd.DataFrame({"clip": table["clip"], "row": np.arange(len(table))}).to_csv(
        folder / "index.csv", index=False
    )
    (folder / "m.json").write_text(json.dumps({"sha256": "0" * 64}))
    return [
        *("--features", str(folder / "f.npy"), "--index", str(folder / "index.csv")),
        *("--clips", str(folder / "clips.csv"), "--manifest", str(folder / "m.json")),
    ]


def tiny_spec(config: dict) -> str:
    spec = train_spec(config, "lms", "multiclass", "all", 0)
    small = {
        "epochs": 2,
        "channels": 8,
        "scales": 3,
        "batch_size": 32,
        "learning_rate": 0.01,
        "device": "cpu",
    }
    return dataclasses.replace(spec, **small, cpu_precision="float32", compile=False).to_json()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- disk full


@pytest.mark.parametrize(("name", "room"), [("features.npy", 1000), ("index.csv", 10)])
def test_a_full_disk_while_writing_features_keeps_the_previous_pair(tmp_path, capsys, ledger, name, room):
    out = tmp_path / "results" / "features" / "lms"
    targets = ["--out", str(out / "features.npy"), "--index", str(out / "index.csv")]
    assert features.main([*features_inputs(tmp_path / "a", seed=1), *targets]) == 0
    good = snapshot([out / "features.npy", out / "index.csv"])
    capsys.readouterr()

    new_inputs = features_inputs(tmp_path / "b", seed=2)  # other audio: other features
    with pytest.MonkeyPatch.context() as mp:
        hits = fill_disk_at(mp, name, room)
        code = features.main([*new_inputs, *targets])
    error = one_error(capsys.readouterr().err)
    lost = changed(good)
    ledger("features", faults=1, files_compared=len(good), lost=len(lost))
    assert len(hits) == 1  # the fault fired, on the file's temporary file
    assert code == 1
    assert error.startswith(f"error: cannot write {out / name} (no space left on device")
    assert "free space in" in error and "rerun" in error
    assert lost == []  # both files: the array is not replaced when its index does not fit
    assert temp_files(tmp_path) == []
    assert features.main([*new_inputs, *targets]) == 0  # room again: the rerun writes the new pair
    assert changed(good) == ["features.npy"]  # the index lists the same clips


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_job_outputs(
    full_config, tmp_path, capsys, ledger
):
    out = tmp_path / "results" / "train" / "lms" / "multiclass" / "all" / "fold0"
    job = ["--spec", tiny_spec(full_config), "--out", str(out)]
    assert train.main([*train_inputs(tmp_path / "a", seed=1), *job]) == 0
    good = snapshot(out / name for name in JOB_OUTPUTS)
    capsys.readouterr()

    new_inputs = train_inputs(tmp_path / "b", seed=2)
    with pytest.MonkeyPatch.context() as mp:
        hits = fill_disk_at(mp, "checkpoint.pt", 4096)
        code = train.main([*new_inputs, *job])
    error = one_error(capsys.readouterr().err)
    lost = changed(good)
    ledger("training", faults=1, files_compared=len(good), lost=len(lost))
    assert len(hits) == 1 and code == 1
    assert error.startswith(f"error: cannot write {out / 'checkpoint.pt'} (no space left on device")
    assert lost == []  # the four files written before the checkpoint are not replaced either
    assert temp_files(tmp_path) == []
    assert train.main([*new_inputs, *job]) == 0
    assert {"metrics.json", "predictions.csv", "checkpoint.pt"} <= set(changed(good))


@pytest.fixture
def full_tmpfs(tmp_path):
    """(a 1 MiB tmpfs, a function that fills it up, one that frees it); skipped where mounting is not
    permitted (not root, or no CAP_SYS_ADMIN in the container)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    filler = disk / "filler"

    def fill():
        with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        assert os.statvfs(disk).f_bavail == 0

    try:
        yield disk, fill, lambda: filler.unlink()
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def _npy(path):
    io.atomic_save_npy(path, np.arange(50_000, dtype=np.float64))


def _torch(path):
    with io.atomic_path(path) as tmp:
        io.write_torch(tmp, {"weight": torch.arange(50_000, dtype=torch.float64)})


def _text(path):
    io.atomic_write_text(path, "x" * 400_000)


@pytest.mark.parametrize("write", [_npy, _torch, _text], ids=["npy", "torch", "text"])
def test_a_really_full_filesystem_is_named_for_every_writer(full_tmpfs, write, ledger):
    """On a full device numpy's tofile says "N requested and M written" and torch's C++ writer "unexpected
    pos", neither with errno: the io writers go through Python's write, which raises ENOSPC."""
    disk, fill, _ = full_tmpfs
    path = disk / "output"
    path.write_bytes(b"previous good output")
    fill()
    with pytest.raises(io.DiskFullError) as e:
        write(path)
    lost = path.read_bytes() != b"previous good output"
    ledger("io", faults=1, files_compared=1, lost=int(lost))
    assert e.value.errno == errno.ENOSPC
    assert str(e.value).startswith(f"cannot write {path} (no space left on device, 0.0 MiB free there)")
    assert not lost and temp_files(disk) == []


def test_the_features_command_on_a_full_filesystem(full_tmpfs, tmp_path, ledger):
    """The CLI as the extract_features rule runs it, on a real full tmpfs."""
    disk, fill, free = full_tmpfs
    targets = ["--out", str(disk / "features.npy"), "--index", str(disk / "index.csv")]
    command = [sys.executable, "-m", "avemotion.features"]
    first = subprocess.run([*command, *features_inputs(tmp_path / "a", 1), *targets], capture_output=True)
    assert first.returncode == 0, first.stderr.decode()
    good = snapshot([disk / "features.npy", disk / "index.csv"])
    fill()
    new = [*command, *features_inputs(tmp_path / "b", 2), *targets]
    failed = subprocess.run(new, capture_output=True, text=True)
    lost = changed(good)
    ledger("features", faults=1, files_compared=len(good), lost=len(lost))
    assert failed.returncode == 1
    error = one_error(failed.stderr)
    assert error.startswith(f"error: cannot write {disk / 'features.npy'} (no space left on device")
    assert failed.stdout == "" and lost == [] and temp_files(disk) == []
    free()
    assert subprocess.run(new, capture_output=True).returncode == 0
    assert changed(good) == ["features.npy"]


# ------------------------------------------------------------------------------------------ MLflow down


def test_a_job_pointed_at_a_server_that_is_down_fails_before_training(
    full_config, tmp_path, capsys, monkeypatch, ledger
):
    for name, value in FAST_MLFLOW.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "fold0"
    job = [*train_inputs(tmp_path / "in", seed=1), "--spec", tiny_spec(full_config), "--out", str(out)]
    assert train.main(job) == 0  # an earlier good run of the job, untracked
    good = snapshot(out / name for name in JOB_OUTPUTS)
    capsys.readouterr()
    trained = []
    real_train_job = train.train_job
    monkeypatch.setattr(train, "train_job", lambda *a, **k: trained.append(1) or real_train_job(*a, **k))
    uri = f"http://127.0.0.1:{free_port()}"

    start = time.monotonic()
    code = train.main([*job, "--tracking-uri", uri])
    seconds = time.monotonic() - start
    error = one_error(capsys.readouterr().err)
    lost = changed(good)
    ledger("training", faults=1, files_compared=len(good), lost=len(lost))
    assert code == 1 and trained == []  # failed fast: nothing trained
    assert error.startswith(f"error: the MLflow tracking server {uri} does not answer (connection refused")
    assert "`make mlflow-ui`" in error and "config key mlflow.tracking_uri" in error
    assert lost == [] and temp_files(tmp_path) == []
    assert seconds < 10


def test_the_workflow_start_stops_with_the_same_error_when_the_server_is_down(monkeypatch, capsys, tmp_path):
    """The Snakefile's onstart (``python -m avemotion.runs init``) makes the first request of a workflow."""
    for name, value in FAST_MLFLOW.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"http://127.0.0.1:{free_port()}"
    assert runs.main(["init", "--uri", uri, "--root", str(tmp_path)]) == 1
    error = one_error(capsys.readouterr().err)
    assert error.startswith(f"error: the MLflow tracking server {uri} does not answer (connection refused")
    assert list(tmp_path.iterdir()) == []


def test_with_the_default_settings_a_job_gives_up_on_a_down_server_within_seconds(full_config, tmp_path):
    """MLflow alone retries 7 times for 246 s; the project's defaults (runs.HTTP_DEFAULTS) in a job run as the
    rules run it, with no MLFLOW_HTTP_* variable set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    out = tmp_path / "fold0"
    uri = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "avemotion.train", *train_inputs(tmp_path / "in", seed=1)]
    command += ["--spec", tiny_spec(full_config), "--out", str(out), "--tracking-uri", uri]
    start = time.monotonic()
    failed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    seconds = time.monotonic() - start
    assert failed.returncode == 1
    error = one_error(failed.stderr)
    assert error.startswith(f"error: the MLflow tracking server {uri} does not answer (connection refused")
    assert "; 3 retries)" in error
    assert not out.exists()
    assert seconds < 40  # 0 + 4 + 8 s of backoff, up to 3 s of jitter, the start-up


@contextlib.contextmanager
def mlflow_server(folder: Path):
    """A real MLflow tracking server on a free local port over a SQLite store in ``folder``: (its URI, the
    store's own URI, a function that kills it)."""
    port = free_port()
    db = f"sqlite:///{folder / 'mlflow.db'}"
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", db]
    command += ["--default-artifact-root", (folder / "artifacts").as_uri(), "--no-serve-artifacts"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = open(folder / "server.log", "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)

    def kill():
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)

    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (
                    folder / "server.log"
                ).read_text()
                time.sleep(0.2)
        yield uri, db, kill
    finally:
        kill()
        log.close()


def test_a_server_that_dies_while_a_job_trains_fails_the_job_once_and_its_next_attempt_reaps_the_run(
    full_config, tmp_path, capsys, monkeypatch, ledger
):
    for name, value in FAST_MLFLOW.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "store").mkdir()
    out = tmp_path / "fold0"
    job = [*train_inputs(tmp_path / "in", seed=1), "--spec", tiny_spec(full_config), "--out", str(out)]
    with mlflow_server(tmp_path / "store") as (uri, db, kill):
        names = [runs.experiment_name("avemotion", task) for task in runs.EXPERIMENTS]
        runs.init_store(uri, names, tmp_path / "store" / "artifacts")  # the workflow's onstart
        real_train_job = train.train_job

        def train_then_lose_the_server(*args, **kwargs):
            result = real_train_job(*args, **kwargs)
            kill()
            return result

        monkeypatch.setattr(train, "train_job", train_then_lose_the_server)
        start = time.monotonic()
        code = train.main([*job, "--tracking-uri", uri])
        seconds = time.monotonic() - start
    error = one_error(capsys.readouterr().err)
    assert code == 1
    assert error.startswith(f"error: the MLflow tracking server {uri} does not answer (connection refused")
    assert seconds < 30  # the failed request alone: ending the run does not wait for the server again
    # The job wrote its files before it logged them (Snakemake removes a failed job's outputs).
    assert sorted(p.name for p in out.iterdir()) == sorted(JOB_OUTPUTS)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["spec"]["fold"] == 0
    assert temp_files(tmp_path) == []

    # The store itself outlives its server: the job's run is RUNNING, its parameters logged.
    client = MlflowClient(db)
    experiment = client.get_experiment_by_name(names[1]).experiment_id
    (dead,) = client.search_runs([experiment], run_view_type=3)
    assert dead.info.status == "RUNNING" and dead.data.params["fold"] == "0"
    monkeypatch.setattr(train, "train_job", real_train_job)
    assert train.main([*job, "--tracking-uri", db]) == 0  # the next attempt, the store up again
    found = {r.info.run_id: r for r in client.search_runs([experiment], run_view_type=3)}
    assert len(found) == 2
    ledger("training", faults=1, runs_checked=len(found), lost=0)
    assert found[dead.info.run_id].info.status == "KILLED"
    assert found[dead.info.run_id].info.lifecycle_stage == "deleted"
    (alive,) = [r for r in found.values() if r.info.run_id != dead.info.run_id]
    assert alive.info.status == "FINISHED" and alive.info.lifecycle_stage == "active"
    assert "test_accuracy" in alive.data.metrics


def test_credentials_given_to_a_job_reach_no_log_output_or_run(full_config, tmp_path):
    """The server's credentials go in MLFLOW_TRACKING_USERNAME/PASSWORD (the URI may not hold them): a
    tracked job run as the rules run it sends them to the server and writes them nowhere, neither to its
    output and log, nor to its files, nor to the store (parameters, tags, artifacts), nor to the server's
    log; also not base64-encoded, as the HTTP header carries them."""
    (tmp_path / "store").mkdir()
    password = "s3cret-Hunter2-avemotion"
    secrets = [password, base64.b64encode(f"researcher:{password}".encode()).decode()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLFLOW_TRACKING_USERNAME": "researcher", "MLFLOW_TRACKING_PASSWORD": password}
    out = tmp_path / "fold0"
    command = [sys.executable, "-m", "avemotion.train", *train_inputs(tmp_path / "in", seed=1)]
    command += ["--spec", tiny_spec(full_config), "--out", str(out)]
    with mlflow_server(tmp_path / "store") as (uri, db, _):
        names = [runs.experiment_name("avemotion", task) for task in runs.EXPERIMENTS]
        runs.init_store(uri, names, tmp_path / "store" / "artifacts")
        job = subprocess.run(
            [*command, "--tracking-uri", uri], capture_output=True, text=True, env=env, timeout=300
        )
    assert job.returncode == 0, job.stderr[-3000:]
    client = MlflowClient(db)
    (run,) = client.search_runs([client.get_experiment_by_name(names[1]).experiment_id])
    assert run.info.status == "FINISHED" and run.data.params  # the store holds the job's run, logged
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != tmp_path / "in"]
    assert {"mlflow.db", "server.log", "checkpoint.pt"} <= {p.name for p in written}
    for secret in secrets:
        assert secret not in job.stdout + job.stderr
        assert [p.name for p in written if secret.encode() in p.read_bytes()] == []


def test_a_full_disk_while_writing_the_tables_keeps_the_previous_six(tmp_path, capsys, ledger):
    from avemotion import tables

    out = tmp_path / "tables"
    assert tables.main(["--folds", "5", "--out-dir", str(out)]) == 0  # the all-not-run grid
    before = snapshot(sorted(out.iterdir()))
    metrics = tmp_path / "m" / "metrics.json"  # one finished cell: every file would change
    metrics.parent.mkdir()
    metrics.write_text(
        '{"configuration": "lms", "task": "multiclass", "target": "all", "fold": 0, "seed": 1, '
        '"metric": "accuracy", "value": 0.5}'
    )
    confusion = pd.DataFrame(np.eye(8, dtype=int), index=paper.CLASSES, columns=paper.CLASSES)
    confusion.to_csv(metrics.parent / "confusion.csv")
    args = ["--metrics", str(metrics), "--folds", "1", "--out-dir", str(out)]
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        hits = fill_disk_at(mp, "table2.md", room=10)
        assert tables.main(args) == 1
    error = one_error(capsys.readouterr().err)
    assert hits and str(out / "table2.md") in error and "free space" in error
    lost = changed(before)
    ledger("io", faults=1, files_compared=len(before), lost=len(lost))
    assert lost == [] and temp_files(out) == []
    assert tables.main(args) == 0 and changed(before)  # with room: the tables change
