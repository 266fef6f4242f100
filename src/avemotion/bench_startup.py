"""Fixed costs: what every Snakemake job pays before its work starts, and what that adds up to.

Every rule runs ``python -m avemotion.<module> ...`` in a fresh process (locally and on SLURM alike), so every
job pays the interpreter, its module's imports (torch, pandas, transformers, ...) and, for a tracked training
job, importing MLflow (what it adds to the module's own imports) and opening one MLflow run per fold job it
trains. This measures each of those in fresh
processes (the best of ``repeats``), reads every rule's module from the workflow itself (its shell command),
counts the jobs per rule of a workflow run (a forced dry run, so every job counts), and multiplies:

    start-up of a rule = jobs x (import of its module [+ MLflow's extra import + runs per job x run open/close])

For the run just measured it also compares the total with the job time the run's own Snakemake benchmark
files recorded (``benchmarks/<rule>/...tsv``, seconds per job): the share of the run's work that is start-up.

CLI: ``python -m avemotion.bench startup [--workflow-profile workflow/profiles/demo] [--repeats 3]``
writes ``startup.csv``, ``startup.md`` and ``startup.json`` under ``--out-dir``.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

MODULE = re.compile(r"python -m (avemotion\.\w+)")
# A tracked fold job opens its MLflow run in the training process (avemotion.train.run_jobs); a training job
# writes one metrics.json per fold job it trains (8 one-vs-rest targets of a fold, x5 with jobs.group_folds).
TRACKED = "--tracking-uri"
FOLD_JOB_OUTPUT = "metrics.json"

MLFLOW_RUN = """
import sys, time
from pathlib import Path
t0 = time.perf_counter()
from avemotion import runs
uri = f"sqlite:///{sys.argv[1]}/mlflow.db"
runs.init_store(uri, ["bench"], Path(sys.argv[1]) / "artifacts")
t1 = time.perf_counter()
with runs.job_run(uri, "bench", "bench/job", "bench", {}) as run:
    run.log_params({"a": 1})
print(time.perf_counter() - t1)
"""


def seconds_of(code: str, repeats: int, *args: str) -> float:
    """The best wall time of a fresh ``python -c code`` process."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return best


def mlflow_run_seconds(repeats: int) -> float:
    """Opening, parameter-logging and closing one MLflow run in a SQLite store whose schema exists."""
    best = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            out = subprocess.run(
                [sys.executable, "-c", MLFLOW_RUN, tmp], check=True, capture_output=True, text=True
            )
            best = min(best, float(out.stdout.split()[-1]))
    return best


def rule_commands(
    workdir: Path, profile: Path | None
) -> tuple[dict[str, str], dict[str, int], dict[str, float]]:
    """Each rule's shell command, the number of jobs per rule of a forced dry run of the workflow, and the
    fold jobs (MLflow runs) per job of each training rule."""
    import yaml
    from snakemake.api import SnakemakeApi
    from snakemake.dag import DAG
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
        StorageSettings,
    )

    configfiles = []
    if profile is not None:  # the profile's config overlay (the demo's), as `--workflow-profile` applies it
        listed = (yaml.safe_load((profile / "config.yaml").read_text()) or {}).get("configfile") or []
        configfiles = [workdir / f for f in ([listed] if isinstance(listed, str) else listed)]
    captured: dict = {}
    update_groups = DAG.update_groups

    def capture(dag):
        update_groups(dag)
        captured["jobs"] = list(dag.needrun_jobs())

    DAG.update_groups = capture
    try:  # Snakemake prints its dry-run summary to stdout even when quiet: keep the report clean
        with contextlib.redirect_stdout(io.StringIO()), SnakemakeApi(OutputSettings(quiet={"all"})) as api:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=1),
                config_settings=ConfigSettings(configfiles=configfiles),
                storage_settings=StorageSettings(),
                snakefile=workdir / "Snakefile",
                workdir=workdir,
            )
            workflow.dag(DAGSettings(forceall=True)).execute_workflow(executor="dryrun")
            commands = {r.name: r.shellcmd or "" for r in workflow._workflow.rules}
    finally:
        DAG.update_groups = update_groups
    counts: dict[str, int] = {}
    fold_jobs: dict[str, int] = {}
    for job in captured["jobs"]:
        if not job.rule.norun:
            counts[job.rule.name] = counts.get(job.rule.name, 0) + 1
            n = sum(Path(f).name == FOLD_JOB_OUTPUT for f in job.output)
            if n:
                fold_jobs[job.rule.name] = fold_jobs.get(job.rule.name, 0) + n
    return commands, counts, {rule: n / counts[rule] for rule, n in fold_jobs.items()}


