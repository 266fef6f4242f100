import json
import math
import multiprocessing as mp
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from avemotion import paper, runs


@pytest.fixture(scope="module")
def template_store(tmp_path_factory):
    """A fresh store with the experiments, made once (creating MLflow's schema takes seconds)."""
    folder = tmp_path_factory.mktemp("template")
    names = [runs.experiment_name("t", task) for task in runs.EXPERIMENTS]
    ids = runs.init_store(f"sqlite:///{folder / 'mlflow.db'}", names, folder / "artifacts")
    return folder / "mlflow.db", ids


@pytest.fixture(params=["sqlite", "file"])
def store(request, tmp_path, template_store):
    """A fresh store: (uri, experiment name -> id, tmp_path). SQLite (the local default; a copy of the template)
    or a file store (a cluster's shared filesystem without a server: a folder per run, no shared database)."""
    if request.param == "file":
        uri = runs.tracking_uri("file:mlruns", tmp_path)
        names = [runs.experiment_name("t", task) for task in runs.EXPERIMENTS]
        return uri, runs.init_store(uri, names, tmp_path / "artifacts"), tmp_path
    db, ids = template_store
    (tmp_path / "mlflow").mkdir()
    shutil.copyfile(db, tmp_path / "mlflow" / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", ids, tmp_path


def active_runs(uri, experiment_id, job):
    return MlflowClient(uri).search_runs([experiment_id], filter_string=f"tags.`{runs.JOB_TAG}` = '{job}'")


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert runs.tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/results/mlflow/mlflow.db"
    assert runs.tracking_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:6000")
    assert runs.tracking_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:6000"


def test_relative_stores_are_made_absolute_against_the_project(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert (
        runs.tracking_uri("file:results/mlflow/mlruns", tmp_path)
        == f"file://{tmp_path}/results/mlflow/mlruns"
    )
    assert runs.tracking_uri("sqlite:///x/m.db", tmp_path) == f"sqlite:///{tmp_path}/x/m.db"
    # already absolute: unchanged
    assert runs.tracking_uri("file:///srv/mlruns", tmp_path) == "file:///srv/mlruns"
    assert runs.tracking_uri("sqlite:////srv/m.db", tmp_path) == "sqlite:////srv/m.db"


def test_a_store_inside_the_project_is_passed_to_jobs_relative_to_it(tmp_path):
    """The rules pass a project-relative URI (a moved or copied project keeps its jobs' parameters); each job
    makes it absolute against its working directory, the project."""
    inside = [f"sqlite:///{tmp_path}/results/mlflow/mlflow.db", (tmp_path / "results" / "my runs").as_uri()]
    assert [runs.relative_uri(u, tmp_path) for u in inside] == [
        "sqlite:///results/mlflow/mlflow.db",
        "file:results/my runs",
    ]
    assert [runs.absolute_uri(runs.relative_uri(u, tmp_path), tmp_path) for u in inside] == inside
    elsewhere = tmp_path.parent / "elsewhere"
    assert runs.absolute_uri("sqlite:///results/mlflow/mlflow.db", elsewhere) == (
        f"sqlite:///{elsewhere}/results/mlflow/mlflow.db"
    )
    for outside in ("sqlite:////srv/m.db", "file:///srv/mlruns", "http://127.0.0.1:5000"):
        assert runs.relative_uri(outside, tmp_path) == outside


def test_a_file_store_is_opened_without_the_opt_in_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = runs.tracking_uri("file:mlruns", tmp_path)
    ids = runs.init_store(uri, ["t/table1-binary"], tmp_path / "artifacts")
    with runs.job_run(uri, "t/table1-binary", "job", "J", {}) as run:
        run.log_metrics([{"loss": 1.0}])
    (experiment,) = [p for p in (tmp_path / "mlruns").iterdir() if p.name == ids["t/table1-binary"]]
    assert len([p for p in experiment.iterdir() if p.is_dir()]) == 1  # the run's own folder


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


def test_a_run_whose_process_died_is_marked_killed_by_the_jobs_next_attempt(store):
    uri, ids, _ = store
    client, experiment = MlflowClient(uri), ids["t/table1-binary"]
    # what a job killed outright leaves: its run RUNNING (nothing in the process could end it)
    dead = client.create_run(experiment, tags={runs.JOB_TAG: "job-d"}).info.run_id
    other = client.create_run(experiment, tags={runs.JOB_TAG: "job-e"}).info.run_id
    with runs.job_run(uri, "t/table1-binary", "job-d", "D", {}):
        assert client.get_run(dead).info.status == "KILLED"
    assert client.get_run(dead).data.tags[runs.REAPED_TAG]
    assert client.get_run(dead).info.lifecycle_stage == "deleted"  # replaced by the finished attempt
    assert [r.info.status for r in active_runs(uri, experiment, "job-d")] == ["FINISHED"]
    assert client.get_run(other).info.status == "RUNNING"  # another job's run is not this job's business


def test_a_sigkilled_jobs_run_is_marked_killed_when_the_workflow_starts_again(store):
    uri, ids, tmp_path = store
    code = (
        "import sys, time\n"
        "from avemotion import runs\n"
        "with runs.job_run(sys.argv[1], 't/table2-multiclass', 'job-s', 'S', {}):\n"
        "    print('running', flush=True)\n"
        "    time.sleep(600)\n"
    )
    job = subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline().strip() == "running"
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=60)
    (run,) = active_runs(uri, ids["t/table2-multiclass"], "job-s")
    assert run.info.status == "RUNNING"
    runs.init_store(uri, list(ids), tmp_path / "artifacts")  # the workflow's onstart
    (run,) = active_runs(uri, ids["t/table2-multiclass"], "job-s")
    assert run.info.status == "KILLED" and run.data.tags[runs.REAPED_TAG]


def test_a_password_in_the_tracking_uri_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(runs.TrackingError, match=r"config key mlflow\.tracking_uri holds a password"):
        runs.tracking_uri("https://me:s3cret@mlflow.example.org", tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://me:s3cret@127.0.0.1:5000")
    assert runs.main(["init", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "MLFLOW_TRACKING_URI holds a password" in err and "MLFLOW_TRACKING_PASSWORD" in err
    assert "s3cret" not in err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.org")  # no userinfo: fine
    assert runs.tracking_uri(None, tmp_path) == "https://mlflow.example.org"


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


# ---------------------------------------------------------------------------------------- parent runs

BINARY, MULTICLASS = "t/table1-binary", "t/table2-multiclass"


def fold_run(uri, configuration, task, target, fold, via_job_run=False, seed=1):
    """A finished fold job's run (one seed) with the key and tags avemotion.train gives it (run_label,
    _job_run); created directly (fast) unless ``via_job_run``."""
    table = 1 if task == "binary" else 2
    key = f"table{table}/{configuration}/{task}/{target}/seed{seed}/fold{fold}"
    tags = {
        "table": str(table),
        "configuration": configuration,
        "task": task,
        "target": target,
        "fold": str(fold),
        "seed": str(seed),
    }
    experiment = BINARY if task == "binary" else MULTICLASS
    if via_job_run:
        with runs.job_run(uri, experiment, key, key, tags):
            pass
    else:
        client = MlflowClient(uri)
        experiment_id = client.get_experiment_by_name(experiment).experiment_id
        run = client.create_run(experiment_id, run_name=key, tags={runs.JOB_TAG: key, **tags})
        client.set_terminated(run.info.run_id)
    return key


def write_tables(tmp_path, not_run=()):
    """Long-form tables as avemotion.tables writes them (2 folds): Table 1 with lms (all emotions),
    eyes_kpd (all but "surprised") and face_kpd (not run); Table 2 with lms (published), face_kpd+lms
    (no published value) and face_au (not run). ``not_run`` blanks more configurations. Returns the paths."""
    rows1 = []
    for i, configuration in enumerate(("lms", "eyes_kpd", "face_kpd")):
        for j, emotion in enumerate(paper.CLASSES):
            ran = configuration == "lms" or (configuration == "eyes_kpd" and emotion != "surprised")
            ran = ran and configuration not in not_run
            mean = 0.41 + 0.05 * j + 0.1 * i if ran else math.nan
            published = 0.6 + 0.01 * j
            rows1.append(
                {
                    "modality": "audio" if configuration == "lms" else "video",
                    "type": "speech" if configuration == "lms" else configuration.split("_")[0],
                    "features": configuration.upper(),
                    "configuration": configuration,
                    "emotion": emotion,
                    "n_folds": 2 if ran else 0,
                    "n_seeds": 1 if ran else 0,
                    "mean": mean,
                    "std_folds": 0.02 + 0.001 * j if ran else math.nan,
                    "std_seeds": math.nan,
                    "ci_low": mean - 0.2,
                    "ci_high": mean + 0.2,
                    "interval": "folds" if ran else "",
                    "pooled": mean + 0.003 if ran else math.nan,
                    "paper": published,
                    "paper_range": None,
                    "paper_inside": float(abs(mean - published) <= 0.2) if ran else math.nan,
                    "difference": mean - published,
                }
            )
    rows2 = []
    for visual, speech, configuration, mean, published, seeds in (
        ("None", "LMS", "lms", 61.25, 58.3, 2),
        ("Face KPD", "LMS", "face_kpd+lms", 77.5, math.nan, 1),
        ("Face AU", "None", "face_au", math.nan, 40.0, 1),
    ):
        mean = math.nan if configuration in not_run else mean
        ran = not math.isnan(mean)
        rows2.append(
            {
                "visual": visual,
                "speech": speech,
                "configuration": configuration,
                "n_folds": 2 if ran else 0,
                "n_seeds": seeds if ran else 0,
                "mean": mean,
                "std_folds": 3.5 if ran else math.nan,
                "std_seeds": 1.5 if ran and seeds > 1 else math.nan,
                "ci_low": mean - 2.0,
                "ci_high": mean + 2.0,
                "interval": ("seeds" if seeds > 1 else "folds") if ran else "",
                "pooled": mean - 0.25,
                "paper": published,
                "paper_inside": float(abs(mean - published) <= 2.0)
                if ran and published == published
                else math.nan,
                "difference": mean - published,
            }
        )
    paths = tmp_path / "table1.csv", tmp_path / "table2.csv"
    for path, rows in zip(paths, (rows1, rows2), strict=True):
        pd.DataFrame(rows).to_csv(path, index=False, float_format="%.4f")
    return paths


@pytest.fixture
def folds(store):
    """Fold runs of every configuration (2 folds; 2 seeds of Table 2's lms), the ones not run included; the
    store, table paths."""
    uri, ids, tmp_path = store
    for fold in range(2):
        for configuration in ("lms", "eyes_kpd", "face_kpd"):
            for emotion in paper.CLASSES:
                fold_run(uri, configuration, "binary", emotion, fold)
        for configuration in ("lms", "face_kpd+lms", "face_au"):
            fold_run(uri, configuration, "multiclass", "all", fold)
        fold_run(uri, "lms", "multiclass", "all", fold, seed=2)
    return uri, ids, tmp_path


def read_tables(tmp_path, not_run=()):
    return [pd.read_csv(path) for path in write_tables(tmp_path, not_run)]


def parents_of(uri, experiment_id):
    found = MlflowClient(uri).search_runs([experiment_id], filter_string=f"tags.`{runs.PARENT_TAG}` != ''")
    return {r.data.tags[runs.PARENT_TAG]: r for r in found}


def fold_runs_of(uri, experiment_id, configuration):
    return MlflowClient(uri).search_runs(
        [experiment_id], filter_string=f"tags.configuration = '{configuration}'"
    )


def test_one_parent_per_configuration_with_results_holding_its_fold_runs(folds):
    uri, ids, tmp_path = folds
    got = runs.log_parents(uri, "t", *read_tables(tmp_path))
    parents1, parents2 = parents_of(uri, ids[BINARY]), parents_of(uri, ids[MULTICLASS])
    assert sorted(parents1) == ["table1/eyes_kpd", "table1/lms"]  # face_kpd did not run
    assert sorted(parents2) == ["table2/face_kpd+lms", "table2/lms"]  # face_au did not run
    assert got == {
        "table1": {c: parents1[f"table1/{c}"].info.run_id for c in ("lms", "eyes_kpd")},
        "table2": {c: parents2[f"table2/{c}"].info.run_id for c in ("lms", "face_kpd+lms")},
    }
    kpd = parents2["table2/face_kpd+lms"]
    assert kpd.info.run_name == "Table 2 / Face KPD + LMS" and kpd.info.status == "FINISHED"
    assert parents1["table1/lms"].info.run_name == "Table 1 / LMS"
    assert kpd.data.params == {
        "configuration": "face_kpd+lms",
        "task": "multiclass",
        "table": "2",
        "n_folds": "2",
        "n_seeds": "1",
        "interval": "t over folds",
        "n_children": "2",
    }
    assert parents2["table2/lms"].data.params["n_children"] == "4"  # 2 folds x 2 seeds
    assert parents2["table2/lms"].data.params["interval"] == "t over seed means"
    assert parents1["table1/lms"].data.params["n_children"] == "16"  # 8 emotions x 2 folds
    for experiment, parents in ((BINARY, parents1), (MULTICLASS, parents2)):
        for key, parent in parents.items():
            children = fold_runs_of(uri, ids[experiment], key.split("/")[1])
            assert len(children) == int(parent.data.params["n_children"])
            assert {c.data.tags[runs.PARENT_ID_TAG] for c in children} == {parent.info.run_id}
    for experiment, configuration in ((BINARY, "face_kpd"), (MULTICLASS, "face_au")):
        children = fold_runs_of(uri, ids[experiment], configuration)
        assert children and all(runs.PARENT_ID_TAG not in c.data.tags for c in children)


def test_parent_metrics_are_the_tables_values(folds):
    uri, ids, tmp_path = folds
    table1, table2 = read_tables(tmp_path)
    runs.log_parents(uri, "t", table1, table2)
    parents1, parents2 = parents_of(uri, ids[BINARY]), parents_of(uri, ids[MULTICLASS])

    lms = table2.set_index("configuration").loc["lms"]
    assert parents2["table2/lms"].data.metrics == {
        "accuracy_mean": lms["mean"],
        "accuracy_std_folds": lms["std_folds"],
        "accuracy_std_seeds": 1.5,
        "accuracy_ci_low": lms["mean"] - 2.0,
        "accuracy_ci_high": lms["mean"] + 2.0,
        "accuracy_pooled": lms["pooled"],
        "accuracy_paper": 58.3,
        "accuracy_paper_inside": 0.0,  # 58.3 is outside 61.25 +- 2
        "accuracy_difference": lms["difference"],
    }
    # not published: no paper value, no difference, no mark; one seed: no spread across seeds
    assert sorted(parents2["table2/face_kpd+lms"].data.metrics) == [
        "accuracy_ci_high",
        "accuracy_ci_low",
        "accuracy_mean",
        "accuracy_pooled",
        "accuracy_std_folds",
    ]
    assert parents2["table2/face_kpd+lms"].data.metrics["accuracy_mean"] == 77.5

    metrics = parents1["table1/lms"].data.metrics
    rows = table1[table1.configuration == "lms"]
    assert len(metrics) == 8 * 8 + 4  # 8 stats per emotion (no spread across seeds: one seed), 4 means
    for row in rows.itertuples():
        for stat in runs.STATS:
            if stat == "std_seeds":  # NaN with one seed: left out
                assert f"macro_f1_{stat}.{row.emotion}" not in metrics
            else:
                assert metrics[f"macro_f1_{stat}.{row.emotion}"] == getattr(row, stat)
    assert metrics["macro_f1_mean.angry"] == 0.41
    assert metrics["macro_f1_mean"] == pytest.approx(np.mean([0.41 + 0.05 * j for j in range(8)]), abs=1e-12)
    assert metrics["macro_f1_pooled"] == pytest.approx(metrics["macro_f1_mean"] + 0.003, abs=1e-12)
    assert metrics["macro_f1_paper"] == pytest.approx(0.635, abs=1e-12)
    assert metrics["macro_f1_difference"] == pytest.approx(metrics["macro_f1_mean"] - 0.635, abs=1e-12)
    # one emotion not run: that emotion's metrics and the mean over emotions are left out
    partial = parents1["table1/eyes_kpd"].data.metrics
    assert len(partial) == 7 * 8 and "macro_f1_mean.sad" in partial  # 8 stats (one seed) x 7 emotions
    assert "macro_f1_mean.surprised" not in partial and "macro_f1_mean" not in partial


def test_rerun_keeps_one_parent_and_nests_a_rerun_fold_job(folds):
    uri, ids, tmp_path = folds
    first = runs.log_parents(uri, "t", *read_tables(tmp_path))
    old_child = fold_runs_of(uri, ids[MULTICLASS], "lms")
    key = fold_run(uri, "lms", "multiclass", "all", 1, via_job_run=True)  # a forced rerun of one fold job
    (rerun,) = active_runs(uri, ids[MULTICLASS], key)
    assert runs.PARENT_ID_TAG not in rerun.data.tags
    second = runs.log_parents(uri, "t", *read_tables(tmp_path))
    assert sorted(second["table2"]) == sorted(first["table2"])
    assert sorted(parents_of(uri, ids[MULTICLASS])) == ["table2/face_kpd+lms", "table2/lms"]
    assert sorted(parents_of(uri, ids[BINARY])) == ["table1/eyes_kpd", "table1/lms"]
    client = MlflowClient(uri)
    for table in ("table1", "table2"):
        for configuration, run_id in first[table].items():
            assert client.get_run(run_id).info.lifecycle_stage == "deleted"
            assert client.get_run(second[table][configuration]).info.status == "FINISHED"
    children = fold_runs_of(uri, ids[MULTICLASS], "lms")
    assert rerun.info.run_id in {c.info.run_id for c in children} and len(children) == len(old_child)
    assert {c.data.tags[runs.PARENT_ID_TAG] for c in children} == {second["table2"]["lms"]}


def test_a_parent_left_running_by_a_killed_aggregation_ends_killed_when_replaced(folds):
    uri, ids, tmp_path = folds
    client = MlflowClient(uri)
    # What a SIGKILL between create_run and set_terminated leaves: an active RUNNING parent.
    dead = client.create_run(ids[MULTICLASS], tags={runs.PARENT_TAG: "table2/lms"}).info.run_id
    new = runs.log_parents(uri, "t", *read_tables(tmp_path))
    run = client.get_run(dead)
    assert (run.info.status, run.info.lifecycle_stage) == ("KILLED", "deleted")
    assert parents_of(uri, ids[MULTICLASS])["table2/lms"].info.run_id == new["table2"]["lms"]


def test_configuration_without_results_any_more_loses_its_parent(folds):
    uri, ids, tmp_path = folds
    runs.log_parents(uri, "t", *read_tables(tmp_path))
    got = runs.log_parents(uri, "t", *read_tables(tmp_path, not_run=("lms",)))
    assert sorted(got["table2"]) == ["face_kpd+lms"] and sorted(got["table1"]) == ["eyes_kpd"]
    assert sorted(parents_of(uri, ids[MULTICLASS])) == ["table2/face_kpd+lms"]
    assert sorted(parents_of(uri, ids[BINARY])) == ["table1/eyes_kpd"]
    for experiment in (BINARY, MULTICLASS):
        assert all(runs.PARENT_ID_TAG not in c.data.tags for c in fold_runs_of(uri, ids[experiment], "lms"))


def test_missing_experiment_logs_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (binary,) = runs.init_store(uri, [BINARY], tmp_path / "artifacts").values()  # no Table 2 experiment
    with pytest.raises(runs.TrackingError, match=r"'t/table2-multiclass' does not exist.*onstart step"):
        runs.log_parents(uri, "t", *read_tables(tmp_path))
    assert MlflowClient(uri).search_runs([binary]) == []


def test_table_that_is_not_the_long_form_logs_nothing(store):
    uri, ids, tmp_path = store
    table1, table2 = read_tables(tmp_path)
    with pytest.raises(ValueError, match=r"table2 lacks the column\(s\) pooled"):
        runs.log_parents(uri, "t", table1, table2.drop(columns="pooled"))
    with pytest.raises(ValueError, match=r"table1 has the cell.*more than once"):
        runs.log_parents(uri, "t", pd.concat([table1, table1.tail(1)]), table2)
    assert MlflowClient(uri).search_runs(list(ids.values())) == []


def test_documented_filters_find_the_parents(folds, monkeypatch):
    """The filter and search_runs snippet of docs/MLFLOW.md."""
    uri, ids, tmp_path = folds
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # set_tracking_uri sets it too: restored at teardown
    got = runs.log_parents(uri, "t", *read_tables(tmp_path))
    client = MlflowClient(uri)
    found = client.search_runs(
        [ids[MULTICLASS]],
        filter_string="tags.avemotion.parent LIKE 'table2/%'",
        order_by=["metrics.accuracy_mean DESC"],
    )
    assert [r.info.run_name for r in found] == ["Table 2 / Face KPD + LMS", "Table 2 / LMS"]
    found = client.search_runs([ids[BINARY]], filter_string="metrics.`macro_f1_mean.angry` > 0.45")
    assert [r.info.run_name for r in found] == ["Table 1 / Eyes KPD"]
    found = client.search_runs(list(ids.values()), filter_string="tags.avemotion.parent != ''")
    assert len(found) == 4
    mlflow.set_tracking_uri(uri)
    try:
        frame = mlflow.search_runs(
            experiment_names=[MULTICLASS],
            filter_string="tags.avemotion.parent LIKE 'table2/%'",
            order_by=["metrics.accuracy_mean DESC"],
        )
        children = mlflow.search_runs(
            experiment_names=[MULTICLASS],
            filter_string=f"tags.mlflow.parentRunId = '{got['table2']['lms']}'",
        )
    finally:
        mlflow.set_tracking_uri(None)
    assert frame["params.configuration"].tolist() == ["face_kpd+lms", "lms"]
    assert frame["metrics.accuracy_mean"].tolist() == [77.5, 61.25]
    assert sorted(children["tags.fold"]) == ["0", "0", "1", "1"] and sorted(children["tags.seed"]) == [
        "1",
        "1",
        "2",
        "2",
    ]


def test_cli_parents(folds, capsys):
    uri, ids, tmp_path = folds
    table1, table2 = write_tables(tmp_path)
    out = tmp_path / "mlflow" / "parents.json"
    args = ["parents", "--uri", uri, "--prefix", "t", "--table1", str(table1), "--table2", str(table2)]
    assert runs.main([*args, "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["table2"] == {k[7:]: r.info.run_id for k, r in parents_of(uri, ids[MULTICLASS]).items()}
    assert sorted(written["table1"]) == ["eyes_kpd", "lms"]
    assert "t/table2-multiclass: 2 parent runs" in capsys.readouterr().out
    missing = tmp_path / "missing.json"
    assert runs.main([*args[:4], "other", *args[5:], "--out", str(missing)]) == 1
    assert "'other/table1-binary' does not exist" in capsys.readouterr().err and not missing.exists()
