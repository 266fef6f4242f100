"""The tracking backends inside the workflow: the precomputed release (a zip in the real Zenodo 3255102 format,
placed and verified by the download code) and the openface backend (through a stand-in executable)."""

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from avemotion import tracking

from .conftest import ROOT, project_with, small_config, snakemake

RELEASE = "FacialTracking_Actors_01-24"
HEADER = (ROOT / "tests/data/ravdess-facialtracking-openface-2.1.0-header.csv").read_text().strip().split(",")


def release_zip(tracking_dirs: list[Path], dest: Path) -> Path:
    """A zip laid out like the RAVDESS facial-tracking release (flat, the release's exact 712 columns, no
    face_id/success), from the contract CSVs in ``tracking_dirs``, plus a song clip to be ignored."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for folder in tracking_dirs:
            for path in sorted(folder.glob("*.csv")):
                table = tracking.read_openface_csv(path)
                release = pd.DataFrame({c: table[c] if c in table.columns else 0.0 for c in HEADER})
                zf.writestr(path.name, release.to_csv(index=False))
        zf.writestr("01-02-01-01-01-01-01.csv", "frame,timestamp\n1,0\n")  # a song clip: not kept
    return dest


def precomputed_project(demo_project: Path, dest: Path, archive: Path, md5: str) -> Path:
    config = small_config(archives_dir=str(demo_project / "results/demo/archives"), demo=None)
    config["tracking"]["backend"] = "precomputed"
    config["tracking"]["precomputed"].update(archive=str(archive), md5=md5, size=archive.stat().st_size)
    return project_with(dest, config)


def test_precomputed_release_through_the_download_code_gives_the_same_features(demo_run, tmp_path):
    demo_project, _ = demo_run
    dirs = sorted((demo_project / "results/tracking").glob("Actor_*"))
    archive = release_zip(dirs, tmp_path / f"{RELEASE}.zip")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    project = precomputed_project(demo_project, tmp_path / "p", archive, md5)
    result = snakemake(project, "results/features/face_kpd/features.npy")
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((project / f"results/download/{RELEASE}.json").read_text())
    assert record["md5"] == md5 and record["source"] == archive.as_uri()
    sidecar = json.loads((project / "results/tracking/Actor_03/01-01-07-01-01-01-03.json").read_text())
    assert sidecar["backend"] == "precomputed" and sidecar["member"] == "01-01-07-01-01-01-03.csv"
    ours = np.load(project / "results/features/face_kpd/features.npy")
    theirs = np.load(demo_project / "results/features/face_kpd/features.npy")
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_precomputed_release_with_a_wrong_md5_is_refused_and_nothing_is_left(demo_run, tmp_path):
    demo_project, _ = demo_run
    archive = release_zip(sorted((demo_project / "results/tracking").glob("Actor_*"))[:1], tmp_path / "r.zip")
    project = precomputed_project(demo_project, tmp_path / "p", archive, "0" * 32)
    result = snakemake(project, "results/tracking/Actor_01")
    assert result.returncode != 0
    log = (project / "logs/download_tracking/download_tracking.log").read_text()
    assert f"{archive}: expected md5 {'0' * 32}, got" in log
    assert not (project / "results/download").exists() or not any(
        (project / "results/download").glob("Facial*")
    )
    assert not (project / "results/tracking").exists()


def test_openface_backend_in_the_workflow_with_stand_in_executable(demo_run, tmp_path):
    demo_project, _ = demo_run
    config = small_config(archives_dir=str(demo_project / "results/demo/archives"), demo=None)
    config["tracking"]["backend"] = "openface"
    stand_in = str(ROOT / "tests/data/FeatureExtraction")
    config["tracking"]["openface"]["command"] = [stand_in]
    project = project_with(tmp_path / "p", config)
    result = snakemake(project, "results/tracking/Actor_02")
    assert result.returncode == 0, result.stderr[-3000:]
    out = project / "results/tracking/Actor_02"
    assert len(list(out.glob("*.csv"))) == 8 and not list(out.glob("calls.txt"))
    sidecar = json.loads((out / "01-01-03-01-01-01-02.json").read_text())
    assert sidecar["command"][:2] == [stand_in, "-f"]
    assert sidecar["flags"] == ["-2Dfp", "-3Dfp", "-pose", "-aus", "-gaze"]
    assert sidecar["rows"] == sidecar["video_frames"] == sidecar["tracked_frames"]
    # A missing executable: one clear error naming the config key, and no tracking folder.
    config["tracking"]["openface"]["command"] = ["/opt/OpenFace/build/bin/FeatureExtraction"]
    project = project_with(tmp_path / "q", config)
    result = snakemake(project, "results/tracking/Actor_02")
    assert result.returncode != 0
    log = (project / "logs/extract_openface/02.log").read_text()
    assert "OpenFace executable '/opt/OpenFace/build/bin/FeatureExtraction' not found" in log
    assert "tracking.openface.command" in log
    assert not (project / "results/tracking/Actor_02").exists()
