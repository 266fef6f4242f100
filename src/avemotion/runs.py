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
  FAILED, one stopped by SIGTERM (Snakemake, SLURM) KILLED. A job killed outright (SIGKILL, the OOM killer,
  a node that dies) cannot end its run: it stays RUNNING until the next attempt of that job, or the next
  workflow start (:func:`init_store`), marks it KILLED (tag ``avemotion.reaped``). No job of a workflow runs
  before its onstart, and Snakemake never runs one job twice at once, so a RUNNING run found then is dead.
- A tracking server that does not answer (down, wrong address) fails the job at its first request, before it
  trains, with one error naming the URI (:class:`StoreUnreachable`); one that dies while a job trains fails
  the job when it logs, its run left RUNNING for the next attempt to mark KILLED. MLflow's own defaults (7
  retries with backoff, 120 s per answer) took 246 s to report that nothing listened on the port, and by
  the same arithmetic (8 tries of 120 s plus the backoff) would take about 20 minutes for a server that
  never answers. Unless MLFLOW_HTTP_REQUEST_MAX_RETRIES or MLFLOW_HTTP_REQUEST_TIMEOUT are set, a job uses
  :data:`HTTP_DEFAULTS` instead: about 13 s for a refused connection (a restarting server is back within
  that), 94 s measured for a server that accepts connections and never answers.
- Credentials never go into the tracking URI (it is written into every job's command line and log): a URI
  with ``user:password@`` is refused; MLflow reads MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or
  MLFLOW_TRACKING_TOKEN from the environment instead.
- One parent run per table configuration (:func:`log_parents`, after the tables are built): it holds the
  configuration's aggregated metrics (the tables' mean, std, pooled, paper, difference) and its fold runs get
  the tag ``mlflow.parentRunId``, which the MLflow UI reads to nest them under it. Each aggregation creates
  fresh parents and soft-deletes the older ones, as for jobs; a rerun fold job is nested again by the next
  aggregation.

CLI::

    python -m avemotion.runs init --uri URI --prefix PREFIX              # Snakemake onstart
    python -m avemotion.runs parents --uri URI --prefix PREFIX \\
        --table1 results/tables/table1.csv --table2 results/tables/table2.csv --out results/mlflow/parents.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from avemotion import registry, tables
from avemotion.io import atomic_write_text

EXPERIMENTS = {"binary": "table1-binary", "multiclass": "table2-multiclass"}
JOB_TAG = "avemotion.job"
PARENT_TAG = "avemotion.parent"  # "table2/face_kpd+lms" on a configuration's parent run
PARENT_ID_TAG = "mlflow.parentRunId"  # the MLflow UI nests a run under the run this tag names
# Per table: its task (the experiment) and metric; the long-form CSV columns read (written by avemotion.tables).
TABLES = {"table1": ("binary", "macro_f1"), "table2": ("multiclass", "accuracy")}
STATS = (
    "mean",
    "std_folds",
    "std_seeds",
    "ci_low",
    "ci_high",
    "pooled",
    "paper",
    "paper_inside",
    "difference",
)
TABLE_COLUMNS = {
    "table1": ("configuration", "emotion", "n_folds", "n_seeds", "interval", *STATS),
    "table2": ("configuration", "n_folds", "n_seeds", "interval", *STATS),
}
DEFAULT_STORE = Path("results") / "mlflow"
# Params per log_batch call (MLflow's limit is 100).
PARAM_BATCH = 100


# MLflow's HTTP settings for jobs, where the environment does not set them: 3 retries (waits 0, 4, 8 s, plus
# up to 1 s jitter each) and 20 s for each answer.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


class TrackingError(RuntimeError):
    """The tracking store is not usable; the message says how to fix it."""


class StoreUnreachable(TrackingError):
    """The tracking server does not answer (not running, wrong address, no network)."""


