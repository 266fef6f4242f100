"""How much the seed moves an accuracy: the LMS TIM-Net on real speech (Emo-DB), every fold with every seed.

RAVDESS is not needed: the benchmark reads a folder of Berlin Emo-DB recordings (``SSTTTEV.wav``: speaker SS,
text TTT, emotion letter E, version V; 10 speakers, 7 emotions) and runs the project's own pipeline on them:

- audio: each file decoded with ``audio.decode_audio`` (float32, integer PCM scaled by ``audio.to_float``)
  at the rate the file states (Emo-DB copies differ: 16 kHz, 22,050 Hz), channels averaged to mono, resampled
  to 48 kHz (``paper.SAMPLE_RATE``) with ``torchaudio.functional.resample``;
- the window: the central ``paper.N_SAMPLES`` (140,800, 2.93 s) samples, as the RAVDESS clips' central
  88 frames (an odd surplus drops its extra sample at the end). A recording SHORTER than the window is
  zero-padded equally on both sides, i.e. centred in silence (an odd shortfall puts the extra zero at the
  end); the report counts these recordings: many Emo-DB utterances are under 3 s;
- LMS: ``features.log_mel`` with config ``features.lms`` -> (N, 88, 24);
- folds: speaker-independent, the speakers sorted and split into ``--folds`` near-equal consecutive groups
  (default 5 folds of 2: 03+08, 09+10, 11+12, 13+14, 15+16);
- the model: config's 8-class LMS TIM-Net job (``config.train_spec(cfg, "lms", "multiclass", "all", i)``,
  Table 3's learning rate, batch size, epochs, scales and channels), with the fold's speakers as test actors
  and each seed, trained and evaluated by ``train.train_job`` exactly as a workflow job is. Labels: the 7
  Emo-DB emotions in the alphabetical order of :data:`EMOTIONS` as class indices 0..6. The model keeps its 8
  outputs (the 8-class model unchanged); the 8th is never a target (label smoothing still spreads its share
  of the target mass over it), and a prediction of it counts as wrong.

The grid of test accuracies (folds, seeds) is summarised with ``tables.seed_summary``, the statistics of a
Table 2 cell: mean, the spread over folds, the spread over seeds and the 95 % interval of the mean.

Emo-DB was recorded at 16 kHz: in a resampled copy the mel bands above 8 kHz (about 5 of the 24 up to 17 kHz)
hold next to nothing, and the standardisation then scales rounding noise up in them. What the benchmark
measures is the seed's effect on one model on real speech, not the paper's accuracy.

CLI::

    python -m avemotion.bench seeds --data /path/to/emodb [--base config.yaml] [--seeds 1 2 3 4 5] \
        [--folds 5] [--threads N] [--epochs E (smoke runs only)] [--out-dir results/benchmarks]

prints one line per trained model, then the report, and writes ``<out-dir>/seeds.md`` and ``seeds.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchaudio

from avemotion import audio, paper, tables, train
from avemotion import config as avcfg
from avemotion.config import TrainSpec
from avemotion.features import LMSConfig, log_mel
from avemotion.io import DiskFullError, atomic_group

# Emo-DB's emotion letters (German initials) and their English names.
EMOTION_LETTERS = {
    "W": "anger",  # Wut
    "L": "boredom",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fear",  # Angst
    "F": "happiness",  # Freude
    "T": "sadness",  # Trauer
    "N": "neutral",
}
# Class index i is EMOTIONS[i] (alphabetical, as paper.CLASSES orders RAVDESS's).
EMOTIONS: tuple[str, ...] = tuple(sorted(EMOTION_LETTERS.values()))
NAME = re.compile(r"(?P<speaker>\d\d)(?P<text>[a-z]\d\d)(?P<emotion>[WLEAFTN])(?P<version>[a-z])\.wav")
DEFAULT_SEEDS = (1, 2, 3, 4, 5)
DEFAULT_FOLDS = 5
WINDOW_S = paper.N_SAMPLES / paper.SAMPLE_RATE  # 2.93 s


class SeedBenchError(ValueError):
    """The benchmark cannot run as asked; the message names the folder, file or option and what to do."""


@dataclass(frozen=True)
class Recording:
    path: Path
    speaker: int
    text: str
    emotion: str  # English name, one of EMOTIONS
    version: str


# ---------------------------------------------------------------------------------------------- data


def parse_name(path: Path) -> Recording:
    """An Emo-DB file name ``SSTTTEV.wav`` -> its speaker, text, emotion and version."""
    match = NAME.fullmatch(Path(path).name)
    if match is None:
        raise SeedBenchError(
            f"{path}: not an Emo-DB file name SSTTTEV.wav (speaker SS, text TTT such as a01, emotion "
            f"letter E of {''.join(EMOTION_LETTERS)}, version V such as a); rename it or move it out of the "
            f"folder"
        )
    return Recording(
        Path(path),
        int(match["speaker"]),
        match["text"],
        EMOTION_LETTERS[match["emotion"]],
        match["version"],
    )


def find_recordings(folder: Path) -> list[Recording]:
    """Every ``*.wav`` directly in ``folder``, parsed, in name order; other files are ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SeedBenchError(f"--data {folder}: no such folder; give the folder holding the Emo-DB wav files")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav" and p.is_file())
    if not paths:
        raise SeedBenchError(f"--data {folder}: holds no .wav files; give the folder of the Emo-DB wav files")
    return [parse_name(p) for p in paths]


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    """A wav file's samples as float32 mono (channels averaged) and the rate the file states."""
    try:
        samples, rate = audio.decode_audio(path)
    except audio.AudioError as e:
        reason = str(e).replace(audio.CLIP_REMEDY, "").rstrip(" :;")
        raise SeedBenchError(f"{reason}; replace the file or move it out of the folder") from None
    if samples.shape[1] == 0:
        raise SeedBenchError(f"{path}: holds no samples; replace the file or move it out of the folder")
    return samples.mean(axis=0), rate


