"""Shared fixtures: the project root, the validated full-reproduction config, and the expensive runs that the
tests share: each built once per test session, also when pytest-xdist runs the suite in several workers (the
first worker that needs one builds it under a file lock, in a folder every worker sees; the others wait for it
and read the same folder). A shared run is read, never changed: a test that runs Snakemake in it works on its
own copy (``copy_of``).

Also the session's summaries, which reach the terminal from every worker: the shared runs' set-up times (from
their record files) and the fault-injection ledger (from the test reports' ``user_properties``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

from avemotion.config import load_config

ROOT = Path(__file__).resolve().parents[1]

# The fault-injection ledger: what each test of tests/faults tried and checked, per stage.
LEDGER_COLUMNS = ("faults", "kills landed", "reruns", "files compared", "runs checked", "lost")
LEDGER: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(LEDGER_COLUMNS, 0))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def full_config() -> dict:
    return load_config(ROOT / "config.yaml")


def session_folder(tmp_path_factory) -> Path:
    """The folder every worker of this session sees: the session's base temp (each xdist worker's base temp
    is a folder in it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def record_setup(tmp_path_factory, name: str, seconds: float) -> None:
    """Notes how long a shared run or fixture took to set up, for the session's summary."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    (session_folder(tmp_path_factory) / f"{name}.setup.json").write_text(json.dumps([seconds, worker]))


def shared(tmp_path_factory, name: str, build: Callable[[Path], dict], label: str) -> tuple[Path, dict]:
    """``(folder, build(folder))``, ``build`` called once per session whichever worker asks first; a build
    that failed fails every test that needs it with the build's error, without building again. ``name``
    names the folder (no spaces: Snakemake's shell commands), ``label`` the run in the summary."""
    base = session_folder(tmp_path_factory)
    folder, record = base / name, base / f"{name}.json"
    with FileLock(base / f"{name}.lock"):
        if not record.exists():
            start = time.monotonic()
            state: dict = {"ok": False, "error": "interrupted"}
            try:
                state = {"ok": True, "info": build(folder)}
            except Exception as error:
                state = {"ok": False, "error": f"{type(error).__name__}: {error}"[-5000:]}
                raise
            finally:
                state["worker"] = os.environ.get("PYTEST_XDIST_WORKER", "main")
                record.write_text(json.dumps(state))
                record_setup(tmp_path_factory, label, time.monotonic() - start)
        state = json.loads(record.read_text())
    if not state["ok"]:
        pytest.fail(f"the shared run {label} failed in {state['worker']}: {state['error']}", pytrace=False)
    return folder, state["info"]


def copy_of(project: Path, dest: Path) -> Path:
    """A copy of a finished project that a test may change (links kept as links: resources/)."""
    shutil.copytree(project, dest, symlinks=True)
    return dest


# What `make demo` runs, as the demo-profile test runs it (tests/workflow/test_demo_run.py): the demo profile,
# one job per configuration and fold (an overlay on the demo's: --config would give the boolean as a string).
DEMO_PROFILE = (
    "--workflow-profile",
    "workflow/profiles/demo",
    "--configfile",
    "workflow/profiles/demo/demo.yaml",
)
PER_FOLD = "jobs:\n  group_folds: false\n  configurations_per_job: 1\n"


@pytest.fixture(scope="session")
def demo_profile_archives(tmp_path_factory) -> Path:
    """A copy of the project (without results) in which the demo profile has run its first job,
    make_demo_archives (the demo's synthetic RAVDESS: 12 actors). The demo-profile test runs the rest of its
    DAG in it; the small demo run reads 4 of its archives (one actor generated alone is byte-identical to the
    same actor in a full run: avemotion.demo)."""
    from workflow.conftest import copy_project, snakemake

    def build(folder: Path) -> dict:
        project = copy_project(folder / "project")
        (project / "per_fold.yaml").write_text(PER_FOLD)
        target = "results/demo/archives/ground_truth_clips.csv"
        result = snakemake(project, target, *DEMO_PROFILE, "per_fold.yaml")  # --configfile takes the rest
        assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
        return {}

    folder, _ = shared(
        tmp_path_factory, "demo-archives", build, "demo archives (make_demo_archives, 12 actors)"
    )
    return folder / "project"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, demo_profile_archives):
    """One complete small demo run (tests/workflow/conftest.py's small_config), shared by the workflow and the
    fault-injection tests that inspect its results or copy it: ``(project, its Snakemake call)``. Its 4 actors'
    archives are the demo's (``demo_profile_archives``), kept in the project's results/demo/archives as a
    user's local copy of RAVDESS (``data.archives_dir``), so the run starts at the download rule."""
    from workflow.conftest import project_with, small_config, snakemake

    def build(folder: Path) -> dict:
        project = project_with(folder / "project", small_config(demo=None))
        archives = project / "results/demo/archives"
        archives.mkdir(parents=True)
        for actor in small_config()["data"]["actors"]:
            name = f"Video_Speech_Actor_{actor:02d}.zip"
            shutil.copy(demo_profile_archives / "results/demo/archives" / name, archives / name)
        result = snakemake(project)
        assert result.returncode == 0, result.stderr[-5000:]
        return {"stdout": result.stdout, "stderr": result.stderr}

    folder, info = shared(tmp_path_factory, "small-demo", build, "small demo run")
    result = subprocess.CompletedProcess(["snakemake"], 0, info["stdout"], info["stderr"])
    return folder / "project", result