@dataclass(frozen=True)
class RuleStartup:
    rule: str
    module: str
    jobs: int
    import_s: float  # interpreter + the module's imports, fresh process
    mlflow_s: float  # per job: MLflow import + its runs' open/close (0 when not tracked)
    per_job_s: float
    total_s: float  # jobs x per_job_s


def rule_rows(
    commands: dict[str, str],
    counts: dict[str, int],
    imports: dict[str, float],
    mlflow_import: dict[str, float],
    run: float,
    runs_per_job: dict[str, float],
) -> list[RuleStartup]:
    rows = []
    for rule, jobs in counts.items():
        match = MODULE.search(commands.get(rule, ""))
        if match is None:
            continue
        module = match.group(1)
        tracked = TRACKED in commands[rule]
        mlflow = mlflow_import[module] + runs_per_job.get(rule, 1) * run if tracked else 0.0
        per_job = imports[module] + mlflow
        rows.append(RuleStartup(rule, module, jobs, imports[module], mlflow, per_job, jobs * per_job))
    return sorted(rows, key=lambda r: -r.total_s)


def recorded_seconds(tsv: Path) -> float:
    """The wall seconds a Snakemake benchmark file recorded for its job (its last repeat's ``s``)."""
    return float(pd.read_csv(tsv, sep="\t")["s"].iloc[-1])


def job_seconds(benchmarks: Path) -> dict[str, float]:
    """Seconds per rule that the last run's Snakemake benchmark files recorded (``s`` column)."""
    totals: dict[str, float] = {}
    for tsv in sorted(benchmarks.glob("*/**/*.tsv")):
        rule = tsv.relative_to(benchmarks).parts[0]
        totals[rule] = totals.get(rule, 0.0) + recorded_seconds(tsv)
    return totals


def measure(workdir: Path, profile: Path | None, repeats: int) -> dict:
    commands, counts, runs_per_job = rule_commands(workdir, profile)
    modules = sorted({m.group(1) for c in commands.values() if (m := MODULE.search(c))})
    python = seconds_of("pass", repeats)
    imports = {m: seconds_of(f"import {m}", repeats) for m in modules}
    # What importing MLflow adds to a tracked job's own imports (numpy, pandas, ... are loaded already).
    tracked = sorted({m.group(1) for c in commands.values() if TRACKED in c and (m := MODULE.search(c))})
    mlflow_import = {
        m: max(seconds_of(f"import {m}; from mlflow.tracking import MlflowClient", repeats) - imports[m], 0.0)
        for m in tracked
    }
    run = mlflow_run_seconds(repeats)
    rows = rule_rows(commands, counts, imports, mlflow_import, run, runs_per_job)
    recorded = job_seconds(workdir / "benchmarks")
    return {
        "python_s": python,
        "imports_s": imports,
        "mlflow_import_s": mlflow_import,
        "mlflow_run_s": run,
        "jobs": sum(counts.values()),
        "rows": [asdict(r) for r in rows],
        "startup_s": sum(r.total_s for r in rows),
        "recorded_job_s": sum(recorded.get(r.rule, 0.0) for r in rows) if recorded else None,
    }


def render(result: dict) -> str:
    lines = [
        f"interpreter alone: {result['python_s']:.2f} s; MLflow import on top of a module's own: "
        + ", ".join(f"{s:.2f} s ({m})" for m, s in result["mlflow_import_s"].items())
        + f"; one MLflow run opened and closed (SQLite): {result['mlflow_run_s']:.2f} s",
        "",
        "| rule | module | jobs | import s | MLflow s/job | start-up s/job | start-up s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['rule']} | {r['module']} | {r['jobs']} | {r['import_s']:.2f} | {r['mlflow_s']:.2f} | "
            f"{r['per_job_s']:.2f} | {r['total_s']:.0f} |"
        )
    total = result["startup_s"]
    lines += ["", f"{result['jobs']} jobs; start-up {total:.0f} job-seconds in all."]
    if result["recorded_job_s"]:
        share = total / result["recorded_job_s"]
        lines.append(
            f"The last run's benchmark files record {result['recorded_job_s']:.0f} job-seconds for these rules: "
            f"start-up is {100 * share:.0f} % of them."
        )
    return "\n".join(lines)