def resample(samples: np.ndarray, rate: int, target: int = paper.SAMPLE_RATE) -> np.ndarray:
    """Mono samples at ``rate`` -> at ``target`` Hz (``torchaudio.functional.resample``, its defaults:
    ceil(n x target / rate) samples)."""
    if rate == target:
        return samples.astype(np.float32, copy=False)
    x = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(samples)), rate, target)
    return x.numpy()


def centre_window(samples: np.ndarray, n: int = paper.N_SAMPLES) -> tuple[np.ndarray, bool]:
    """The central ``n`` samples, and whether the recording was shorter and so padded: the surplus of a longer
    one is cut equally from both ends (an odd one sample more at the end), a shorter one is zero-padded
    equally on both sides, centred in silence (an odd shortfall's extra zero at the end)."""
    length = len(samples)
    if length >= n:
        start = (length - n) // 2
        return samples[start : start + n], False
    left = (n - length) // 2
    return np.pad(samples, (left, n - length - left)), True


def speaker_folds(speakers: Sequence[int], n_folds: int = DEFAULT_FOLDS) -> dict[int, tuple[int, ...]]:
    """fold -> its test speakers: the distinct speakers sorted, in ``n_folds`` consecutive groups whose sizes
    differ by at most one (the larger ones first)."""
    ordered = sorted(set(speakers))
    if not 2 <= n_folds <= len(ordered):
        raise SeedBenchError(
            f"--folds {n_folds}: needs 2 to {len(ordered)} folds for {len(ordered)} speakers "
            f"({', '.join(f'{s:02d}' for s in ordered)})"
        )
    size, extra = divmod(len(ordered), n_folds)
    folds, start = {}, 0
    for fold in range(n_folds):
        end = start + size + (fold < extra)
        folds[fold] = tuple(ordered[start:end])
        start = end
    return folds


