"""Workflow tests: Snakemake runs on (a subset of) the demo dataset, in a fresh copy of the project."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from avemotion import config as avcfg
from avemotion import paper

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


MODEL = ROOT / "resources" / "models" / "face_landmarker.task"  # placed by `make models`


def copy_project(dest: Path) -> Path:
    """The workflow files of the project (what a clone has after `make models`), without results."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(ROOT / name, dest / name)
    for name in ("workflow", "envs"):
        shutil.copytree(ROOT / name, dest / name)
    (dest / "resources").symlink_to(ROOT / "resources", target_is_directory=True)
    return dest


def project_with(dest: Path, config: dict) -> Path:
    """A project copy at ``dest`` whose config.yaml is ``config``."""
    project = copy_project(dest)
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    return project


def copy_archives(
    source: Path, dest: Path, damage: dict[str, Callable[[Path, Path], None]] | None = None
) -> Path:
    """The four small-demo archives copied to ``dest``, ``damage[name](src, dest)`` writing the damaged copies."""
    dest.mkdir()
    for actor in (1, 2, 3, 4):
        name = f"Video_Speech_Actor_{actor:02d}.zip"
        src = source / name
        if damage and name in damage:
            damage[name](src, dest / name)
        else:
            shutil.copy(src, dest / name)
    return dest


def truncate(src: Path, dest: Path) -> None:
    """A damaged copy: the first half of ``src``'s bytes."""
    data = src.read_bytes()
    dest.write_bytes(data[: len(data) // 2])


def project_with_corrupt_archive(demo_project: Path, folder: Path) -> Path:
    """A small project in ``folder`` reading the demo's archives, Actor 03's cut in half."""
    archives = copy_archives(
        demo_project / "results/demo/archives", folder / "archives", {"Video_Speech_Actor_03.zip": truncate}
    )
    return project_with(folder / "p", small_config(archives_dir=str(archives), demo=None))


def small_config(**data_changes) -> dict:
    """The full config reduced to 4 actors in 2 folds, 8 clips per actor, a tiny TIM-Net, the LMS and Face KPD
    experiments plus two fine-tuned 8-class backbones (Eyes ResNet, Wav2Vec2-L: the demo's tiny random ones),
    two fusions of them (Eyes ResNet + LMS, Face KPD + Wav2Vec2-L), and the demo's tracker (MediaPipe) and
    job grouping (one training job per configuration and task for both folds)."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["data"].update(
        {
            "actors": [1, 2, 3, 4],
            "archives_dir": "results/demo/archives",
            "demo": {"seed": 0, "statements": [1], "repetitions": [1], "intensities": [1]},
            "expected_clips": 32,
            **data_changes,
        }
    )
    config["folds"] = {"0": [1, 3], "1": [2, 4]}
    small = {"learning_rate": 0.005, "batch_size": 8, "epochs": 3, "scales": 3, "channels": 8}
    for feature in ("lms", "face_kpd"):
        config["training"]["hyperparameters"][feature] = {"binary": small, "multiclass": small}
    demo = yaml.safe_load((ROOT / "workflow/profiles/demo/demo.yaml").read_text())
    config["patches"].update(demo["patches"])
    config["backbones"] = avcfg.deep_update(config["backbones"], demo["backbones"])
    tiny = {"learning_rate": 0.002, "batch_size": 8, "epochs": 2, "channels": 8}
    for feature in ("face_resnet", "eyes_resnet", "mouth_resnet", "wav2vec2_base", "wav2vec2_large"):
        scales = 3 if feature.endswith("resnet") else 8  # the demo's 10 fine-tuning frames; 146 frames
        config["training"]["hyperparameters"][feature] = {t: {**tiny, "scales": scales} for t in paper.TASKS}
    # Two fusions: a frozen ResNet with LMS, an engineered feature with frozen Wav2Vec2-L.
    fusion = {**small, "learning_rate": 0.002, "epochs": 4}
    config["training"]["fusion"].update(
        {"lms": fusion, "wav2vec2_large": fusion, "visual": fusion, "branch_scales": {}}
    )
    config["model"]["fusion"]["hidden"] = [16, 8]
    config["experiments"] = {
        "table1": ["lms", "face_kpd"],
        "table2": [
            "lms",
            "face_kpd",
            "eyes_resnet",
            "wav2vec2_large",
            "eyes_resnet+lms",
            "face_kpd+wav2vec2_large",
        ],
    }
    config["tracking"]["backend"] = "mediapipe"
    # As make demo: one job per configuration and task for every fold, and TIM-Net configurations in groups
    # (2 here: LMS and Face KPD binary in one job, each table's two single features in one, the fusions in one)
    config["jobs"]["group_folds"] = True
    config["jobs"]["configurations_per_job"] = 2
    # Two seeds of every TIM-Net (a job each), one of every fine-tuning: the tables' seed statistics.
    config["training"]["seeds"] = [1, 2]
    return config


def snakemake(project: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(project), "MLFLOW_TRACKING_URI": ""}
    return subprocess.run(
        [str(BIN / "snakemake"), "--cores", "2", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ArchiveServer(ThreadingHTTPServer):
    """Serves a folder's archives on 127.0.0.1 with HTTP Range; can cut the first transfer of a file, serve a
    damaged copy of another, and send slowly."""

    def __init__(self, folder, cut: dict[str, int] | None = None, damaged: set[str] = frozenset(), pace=0.0):
        super().__init__(("127.0.0.1", 0), ArchiveHandler)
        self.folder, self.cut, self.damaged, self.requests = folder, dict(cut or {}), damaged, []
        self.pace = pace  # seconds per 16 kB sent: a slow link, for a transfer to be killed midway


class ArchiveHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        name = self.path.split("?")[0].rsplit("/", 1)[-1]
        data = (self.server.folder / name).read_bytes()
        if name in self.server.damaged:
            data = data[:1000] + bytes(b ^ 0xFF for b in data[1000:2000]) + data[2000:]
        rng = self.headers.get("Range")
        self.server.requests.append((name, rng))
        start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1]) if rng else 0
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        cut = self.server.cut.pop(name, None)
        body = data[start:cut]
        step = 16384 if self.server.pace else len(body) or 1
        for i in range(0, len(body), step):
            self.wfile.write(body[i : i + step])
            time.sleep(self.server.pace)
        self.close_connection = cut is not None

    def log_message(self, *args):
        pass