@pytest.fixture
def ledger(request):
    """``ledger(stage, **counts)`` adds to a stage's row of the fault-injection ledger (keys: its columns with
    "_" for " ")."""

    def add(stage: str, **counts: int) -> None:
        entry = [stage, {key.replace("_", " "): n for key, n in counts.items()}]
        request.node.user_properties.append(("ledger", entry))

    return add


def pytest_runtest_logreport(report):
    """Adds a test's ledger entries to the ledger, in the process that prints the summary (under xdist the
    controller, which gets every worker's reports)."""
    if report.when == "call":
        for key, value in report.user_properties:
            if key == "ledger":
                stage, counts = value
                for column, n in counts.items():
                    LEDGER[stage][column] += n


def pytest_terminal_summary(terminalreporter, config):
    """The shared runs' set-up times (slowest first), then the fault-injection ledger."""
    base = config._tmp_path_factory.getbasetemp()
    setups = {
        p.name.removesuffix(".setup.json"): json.loads(p.read_text()) for p in base.glob("*.setup.json")
    }
    if setups:
        terminalreporter.section("shared set-up (once per session, for every test that needs it)")
        for name, (seconds, worker) in sorted(setups.items(), key=lambda item: -item[1][0]):
            terminalreporter.write_line(f"{seconds:8.1f} s  {name}  (built by {worker})")
    if LEDGER:
        terminalreporter.section("fault injection")
        rows = [[stage, *(str(LEDGER[stage][c]) for c in LEDGER_COLUMNS)] for stage in sorted(LEDGER)]
        total = ["total", *(str(sum(LEDGER[s][c] for s in LEDGER)) for c in LEDGER_COLUMNS)]
        lines = [["stage", *LEDGER_COLUMNS], *rows, total]
        widths = [max(len(row[i]) for row in lines) for i in range(len(LEDGER_COLUMNS) + 1)]
        for row in lines:
            cells = (
                cell.rjust(w) if i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            terminalreporter.write_line("  ".join(cells))


# The suite's long poles, each kept on one worker (pytest-xdist's --dist loadgroup) and handed out first, so
# that the other worker fills the time around them with the rest: the demo-profile learning run, and the SLURM
# cluster with the runs it schedules.
LONG_POLES = {"workflow/test_demo_run.py": "demo-profile", "workflow/test_slurm.py": "slurm"}


def pytest_collection_modifyitems(config, items):
    first = {group: [] for group in LONG_POLES.values()}
    rest = []
    for item in items:
        path = item.path.relative_to(ROOT / "tests").as_posix()
        if path in LONG_POLES:
            item.add_marker(pytest.mark.xdist_group(LONG_POLES[path]))
            first[LONG_POLES[path]].append(item)
        else:
            rest.append(item)
    items[:] = [item for group in first.values() for item in group] + rest


SLURM_SCRIPT = ROOT / "tests" / "cluster" / "slurm.sh"


def pytest_collection_finish(session):
    """Where the session will run the SLURM tests and SLURM is missing (a fresh CI machine, as root), starts
    installing it at once, in the background (apt: mostly waiting on the network), so that the cluster is ready
    when its tests come (``slurm_installed``) instead of costing them minutes."""
    if not any(item.path.name == "test_slurm.py" for item in session.items):
        return
    if shutil.which("sbatch") or os.geteuid() != 0:
        return
    base = session_folder(session.config._tmp_path_factory)
    with FileLock(base / "slurm-install.lock"):
        if (base / "slurm-install.log").exists():
            return
        command = (
            f'"{SLURM_SCRIPT}" install > "{base}/slurm-install.log" 2>&1; echo $? > "{base}/slurm-install.rc"'
        )
        subprocess.Popen(["bash", "-c", command], start_new_session=True)


def slurm_installed(tmp_path_factory, timeout: float = 900) -> None:
    """Waits for the background install of ``pytest_collection_finish`` where one was started; fails with its
    log where it failed."""
    base = session_folder(tmp_path_factory)
    if not (base / "slurm-install.log").exists():
        return
    rc, deadline = base / "slurm-install.rc", time.monotonic() + timeout
    while not rc.exists() and time.monotonic() < deadline:
        time.sleep(1)
    if not rc.exists() or rc.read_text().strip() != "0":
        log = (base / "slurm-install.log").read_text()[-3000:]
        pytest.fail(f"installing SLURM ({SLURM_SCRIPT} install) failed or timed out:\n{log}", pytrace=False)