def recordings_table(recordings: Sequence[Recording]) -> pd.DataFrame:
    """The clip table ``train.train_job`` reads: clip (file stem), actor (speaker), emotion, label (index in
    :data:`EMOTIONS`)."""
    return pd.DataFrame(
        {
            "clip": [r.path.stem for r in recordings],
            "actor": [r.speaker for r in recordings],
            "emotion": [r.emotion for r in recordings],
            "label": [EMOTIONS.index(r.emotion) for r in recordings],
        }
    )


def load_windows(recordings: Sequence[Recording]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 140,800) float32 central windows at 48 kHz, (N,) bool: which recordings were zero-padded, and
    (N,) each recording's duration in seconds (its samples at its own rate)."""
    windows = np.empty((len(recordings), paper.N_SAMPLES), dtype=np.float32)
    padded = np.zeros(len(recordings), dtype=bool)
    seconds = np.zeros(len(recordings))
    for i, rec in enumerate(recordings):
        samples, rate = read_mono(rec.path)
        windows[i], padded[i] = centre_window(resample(samples, rate))
        seconds[i] = len(samples) / rate
    return windows, padded, seconds


def lms_features(windows: np.ndarray, config: dict, chunk: int = 64) -> np.ndarray:
    """(N, 140,800) windows -> (N, 88, 24) log-mel spectrograms with config ``features.lms``, ``chunk``
    recordings at a time (the same values; all 535 at once would hold 2-3 GB of spectra)."""
    cfg = LMSConfig(**config["features"]["lms"])
    return np.concatenate([log_mel(windows[i : i + chunk], cfg) for i in range(0, len(windows), chunk)])


# ------------------------------------------------------------------------------------------ training


def base_spec(config: dict, epochs: int | None = None) -> TrainSpec:
    """The config's 8-class LMS job (fold 0's spec; folds and seeds are replaced per model), its epochs
    overridden by ``epochs`` when given."""
    spec = avcfg.train_spec(config, "lms", "multiclass", "all", 0)
    if epochs is not None:
        if epochs < 1:
            raise SeedBenchError(f"--epochs {epochs}: needs at least 1")
        spec = dataclasses.replace(spec, epochs=epochs)
    return spec


def train_one(
    spec: TrainSpec,
    table: pd.DataFrame,
    features: np.ndarray,
    fold: int,
    speakers: tuple[int, ...],
    seed: int,
    threads: int,
) -> dict:
    """One model: ``spec`` with ``fold``'s test speakers and ``seed``, trained and evaluated by
    ``train.train_job``; its result (``metrics``: accuracy 0-1, precision, device, ...)."""
    job = dataclasses.replace(spec, fold=fold, test_actors=tuple(speakers), seed=seed)
    return train.train_job(job, table, features, threads)


@dataclass
class Grid:
    """Test accuracies (0-1) of every (fold, seed), the seconds each model took, how they computed."""

    accuracy: np.ndarray  # (folds, seeds)
    seconds: np.ndarray  # (folds, seeds)
    device: str
    precision: str


def train_grid(
    spec: TrainSpec,
    table: pd.DataFrame,
    features: np.ndarray,
    folds: dict[int, tuple[int, ...]],
    seeds: Sequence[int],
    threads: int,
    progress: Callable[[str], None] = print,
) -> Grid:
    """Every fold with every seed (seed by seed), one ``progress`` line per model."""
    accuracy = np.full((len(folds), len(seeds)), np.nan)
    seconds = np.full_like(accuracy, np.nan)
    device = precision = ""
    total, done = accuracy.size, 0
    for j, seed in enumerate(seeds):
        for i, (fold, speakers) in enumerate(folds.items()):
            start = time.perf_counter()
            metrics = train_one(spec, table, features, fold, speakers, seed, threads)["metrics"]
            seconds[i, j] = time.perf_counter() - start
            accuracy[i, j] = metrics["accuracy"]
            device, precision = metrics["device"], metrics["precision"]
            done += 1
            progress(
                f"[{done}/{total}] seed {seed} fold {fold} (speakers {_speakers(speakers)}): accuracy "
                f"{100 * metrics['accuracy']:.1f} % of {metrics['n_test']} test recordings, "
                f"{seconds[i, j]:.1f} s"
            )
    return Grid(accuracy, seconds, device, precision)