def tracking_uri(configured: str | None, root: Path) -> str:
    """MLFLOW_TRACKING_URI wins, then config ``mlflow.tracking_uri``, then SQLite under results/mlflow.

    A relative file store (``file:results/mlflow/mlruns``) or SQLite path (``sqlite:///results/x.db`` has three
    slashes and a relative path) is made absolute against ``root``: every job, wherever it runs, opens the
    same store on the shared filesystem.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    if uri and urllib.parse.urlsplit(uri).password is not None:
        source = (
            "MLFLOW_TRACKING_URI"
            if os.environ.get("MLFLOW_TRACKING_URI")
            else "config key mlflow.tracking_uri"
        )
        raise TrackingError(
            f"{source} holds a password, which would be written into every job's command line and log: "
            "remove 'user:password@' from it and export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
            "(or MLFLOW_TRACKING_TOKEN) instead"
        )
    if not uri:
        return f"sqlite:///{(root / DEFAULT_STORE / 'mlflow.db').resolve()}"
    return absolute_uri(uri, root)


def absolute_uri(uri: str, root: Path) -> str:
    """A file store or SQLite URI with a relative path made absolute against ``root``; others unchanged."""
    if uri.startswith("file:") and not uri.startswith("file://"):
        return (root / uri.removeprefix("file:")).resolve().as_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(root / uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def relative_uri(uri: str, root: Path) -> str:
    """The inverse of :func:`absolute_uri` for a store inside ``root``: what the rules pass to their jobs
    (which run in the project folder and resolve it there), so that a project moved or copied elsewhere does
    not see every training job's parameters change and retrain. Stores outside ``root`` stay absolute."""
    root = root.resolve()
    if uri.startswith("sqlite:////"):
        scheme, path = "sqlite:///", Path(uri.removeprefix("sqlite:///"))
    elif uri.startswith("file:///"):
        scheme, path = "file:", Path(urllib.parse.unquote(uri.removeprefix("file://")))
    else:
        return uri
    return f"{scheme}{path.relative_to(root).as_posix()}" if path.is_relative_to(root) else uri


def artifact_root(root: Path) -> Path:
    return (root / DEFAULT_STORE / "artifacts").resolve()


def experiment_name(prefix: str, task: str) -> str:
    return f"{prefix}/{EXPERIMENTS[task]}"


def _client(uri: str):
    from mlflow.tracking import MlflowClient  # imported lazily: mlflow takes a second to import

    if uri.startswith("file:"):
        # A file store is chosen on purpose (config mlflow.tracking_uri): a cluster's shared filesystem
        # without a server, where each run is a folder of its own and no database file is shared between
        # nodes. MLflow 3 refuses one unless this is set.
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    if uri.startswith(("http://", "https://")):
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
    return _Store(MlflowClient(tracking_uri=uri), uri)


def _failed_request(error: BaseException) -> BaseException | None:
    """The innermost exception of ``error``'s chain when an HTTP request in it failed (nothing listens, no
    answer in time, unknown host, the server's errors until the retries ran out), else None."""
    import requests

    failed, seen, innermost = False, set(), error
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        failed = failed or isinstance(error, requests.exceptions.RequestException)
        innermost, error = error, error.__cause__ or error.__context__
    return innermost if failed else None


def unreachable_message(uri: str, innermost: BaseException) -> str:
    """What :class:`StoreUnreachable` says: the URI, why (``innermost``: the failed request's cause), what to
    do."""
    if isinstance(innermost, ConnectionRefusedError):
        reason = "connection refused: nothing listens there"
    elif isinstance(innermost, TimeoutError):
        timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT")
        reason = f"no answer within MLFLOW_HTTP_REQUEST_TIMEOUT = {timeout} s"
    else:
        reason = str(innermost)
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    return (
        f"the MLflow tracking server {uri} does not answer ({reason}; {retries} retries): start it "
        "(`make mlflow-ui` serves this project's store at http://127.0.0.1:5000), or point config key "
        "mlflow.tracking_uri (null: the local SQLite store, no server) or MLFLOW_TRACKING_URI at a store "
        "that is up; then rerun"
    )


