"""MLflow bookkeeping: the tracking store, the experiments, and one run per training job.

MLflow is a side channel: training writes its results as files (the DAG's outputs) and mirrors them here.
Design points, measured with mlflow 3.17:

- Concurrent first jobs racing to create a fresh SQLite store fail ("table already exists"), and concurrent
  ``set_experiment`` calls can silently put runs in the Default experiment. So :func:`init_store` (Snakemake
  ``onstart``, before any job) creates the store and every experiment once; jobs then look experiments up by
  name, get their id, and never create one.
- Runs are created through ``MlflowClient`` with explicit ids (no global active run), metrics are logged in
  batches (one call per epoch chunk, not one per value).
- One visible run per job: each run carries the tag ``avemotion.job`` (table/configuration/task/target/fold);
  when a job finishes, older runs with the same tag (a killed earlier attempt, a forced rerun) are deleted
  (soft delete: ``mlflow gc`` purges, the UI's "deleted" filter shows them). A job that raises ends its run
  FAILED.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

EXPERIMENTS = {"binary": "table1-binary", "multiclass": "table2-multiclass"}
JOB_TAG = "avemotion.job"
DEFAULT_STORE = Path("results") / "mlflow"
# Params per log_batch call (MLflow's limit is 100).
PARAM_BATCH = 100


class TrackingError(RuntimeError):
    """The tracking store is not usable; the message says how to fix it."""


def tracking_uri(configured: str | None, root: Path) -> str:
    """MLFLOW_TRACKING_URI wins, then config ``mlflow.tracking_uri``, then SQLite under results/mlflow."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    if uri:
        return uri
    return f"sqlite:///{(root / DEFAULT_STORE / 'mlflow.db').resolve()}"


def artifact_root(root: Path) -> Path:
    return (root / DEFAULT_STORE / "artifacts").resolve()


def experiment_name(prefix: str, task: str) -> str:
    return f"{prefix}/{EXPERIMENTS[task]}"


def _client(uri: str):
    from mlflow.tracking import MlflowClient  # imported lazily: mlflow takes a second to import

    return MlflowClient(tracking_uri=uri)


def init_store(uri: str, names: list[str], artifacts: Path) -> dict[str, str]:
    """Create the store (if new) and each experiment (if missing), once, before any job; name -> id."""
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = _client(uri)
    ids = {}
    for name in names:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            location = (artifacts / name.replace("/", "_")).as_uri() if uri.startswith("sqlite") else None
            ids[name] = client.create_experiment(name, artifact_location=location)
        else:
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment.experiment_id)
            ids[name] = experiment.experiment_id
    return ids


def git_commit(root: Path) -> str:
    """HEAD's commit (with "-dirty" when the work tree has changes), or "unknown" outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


class JobRun:
    """A thin handle on one MLflow run: batched params/metrics, artifacts, tags."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + PARAM_BATCH])

    def log_metrics(self, rows: list[dict], step_key: str | None = None) -> None:
        """Log many values in few calls: ``rows`` of {name: value}, each row one step when ``step_key``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = []
        for row in rows:
            step = int(row[step_key]) if step_key else 0
            metrics += [Metric(k, float(v), now, step) for k, v in row.items() if k != step_key]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def log_artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))


@contextlib.contextmanager
def job_run(uri: str, experiment: str, job_key: str, run_name: str, tags: dict[str, str]) -> Iterator[JobRun]:
    """One MLflow run for one training job: FINISHED on success (older runs of the job deleted), FAILED on
    error. Raises TrackingError when the experiment was not created beforehand."""
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise TrackingError(
            f"MLflow experiment {experiment!r} does not exist in {uri}; it is created by the workflow's "
            "onstart step (or `python -m avemotion.runs init`) before any job runs"
        )
    run = client.create_run(found.experiment_id, run_name=run_name, tags={JOB_TAG: job_key, **tags})
    run_id = run.info.run_id
    try:
        yield JobRun(client, run_id)
    except (KeyboardInterrupt, SystemExit):
        client.set_terminated(run_id, status="KILLED")
        raise
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    older = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job_key}'", max_results=1000
    )
    for other in older:
        if other.info.run_id != run_id:
            client.delete_run(other.info.run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MLflow store set-up (run once before any training job)")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create the tracking store and the experiments")
    init.add_argument("--uri", default=None, help="tracking URI (default: MLFLOW_TRACKING_URI or SQLite)")
    init.add_argument("--prefix", default="avemotion")
    init.add_argument("--root", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    uri = tracking_uri(args.uri, args.root)
    names = [experiment_name(args.prefix, task) for task in EXPERIMENTS]
    try:
        ids = init_store(uri, names, artifact_root(args.root))
    except Exception as e:  # the store's own errors vary by backend; say which store failed
        print(f"error: cannot set up the MLflow store {uri}: {e}", file=sys.stderr)
        return 1
    for name, experiment_id in ids.items():
        print(f"mlflow experiment {name!r}: id {experiment_id} ({uri})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