# ------------------------------------------------------------------------------------------- report


def _speakers(speakers: Sequence[int]) -> str:
    return "+".join(f"{s:02d}" for s in speakers)


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def fold_std_over_seeds(grid_percent: np.ndarray) -> np.ndarray:
    """Per fold, the sample std (ddof 1) over the seeds: how much the seed alone moves one fold (NaN with
    one seed)."""
    if grid_percent.shape[1] < 2:
        return np.full(grid_percent.shape[0], np.nan)
    return grid_percent.std(axis=1, ddof=1)


def render_grid(grid_percent: np.ndarray, folds: dict[int, tuple[int, ...]], seeds: Sequence[int]) -> str:
    """Markdown: accuracy % per seed (rows) and fold (columns), each seed's mean over the folds, and a last
    row with each fold's std over the seeds."""
    head = ["seed", *(f"fold {f} ({_speakers(s)})" for f, s in folds.items()), "mean over folds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for j, seed in enumerate(seeds):
        cells = [str(seed), *(f"{v:.1f}" for v in grid_percent[:, j]), f"{grid_percent[:, j].mean():.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    spread = fold_std_over_seeds(grid_percent)
    lines.append("| std over seeds | " + " | ".join(_fmt(v) for v in spread) + " | |")
    return "\n".join(lines)


def render(payload: dict) -> str:
    """The report (Markdown) of a :func:`run`'s payload."""
    m, c, s = payload["machine"], payload["counts"], payload["summary"]
    d = c["seconds"]
    grid = np.asarray(payload["accuracy_percent"], dtype=np.float64)
    folds = {int(k): tuple(v) for k, v in payload["folds"].items()}
    epochs = f"{payload['epochs']} epochs" + (
        " (--epochs override: a smoke run, not the config's)" if payload["epochs_override"] else ""
    )
    gpu = f" ({m['cuda_device']})" if m.get("cuda_device") else ""
    interval = tables.INTERVAL_METHODS.get(s["interval"], "none: one fold and one seed")
    secs = payload["seconds_per_model"]
    return "\n".join(
        [
            "# Seed benchmark on real speech (`python -m avemotion.bench seeds`)",
            "",
            f"- machine: {m['cpu_model']}, {m['torch_threads']} torch threads, torch {m['torch']}, device "
            f"{payload['device']}{gpu}, precision {payload['precision']}; {payload['date']}",
            f"- data: {payload['data']}: {c['recordings']} recordings of {c['speakers']} speakers, "
            f"{d['min']:.2f} .. {d['max']:.2f} s long (median {d['median']:.2f}); {c['padded']} shorter than "
            f"the {WINDOW_S:.2f} s window, zero-padded equally on both sides (centred in silence)",
            f"- model: the 8-class LMS TIM-Net of {payload['base']} (lr {payload['learning_rate']:g}, batch "
            f"{payload['batch_size']}, {epochs}); the 7 emotions {', '.join(EMOTIONS)} are classes 0-6, the "
            f"8th output is never a target",
            f"- folds: speaker-independent, {len(folds)} folds x {len(payload['seeds'])} seeds = "
            f"{grid.size} models",
            "",
            "Test accuracy % per seed and fold:",
            "",
            render_grid(grid, folds, payload["seeds"]),
            "",
            f"Cell statistics (`tables.seed_summary`): mean {_fmt(s['mean'], 2)} %, std over folds "
            f"{_fmt(s['std_folds'], 2)}, std over seeds {_fmt(s['std_seeds'], 2)}, 95 % interval "
            f"{_fmt(s['ci_low'], 2)} .. {_fmt(s['ci_high'], 2)} ({interval}).",
            "",
            f"Seconds per model: {secs['mean']:.1f} mean ({secs['min']:.1f} .. {secs['max']:.1f}), "
            f"{secs['total']:.0f} s for all {grid.size}.",
        ]
    )


def _json_safe(value):
    """NaN -> None (JSON has no NaN), recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def run(args: argparse.Namespace, machine_info: Callable[[torch.device], dict]) -> int:
    """``python -m avemotion.bench seeds``: the whole benchmark; ``machine_info`` describes the machine."""
    try:
        seeds = list(args.seeds)
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise SeedBenchError(f"--seeds {' '.join(map(str, seeds))}: give distinct seeds >= 0")
        if args.threads < 1:
            raise SeedBenchError(f"--threads {args.threads}: needs at least 1")
        recordings = find_recordings(args.data)
        folds = speaker_folds([r.speaker for r in recordings], args.folds)
        config = avcfg.load_config(args.base)
        spec = base_spec(config, args.epochs)
        print(f"reading {len(recordings)} recordings from {args.data} ...", flush=True)
        start = time.perf_counter()
        windows, padded, durations = load_windows(recordings)
        features = lms_features(windows, config)
        del windows
        print(
            f"LMS {features.shape} in {time.perf_counter() - start:.1f} s; {int(padded.sum())} of the "
            f"{len(recordings)} recordings are shorter than {WINDOW_S:.2f} s: zero-padded equally on both "
            f"sides (centred in silence)",
            flush=True,
        )
        table = recordings_table(recordings)
        grid = train_grid(
            spec, table, features, folds, seeds, args.threads, lambda line: print(line, flush=True)
        )
        grid_percent = 100 * grid.accuracy
        summary = tables.seed_summary(grid_percent)
        payload = {
            "machine": machine_info(torch.device(grid.device)),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "data": str(args.data),
            "base": str(args.base),
            "counts": {
                "recordings": len(recordings),
                "speakers": len({r.speaker for r in recordings}),
                "padded": int(padded.sum()),
                "seconds": {
                    "min": float(durations.min()),
                    "median": float(np.median(durations)),
                    "max": float(durations.max()),
                },
                "per_emotion": {e: int((table["emotion"] == e).sum()) for e in EMOTIONS},
            },
            "labels": list(EMOTIONS),
            "folds": {str(f): list(s) for f, s in folds.items()},
            "seeds": seeds,
            "epochs": spec.epochs,
            "epochs_override": args.epochs is not None,
            "learning_rate": spec.learning_rate,
            "batch_size": spec.batch_size,
            "threads": args.threads,
            "device": grid.device,
            "precision": grid.precision,
            # (folds, seeds): row i is fold i, column j is seeds[j].
            "accuracy_percent": grid_percent.tolist(),
            "fold_std_over_seeds": fold_std_over_seeds(grid_percent).tolist(),
            "seed_mean_over_folds": grid_percent.mean(axis=0).tolist(),
            "summary": summary,
            "seconds": grid.seconds.tolist(),
            "seconds_per_model": {
                "mean": float(grid.seconds.mean()),
                "min": float(grid.seconds.min()),
                "max": float(grid.seconds.max()),
                "total": float(grid.seconds.sum()),
            },
        }
        report = render(payload)
        out_dir = Path(args.out_dir)
        with atomic_group() as stage:
            stage(out_dir / "seeds.json").write_text(json.dumps(_json_safe(payload), indent=2) + "\n")
            stage(out_dir / "seeds.md").write_text(report + "\n")
    except (SeedBenchError, avcfg.ConfigError, train.TrainingError, DiskFullError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("", report, "", f"wrote {out_dir}/seeds.{{md,json}}", sep="\n")
    return 0
