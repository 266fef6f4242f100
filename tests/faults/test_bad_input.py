"""Bad inputs at the command line: one table, one bad input per row, each run as its Snakemake rule runs it.

Every row builds a small project folder holding the inputs of one job with one fault injected, runs the job's
``python -m avemotion.<stage> ...`` in it with the argument shapes of its rule in ``workflow/rules/*.smk``
(relative paths, the project folder as working directory, the output's parent folders made first, as
Snakemake makes them), and checks what the user gets:

- exit status 1, and exactly one ``error: ...`` line naming the offending file (or config key) and saying
  what to do about it (the row's remedy words), with no Python traceback anywhere in the output;
- nothing of the job left behind: none of its outputs, no temporary or build file, nothing new at all in the
  project folder (except the diagnostic a diverging training job is asked to keep, which the row checks).

The config rows are the exception: no CLI of the package reads the config. The Snakefile checks it with
``avemotion.config.validate_schema`` against ``workflow/schemas/config.schema.yaml`` (then
``snakemake.utils.validate``, which fills in the defaults) and calls ``avemotion.config.check_config``
(workflow/rules/common.smk); tests/workflow shows that message at the workflow's start. These rows call
``avemotion.config.load_config`` (the same schema through ``validate_schema``, then ``check_config``) on
``config.yaml`` plus an overlay file, as ``snakemake --configfile overlay.yaml`` merges it, and check the
ConfigError's one-line message instead of an exit status.

The inputs come from the unit tests' helpers: tiny H.264/AAC clips (tests/unit/test_audio.py), tracking
contract tables (tests/unit/contract_data.py), zip archives (tests/unit/test_download.py), toy feature arrays
and training specs (tests/unit/test_train.py).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from unit.contract_data import contract_table, face, zenodo_csv
from unit.test_audio import build_clip, noise
from unit.test_download import _zip
from unit.test_train import _cli_inputs, small_spec

from avemotion import clips, download, paper, tracking
from avemotion import config as avcfg

ROOT = Path(__file__).resolve().parents[2]
GOOD, BAD = "01-01-03-01-01-01-01", "01-01-05-01-01-01-01"  # actor 1; the clip table sorts GOOD first
N_FRAMES = 90  # the central 88-frame window is frames 2..89
TRACKING_ZIP = "results/download/FacialTracking_Actors_01-24.zip"


@dataclass
class Case:
    """One bad input: the job's command (or a config overlay), what its message must say, what it must not
    leave behind."""

    names: str  # the offending file or config key, as the message must name it
    remedy: str  # regex (case-insensitive) of the what-to-do words the message must hold
    outputs: list[str] = field(default_factory=list)  # the job's declared outputs, relative to the project
    argv: list[str] | None = None  # python -m <argv>, run in the project folder
    overlay: str | None = None  # config rows: the overlay file load_config reads after config.yaml
    keeps: tuple[str, ...] = ()  # what the job is asked to leave (checked by ``check``)
    check: Callable[[Path], None] | None = None  # a row's own check of what it keeps


def make_parents(project: Path, *paths: str) -> None:
    for path in paths:
        (project / path).parent.mkdir(parents=True, exist_ok=True)


def tree(project: Path) -> set[str]:
    """Every file and folder under the project, hidden ones included, relative."""
    return {p.relative_to(project).as_posix() for p in project.rglob("*")}


# --------------------------------------------------------------------------------------------- the inputs


def clip_table(project: Path, videos: list[Path]) -> str:
    """results/clips/clips.csv of ``videos`` (paths relative to the project), as build_clip_table writes it."""
    table = "results/clips/clips.csv"
    make_parents(project, table)
    rows = clips.clip_table([v.relative_to(project) for v in videos], paper.FOLDS)
    (project / table).write_text(rows.to_csv(index=False))
    return table


def good_clip(folder: Path, name: str = GOOD, n_frames: int = N_FRAMES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return build_clip(folder / f"{name}.mp4", n_frames, noise(n_frames * paper.SAMPLES_PER_FRAME))


def write_contract(folder: Path, clip: str, table: pd.DataFrame, n_frames: int = N_FRAMES) -> Path:
    """A clip's tracking contract CSV and its sidecar, as the extract_openface rule leaves them."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{clip}.csv"
    tracking.write_contract(path, table, {"backend": "test", "video_frames": n_frames, "clip": clip})
    return path