class _Store:
    """An MlflowClient whose calls raise :class:`StoreUnreachable` when its server does not answer."""

    def __init__(self, client, uri: str):
        self._client, self._uri = client, uri

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except Exception as e:
                innermost = _failed_request(e)
                if innermost is None:
                    raise
                raise StoreUnreachable(unreachable_message(self._uri, innermost)) from e

        return call


def _experiment_id(client, uri: str, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise TrackingError(
            f"MLflow experiment {experiment!r} does not exist in {uri}; it is created by the workflow's "
            "onstart step (or `python -m avemotion.runs init`) before any job runs"
        )
    return found.experiment_id


REAPED_TAG = "avemotion.reaped"


def reap(client, experiment_id: str, job_key: str | None = None) -> int:
    """Mark KILLED the RUNNING job runs (of ``job_key``, or every job) of an experiment: runs whose process
    died without ending them. Returns how many."""
    found = client.search_runs(
        [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=10000
    )
    dead = [
        r for r in found if JOB_TAG in r.data.tags and (job_key is None or r.data.tags[JOB_TAG] == job_key)
    ]
    for run in dead:
        client.set_tag(run.info.run_id, REAPED_TAG, "its process died without ending the run")
        client.set_terminated(run.info.run_id, status="KILLED")
    return len(dead)


def init_store(uri: str, names: list[str], artifacts: Path) -> dict[str, str]:
    """Create the store (if new) and each experiment (if missing), once, before any job; name -> id. Runs an
    earlier, killed workflow left RUNNING are marked KILLED (:func:`reap`)."""
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
            reap(client, ids[name])
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
    error. Raises TrackingError when the experiment was not created beforehand, StoreUnreachable when the
    server does not answer (then the run, if it was created, stays RUNNING: the job's next attempt or the
    next workflow start marks it KILLED)."""
    client = _client(uri)
    experiment_id = _experiment_id(client, uri, experiment)
    reap(client, experiment_id, job_key)  # an earlier attempt of this job that was killed outright
    run = client.create_run(experiment_id, run_name=run_name, tags={JOB_TAG: job_key, **tags})
    run_id = run.info.run_id
    try:
        yield JobRun(client, run_id)
    except StoreUnreachable:
        raise  # ending the run would wait for the server again
    except BaseException as e:
        status = "KILLED" if isinstance(e, KeyboardInterrupt | SystemExit) else "FAILED"
        with contextlib.suppress(StoreUnreachable):  # the job's own error is the one to report
            client.set_terminated(run_id, status=status)
        raise
    client.set_terminated(run_id, status="FINISHED")
    older = client.search_runs(
        [experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job_key}'", max_results=1000
    )
    for other in older:
        if other.info.run_id != run_id:
            client.delete_run(other.info.run_id)


# ---------------------------------------------------------------------------------------- parent runs


def parent_label(table: str, configuration: str) -> str:
    """The parent run's name: "Table 2 / Face KPD + LMS" (registry labels, as the fold runs' names)."""
    labels = " + ".join(registry.get(k).label for k in registry.split_configuration(configuration))
    return f"Table {table[-1]} / {labels}"


def parent_metrics(table: str, rows: pd.DataFrame) -> dict[str, float]:
    """One configuration's aggregated metrics, from its rows of the long table; NaN values are left out.

    Table 2 (one row, accuracy in %): ``accuracy_<stat>`` for every stat of :data:`STATS` (the mean over
    folds and seeds, the spreads across folds and across seeds, the 95 % interval ``ci_low``..``ci_high``,
    pooled, the paper's value, ``paper_inside`` 1/0, the difference). Table 1 (one row per emotion, macro-F1
    0-1): ``macro_f1_<stat>.<emotion>`` per emotion, and when every emotion ran, the mean over the emotions
    ``macro_f1_mean``, ``macro_f1_pooled``, ``macro_f1_paper`` (when all are published) and
    ``macro_f1_difference`` (= ``macro_f1_mean - macro_f1_paper``).
    """
    _, metric = TABLES[table]
    done = rows[rows["mean"].notna()]
    if table == "table2":
        values = {f"{metric}_{stat}": row[stat] for row in done.to_dict("records") for stat in STATS}
    else:
        values = {
            f"{metric}_{stat}.{row['emotion']}": row[stat]
            for row in done.to_dict("records")
            for stat in STATS
        }
        if len(done) == len(rows):
            for stat in ("mean", "pooled", "paper"):
                values[f"{metric}_{stat}"] = rows[stat].mean(skipna=False)  # NaN (left out) if one is missing
            values[f"{metric}_difference"] = values[f"{metric}_mean"] - values[f"{metric}_paper"]
    return {name: float(v) for name, v in values.items() if v is not None and math.isfinite(float(v))}


def parent_plan(table: str, frame: pd.DataFrame) -> dict[str, dict]:
    """What :func:`log_parents` logs for one long-form table, before touching the store: per configuration
    with results (a non-NaN mean), its run name, metrics and params. ValueError when the table is not the
    long form of ``avemotion.tables`` (a column missing, a cell twice); KeyError for an unknown feature."""
    missing = [c for c in TABLE_COLUMNS[table] if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{table} lacks the column(s) {', '.join(missing)} (has {', '.join(map(str, frame.columns))}); "
            f"it is the long-form {table}.csv written by `python -m avemotion.tables`"
        )
    cell = ["configuration", "emotion"] if table == "table1" else ["configuration"]
    dup = frame.duplicated(cell)
    if dup.any():
        raise ValueError(
            f"{table} has the cell(s) {frame.loc[dup, cell].to_dict('records')[:3]} more than once"
        )
    task, _ = TABLES[table]
    plan = {}
    for configuration, rows in frame.groupby("configuration", sort=False):
        done = rows[rows["mean"].notna()]
        if done.empty:
            continue  # not run
        plan[configuration] = {
            "run_name": parent_label(table, configuration),
            "metrics": parent_metrics(table, rows),
            "params": {
                "configuration": configuration,
                "task": task,
                "table": table[-1],
                "n_folds": int(done["n_folds"].max()),
                "n_seeds": int(done["n_seeds"].max()),
                # how the 95 % interval was computed (avemotion.tables.seed_summary)
                "interval": tables.INTERVAL_METHODS.get(str(done["interval"].iloc[0]), ""),
            },
        }
    return plan


def _active_runs(client, experiment_id: str) -> list:
    found, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return found


def _replace_parents(client, experiment_id: str, table: str, plan: dict[str, dict]) -> dict[str, str]:
    """Log the planned parents (FINISHED), nest the fold runs under them, then delete the older parents."""
    from mlflow.entities import Metric, Param, RunTag

    task, _ = TABLES[table]
    active = _active_runs(client, experiment_id)
    fold_runs: dict[str, list] = {}
    for run in active:
        tags = run.data.tags
        if JOB_TAG in tags and tags.get("task") == task and "configuration" in tags:
            fold_runs.setdefault(tags["configuration"], []).append(run)
    older_runs = [r for r in active if r.data.tags.get(PARENT_TAG, "").startswith(f"{table}/")]
    older = {r.info.run_id for r in older_runs}
    ids = {}
    for configuration, planned in plan.items():
        children = fold_runs.get(configuration, [])
        params = {**planned["params"], "n_children": len(children)}
        run = client.create_run(
            experiment_id, run_name=planned["run_name"], tags={PARENT_TAG: f"{table}/{configuration}"}
        )
        run_id = ids[configuration] = run.info.run_id
        try:
            now = int(time.time() * 1000)
            client.log_batch(
                run_id,
                metrics=[Metric(k, v, now, 0) for k, v in sorted(planned["metrics"].items())],
                params=[Param(k, str(v)) for k, v in sorted(params.items())],
            )
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED")
        for child in children:  # one call per child: MLflow has no batch across runs
            client.log_batch(child.info.run_id, tags=[RunTag(PARENT_ID_TAG, run_id)])
    for run in older_runs:
        if run.info.status == "RUNNING":  # an aggregation killed between creating and ending it
            client.set_terminated(run.info.run_id, status="KILLED")
        client.delete_run(run.info.run_id)
    for configuration, children in fold_runs.items():  # their parent is gone, none replaces it: top level
        if configuration not in ids:
            for child in children:
                if child.data.tags.get(PARENT_ID_TAG) in older:
                    client.delete_tag(child.info.run_id, PARENT_ID_TAG)
    return ids


def log_parents(
    uri: str, prefix: str, table1: pd.DataFrame, table2: pd.DataFrame
) -> dict[str, dict[str, str]]:
    """One parent run per configuration with results in the long-form tables, in the experiment of its fold
    runs, which it then holds as children; returns {"table1": {configuration: run id}, "table2": {...}}.

    Fold runs are the active runs of the experiment with the job tag and the tags ``configuration`` and
    ``task`` of the configuration (as ``avemotion.train`` sets them). Parents logged before (a previous
    aggregation) are soft-deleted once the new ones exist, so each configuration keeps exactly one; the fold
    runs of a configuration that has no results any more lose their parent tag. Both tables and both
    experiments are checked before anything is logged: TrackingError when an experiment is missing,
    ValueError/KeyError when a table is not the long form of ``avemotion.tables``.
    """
    client = _client(uri)
    planned = {}
    for table, frame in (("table1", table1), ("table2", table2)):
        experiment_id = _experiment_id(client, uri, experiment_name(prefix, TABLES[table][0]))
        planned[table] = (experiment_id, parent_plan(table, frame))
    return {table: _replace_parents(client, eid, table, plan) for table, (eid, plan) in planned.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="MLflow store set-up (init, once before any training job) and parent runs (parents, after "
        "the tables are built)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create the tracking store and the experiments")
    parents = sub.add_parser("parents", help="one parent run per table configuration, holding its fold runs")
    for command in (init, parents):
        command.add_argument(
            "--uri", default=None, help="tracking URI (default: MLFLOW_TRACKING_URI or SQLite)"
        )
        command.add_argument("--prefix", default="avemotion")
        command.add_argument("--root", type=Path, default=Path.cwd())
    parents.add_argument("--table1", type=Path, required=True, help="long-form table1.csv (avemotion.tables)")
    parents.add_argument("--table2", type=Path, required=True, help="long-form table2.csv (avemotion.tables)")
    parents.add_argument("--out", type=Path, required=True, help="JSON of the parent run ids")
    args = parser.parse_args(argv)
    try:
        uri = tracking_uri(args.uri, args.root)
    except TrackingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.command == "parents":
        return _main_parents(args, uri)
    names = [experiment_name(args.prefix, task) for task in EXPERIMENTS]
    try:
        ids = init_store(uri, names, artifact_root(args.root))
    except TrackingError as e:  # the server does not answer: its message names the URI
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # the store's own errors vary by backend; say which store failed
        print(f"error: cannot set up the MLflow store {uri}: {e}", file=sys.stderr)
        return 1
    for name, experiment_id in ids.items():
        print(f"mlflow experiment {name!r}: id {experiment_id} ({uri})")
    return 0


def _main_parents(args: argparse.Namespace, uri: str) -> int:
    try:
        table1, table2 = tables.read_long(args.table1), tables.read_long(args.table2)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        print(f"error: cannot read the tables: {e}", file=sys.stderr)
        return 1
    try:
        ids = log_parents(uri, args.prefix, table1, table2)
    except (TrackingError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    atomic_write_text(args.out, json.dumps(ids, indent=2, sort_keys=True) + "\n")
    for table, found in ids.items():
        print(f"{experiment_name(args.prefix, TABLES[table][0])}: {len(found)} parent runs ({uri})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
