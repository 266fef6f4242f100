import multiprocessing as mp
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from avemotion import runs


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    names = [runs.experiment_name("t", task) for task in runs.EXPERIMENTS]
    ids = runs.init_store(uri, names, tmp_path / "artifacts")
    return uri, ids, tmp_path


def active_runs(uri, experiment_id, job):
    return MlflowClient(uri).search_runs([experiment_id], filter_string=f"tags.`{runs.JOB_TAG}` = '{job}'")


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert runs.tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/results/mlflow/mlflow.db"
    assert runs.tracking_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:6000")
    assert runs.tracking_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:6000"


def test_init_store_is_idempotent(store):
    uri, ids, tmp_path = store
    assert sorted(ids) == ["t/table1-binary", "t/table2-multiclass"]
    again = runs.init_store(uri, list(ids), tmp_path / "artifacts")
    assert again == ids


def test_finished_run_holds_params_curves_metrics_artifacts(store):
    uri, ids, tmp_path = store
    artifact = tmp_path / "predictions.csv"
    artifact.write_text("clip,pred\n")
    with runs.job_run(
        uri, "t/table2-multiclass", "table2/lms/fold0", "Table 2 / LMS / fold 0", {"fold": "0"}
    ) as run:
        run.log_params({f"p{i}": i for i in range(150)})  # more than one batch
        run.log_metrics([{"epoch": e, "train_loss": 1.0 / e} for e in range(1, 6)], step_key="epoch")
        run.log_metrics([{"test_accuracy": 0.5}])
        run.log_artifacts([artifact])
    (found,) = active_runs(uri, ids["t/table2-multiclass"], "table2/lms/fold0")
    assert found.info.status == "FINISHED" and found.info.run_name == "Table 2 / LMS / fold 0"
    assert len(found.data.params) == 150 and found.data.params["p42"] == "42"
    history = MlflowClient(uri).get_metric_history(found.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(e, 1.0 / e) for e in range(1, 6)]
    assert found.data.metrics["test_accuracy"] == 0.5
    assert [a.path for a in MlflowClient(uri).list_artifacts(found.info.run_id)] == ["predictions.csv"]


def test_rerun_of_a_job_leaves_one_visible_run(store):
    uri, ids, _ = store
    for _ in range(3):
        with runs.job_run(uri, "t/table1-binary", "job-a", "A", {}):
            pass
    (only,) = active_runs(uri, ids["t/table1-binary"], "job-a")
    assert only.info.status == "FINISHED"


def test_failed_and_killed_runs_are_marked(store):
    uri, ids, _ = store
    with pytest.raises(ValueError), runs.job_run(uri, "t/table1-binary", "job-f", "F", {}):
        raise ValueError("boom")
    with pytest.raises(SystemExit), runs.job_run(uri, "t/table1-binary", "job-k", "K", {}):
        raise SystemExit(143)
    assert active_runs(uri, ids["t/table1-binary"], "job-f")[0].info.status == "FAILED"
    assert active_runs(uri, ids["t/table1-binary"], "job-k")[0].info.status == "KILLED"
    # a later successful attempt replaces the failed one
    with runs.job_run(uri, "t/table1-binary", "job-f", "F", {}):
        pass
    assert [r.info.status for r in active_runs(uri, ids["t/table1-binary"], "job-f")] == ["FINISHED"]


def test_missing_experiment_is_a_clear_error(store):
    uri, _, _ = store
    with (
        pytest.raises(runs.TrackingError, match="created by the workflow's onstart step"),
        runs.job_run(uri, "t/unknown", "job", "x", {}),
    ):
        pass


def _log_one(args):
    uri, job = args
    with runs.job_run(uri, "t/table1-binary", job, job, {}) as run:
        run.log_metrics([{"epoch": e, "loss": e} for e in range(50)], step_key="epoch")


def test_concurrent_jobs_lose_nothing(store):
    uri, ids, _ = store
    jobs = [f"job-{i}" for i in range(6)]
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_log_one, [(uri, j) for j in jobs])
    client = MlflowClient(uri)
    found = client.search_runs([ids["t/table1-binary"]])
    assert sorted(r.data.tags[runs.JOB_TAG] for r in found) == jobs
    assert all(len(client.get_metric_history(r.info.run_id, "loss")) == 50 for r in found)
    default = client.search_runs(["0"]) if client.get_experiment("0") else []
    assert default == []


def test_cli_init(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    assert runs.main(["init", "--uri", uri, "--prefix", "p", "--root", str(tmp_path)]) == 0
    assert "p/table1-binary" in capsys.readouterr().out
    assert Path(tmp_path / "x.db").exists()


def test_git_commit_outside_a_checkout(tmp_path):
    assert runs.git_commit(tmp_path) == "unknown"