def face_contract(n_frames: int = N_FRAMES, **columns) -> pd.DataFrame:
    """A tracked face in every frame (confidence 0.98, success 1), head pose varying over time."""
    t = np.arange(n_frames, dtype=float)
    pose = {f"pose_{a}": np.sin(t / (5 + i)) for i, a in enumerate(("Rx", "Ry", "Rz", "Tx", "Ty", "Tz"))}
    return contract_table(face(n_frames), **{**pose, **columns})


def write_record(project: Path, archive: str) -> str:
    """The archive's JSON record, as the download rules write it."""
    record = str(Path(archive).with_suffix(".json"))
    path = project / archive
    download.write_record(
        project / record,
        download.ArchiveRecord(path.name, path.stat().st_size, download.md5sum(path), path.as_uri()),
    )
    return record


# ------------------------------------------------------------------------------- extract_audio (audio CLI)


def audio_job(project: Path, make_bad: Callable[[Path], Path]) -> Case:
    """extract_audio of actor 1: a good clip, then the bad one ``make_bad`` writes at the path it is given."""
    folder = project / "results/clips/Actor_01"
    bad = make_bad(good_clip(folder).with_name(f"{BAD}.mp4"))
    table = clip_table(project, [folder / f"{GOOD}.mp4", bad])
    out = "results/audio/Actor_01.npz"
    make_parents(project, out)
    return Case(
        names=bad.relative_to(project).as_posix(),
        remedy=r"re-download the actor's archive",
        outputs=[out],
        argv=["avemotion.audio", "--clips", table, "--actor", "1", "--out", out],
    )


def truncated(path: Path) -> Path:
    whole = build_clip(path.with_name("whole.mp4"), 100, noise(100 * paper.SAMPLES_PER_FRAME))
    data = whole.read_bytes()
    whole.unlink()
    path.write_bytes(data[: len(data) // 2])  # an interrupted copy
    return path


def no_audio(path: Path) -> Path:
    return build_clip(path, 100, None)


def wrong_fps(path: Path) -> Path:
    return build_clip(path, 100, noise(100 * 1920), fps=25)  # 25 fps: 1920 samples per frame


def too_short(path: Path) -> Path:
    return build_clip(path, 80, noise(80 * paper.SAMPLES_PER_FRAME))  # 80 frames, the window needs 88


# -------------------------------------------------------------------------- extract_openface (tracking CLI)


def tracking_job(project: Path, bad_csv: str | None, zero_byte: bool = False) -> Case:
    """extract_openface of actor 1 with the precomputed backend (the full run's): a good clip, then the bad
    one, whose video is empty (``zero_byte``) or whose CSV in the release zip is ``bad_csv``."""
    folder = project / "results/clips/Actor_01"
    good = good_clip(folder)
    bad = folder / f"{BAD}.mp4"
    if zero_byte:
        bad.write_bytes(b"")
    else:
        good_clip(folder, BAD)
    make_parents(project, TRACKING_ZIP)
    members = {f"{GOOD}.csv": zenodo_csv(face_contract()).encode()}
    members[f"{BAD}.csv"] = (bad_csv if bad_csv is not None else zenodo_csv(face_contract())).encode()
    _zip(project / TRACKING_ZIP, members)
    record = write_record(project, TRACKING_ZIP)
    table = clip_table(project, [good, bad])
    out = "results/tracking/Actor_01"
    make_parents(project, out)
    params = json.dumps(avcfg.load_config(ROOT / "config.yaml")["tracking"]["precomputed"])
    argv = ["avemotion.tracking", "precomputed", "--clips", table, "--actor", "1", "--out", out]
    argv += ["--params", params, "--archive", TRACKING_ZIP, "--record", record]
    names = bad.relative_to(project).as_posix() if zero_byte else TRACKING_ZIP
    remedy = r"re-download the actor's archive" if zero_byte else r"rerun the tracking|re-download"
    return Case(names=names, remedy=remedy, outputs=[out], argv=argv)


def zero_byte_mp4(project: Path) -> Case:
    return tracking_job(project, None, zero_byte=True)


def wrong_columns(project: Path) -> Case:
    """The release's CSV without the action units (a tracker run without -aus)."""
    release = pd.read_csv(io.StringIO(zenodo_csv(face_contract())))
    return tracking_job(
        project, release.drop(columns=[c for c in release if c.startswith("AU")]).to_csv(index=False)
    )


# --------------------------------------------------------------------------- extract_features (features CLI)


def features_job(project: Path, bad: pd.DataFrame) -> Case:
    """extract_features of head_pose over actor 1's tracking folder: a good contract, then ``bad``."""
    folder = project / "results/tracking/Actor_01"
    write_contract(folder, GOOD, face_contract())
    bad_csv = write_contract(folder, BAD, bad)
    videos = [project / f"results/clips/Actor_01/{c}.mp4" for c in (GOOD, BAD)]  # named, not read
    table = clip_table(project, videos)
    out, index = "results/features/head_pose/features.npy", "results/features/head_pose/index.csv"
    make_parents(project, out, index)
    params = json.dumps(avcfg.feature_params(avcfg.load_config(ROOT / "config.yaml"), "head_pose"))
    argv = ["avemotion.features", "head_pose", "--clips", table, "--inputs", "results/tracking/Actor_01"]
    argv += ["--params", params, "--threads", "1", "--out", out, "--index", index]
    return Case(
        names=bad_csv.relative_to(project).as_posix(),
        remedy=r"check the video, or raise the limits",
        outputs=[out, index],
        argv=argv,
    )


def missing_rows(project: Path) -> Case:
    """Every other row of frames 10..81 missing: 36 of the 88 window frames (limit: a quarter), no long run."""
    table = face_contract()
    return features_job(project, table[~table["frame"].isin(range(10, 82, 2))])


def nan_values(project: Path) -> Case:
    """Head pose NaN in frames 30..49: a 20-frame lost run in the window (limit 15)."""
    nan = face_contract()
    nan.loc[nan["frame"].between(30, 49), ["pose_Rx", "pose_Ty"]] = np.nan
    return features_job(project, nan)


# ------------------------------------------------------------------------------ crop_patches (patches CLI)


def patches_job(project: Path, video: Path, contract: pd.DataFrame, remedy: str, names: str = "") -> Case:
    """crop_patches of actor 1: one clip and its tracking contract; the message names ``names`` (default: the
    contract CSV)."""
    tracking_dir = project / "results/tracking/Actor_01"
    csv = write_contract(tracking_dir, BAD, contract)
    table = clip_table(project, [video])
    out = "results/patches/Actor_01"
    make_parents(project, out)
    params = json.dumps(avcfg.patch_params(avcfg.load_config(ROOT / "config.yaml")))
    argv = ["avemotion.patches", "--clips", table, "--actor", "1", "--tracking", "results/tracking/Actor_01"]
    argv += ["--out", out, "--params", params]
    names = names or csv.relative_to(project).as_posix()
    return Case(names=names, remedy=remedy, outputs=[out], argv=argv)


def face_lost(project: Path) -> Case:
    """The tracker lost the face (success 0) for 20 consecutive frames of the window (limit 15)."""
    success = np.ones(N_FRAMES)
    success[30:50] = 0
    video = good_clip(project / "results/clips/Actor_01", BAD)
    return patches_job(
        project, video, face_contract(success=success), r"check the video, or raise the limits"
    )


def wrong_resolution(project: Path) -> Case:
    """A 64x48 clip. The video stages do not check the resolution (audio: no pixels used; tracking: any frame
    size, and the features from it are 3D, in mm); the patch crops are pixel boxes of a 1280x720 frame, so
    crop_patches refuses any other size before cutting anything."""
    video = good_clip(project / "results/clips/Actor_01", BAD)  # build_clip writes 64x48 frames
    names = video.relative_to(project).as_posix()
    return patches_job(project, video, face_contract(), r"re-download the actor's archive", names)


# ------------------------------------------------------------------------ download_archive, extract_clips


def wrong_md5_local(project: Path) -> Case:
    """An archive in data.archives_dir whose md5 is not the config's (data.md5)."""
    src = "archives/Video_Speech_Actor_01.zip"
    make_parents(project, src)
    _zip(project / src, {f"Actor_01/{GOOD}.mp4": b"not the published bytes"})
    out, record = "results/download/Video_Speech_Actor_01.zip", "results/download/Video_Speech_Actor_01.json"
    make_parents(project, out)
    argv = ["avemotion.download", "local", "--src", src, "--md5", "0" * 32, "--out", out, "--record", record]
    return Case(names=src, remedy=r"replace it with a fresh copy", outputs=[out, record], argv=argv)


def wrong_md5_fetch(project: Path) -> Case:
    """The tracking archive downloaded (here from a file:// URL) with another md5 than tracking.precomputed.md5."""
    src = project / "server/FacialTracking_Actors_01-24.zip"
    src.parent.mkdir()
    _zip(src, {f"{GOOD}.csv": b"frame\n1\n"})
    record = str(Path(TRACKING_ZIP).with_suffix(".json"))
    make_parents(project, TRACKING_ZIP)
    md5 = avcfg.load_config(ROOT / "config.yaml")["tracking"]["precomputed"]["md5"]
    argv = ["avemotion.download", "fetch", "--url", src.as_uri(), "--retries", "0", "--timeout", "5"]
    argv += ["--md5", md5, "--out", TRACKING_ZIP, "--record", record]
    return Case(
        names=src.as_uri(), remedy=r"rerun to download it again", outputs=[TRACKING_ZIP, record], argv=argv
    )


def path_traversal(project: Path) -> Case:
    """An archive (its record matching) with a member that climbs out of the clips folder."""
    archive = "results/download/Video_Speech_Actor_01.zip"
    make_parents(project, archive)
    _zip(project / archive, {f"Actor_01/{GOOD}.mp4": b"clip", f"Actor_01/../../../{BAD}.mp4": b"escaped"})
    record = write_record(project, archive)
    out = "results/clips/Actor_01"
    make_parents(project, out)
    argv = ["avemotion.download", "extract", "--archive", archive, "--record", record, "--out", out]
    argv += ["--pattern", "01-01-*.mp4"]
    return Case(names=archive, remedy=r"delete .* and rerun to download it again", outputs=[out], argv=argv)


# ------------------------------------------------------------------------------- train_multiclass (train CLI)

DIAGNOSTIC = "logs/train_multiclass/lms/fold0.log.nonfinite.json"


def diverging_training(project: Path) -> Case:
    """Learning rate 1e30: the first Adam step blows the weights up, the second step's loss is not finite.
    The job runs without --tracking-uri (no MLflow store to open); the rule passes one."""
    inputs = project / "inputs"
    inputs.mkdir()
    args = _cli_inputs(inputs)
    config = avcfg.load_config(ROOT / "config.yaml")
    spec = small_spec(config, "multiclass", "all", epochs=2, learning_rate=1e30, batch_size=16)
    out = "results/train/lms/multiclass/all/fold0"
    make_parents(project, out, DIAGNOSTIC)
    argv = ["avemotion.train", "--spec", spec.to_json(), *args, "--out", out, "--threads", "1"]
    argv += ["--diagnostic", DIAGNOSTIC]

    def check(project: Path) -> None:
        saved = json.loads((project / DIAGNOSTIC).read_text())
        assert saved["job"]["learning_rate"] == 1e30 and saved["job"]["fold"] == 0
        assert any(v in ("nan", "inf", "-inf") for v in saved["loss"])
        assert saved["inputs_non_finite"] == [0] and len(saved["batch_clips"]) == 16

    return Case(
        names="training.hyperparameters.lms.multiclass.learning_rate",
        remedy=r"lower the learning rate",
        outputs=[f"{out}/{name}" for name in avcfg.JOB_OUTPUTS] + [out],
        argv=argv,
        keeps=(DIAGNOSTIC,),
        check=check,
    )


# ---------------------------------------------------------------------------------- config (load_config)


def overlay(project: Path, values: dict, names: str, remedy: str) -> Case:
    (project / "overlay.yaml").write_text(yaml.safe_dump(values))
    return Case(names=f"config key '{names}'", remedy=remedy, overlay="overlay.yaml")


def unknown_key(project: Path) -> Case:
    return overlay(project, {"training": {"learnig_rate": 0.001}}, "training", r"remove that key")


def out_of_range(project: Path) -> Case:
    values = {"training": {"hyperparameters": {"lms": {"binary": {"learning_rate": 5}}}}}
    return overlay(project, values, "training.hyperparameters.lms.binary.learning_rate", r"set a value")


def fold_leak(project: Path) -> Case:
    """Actor 2 (tested in fold 0) also in fold 1's test actors."""
    return overlay(project, {"folds": {"1": [2, 3, 6, 7, 13, 18]}}, "folds", r"remove actor 2 from one")


# ------------------------------------------------------------------------------------------------ the table

ROWS = [
    pytest.param("audio", lambda p: audio_job(p, truncated), id="truncated-mp4"),
    pytest.param("tracking", zero_byte_mp4, id="zero-byte-mp4"),
    pytest.param("audio", lambda p: audio_job(p, no_audio), id="mp4-without-audio"),
    pytest.param("audio", lambda p: audio_job(p, wrong_fps), id="wrong-frame-rate"),
    pytest.param("patches", wrong_resolution, id="wrong-resolution"),
    pytest.param("audio", lambda p: audio_job(p, too_short), id="shorter-than-88-frames"),
    pytest.param("download", wrong_md5_local, id="wrong-md5-local-archive"),
    pytest.param("download", wrong_md5_fetch, id="wrong-md5-downloaded-archive"),
    pytest.param("download", path_traversal, id="zip-path-traversal"),
    pytest.param("features", missing_rows, id="tracking-missing-rows"),
    pytest.param("features", nan_values, id="tracking-nan"),
    pytest.param("patches", face_lost, id="tracking-face-lost-20-frames"),
    pytest.param("tracking", wrong_columns, id="tracking-wrong-columns"),
    pytest.param("config", unknown_key, id="config-unknown-key"),
    pytest.param("config", out_of_range, id="config-out-of-range"),
    pytest.param("config", fold_leak, id="config-fold-leak"),
    pytest.param("training", diverging_training, id="training-non-finite-loss"),
]


@pytest.mark.parametrize(("stage", "build"), ROWS)
def test_a_bad_input_stops_its_job_with_one_clear_message_and_leaves_nothing(
    stage, build, tmp_path, ledger
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    case = build(project)
    before = tree(project)
    if case.argv is not None:
        done = subprocess.run(
            [sys.executable, "-m", *case.argv], cwd=project, capture_output=True, text=True, timeout=180
        )
        status, output = done.returncode, done.stdout + done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    else:  # a config row: load_config raises, and Snakemake would stop before running any job
        with pytest.raises(avcfg.ConfigError) as raised:
            avcfg.load_config(ROOT / "config.yaml", project / case.overlay)
        status, output = None, str(raised.value)
        errors = output.splitlines()
    left = sorted(
        (tree(project) - before - set(case.keeps)) | {o for o in case.outputs if (project / o).exists()}
    )
    ledger(stage, faults=1, lost=len(left))

    if case.argv is not None:
        assert status == 1, output
    assert "Traceback" not in output, output
    assert len(errors) == 1, output
    message = errors[0]
    assert case.names in message, message
    assert re.search(case.remedy, message, flags=re.IGNORECASE), message
    assert left == [], f"left behind: {left}"
    for kept in case.keeps:
        assert (project / kept).is_file(), kept
    if case.check is not None:
        case.check(project)
