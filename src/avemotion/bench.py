"""Benchmarks and the cost model of the full reproduction.

``backbones``: what fine-tuning the pretrained backbones under TIM-Net (rules ``finetune_binary`` and
``finetune_multiclass``, one job per feature, task and fold, training its 8 or 1 targets) and extracting their frozen per-fold features (rule ``extract_frozen``)
cost. For every backbone feature of the registry it builds the real architecture untrained (timing needs no
weights) exactly as a job builds it (``finetune.build_encoder`` + ``BackboneClassifier`` with the
feature's Table 3 TIM-Net), feeds inputs shaped like the real ones and measures:

- the training step (forward, loss, backward, Adam step, as ``train.fit`` does: ``train.autocast`` and a
  GradScaler for float16 on CUDA) in clips/s, warm-up steps excluded;
- frozen extraction (``finetune.frozen_features``: eval mode, no grad) in clips/s, on the central 88 frames'
  patches (ResNets) or the 146-frame audio window (Wav2Vec2);
- FLOPs per clip of both (``torch.utils.flop_counter.FlopCounterMode``: matmuls, convolutions and attention,
  forward and backward; Adam's and other element-wise ops are not counted, nor data loading);
- peak memory: CUDA ``max_memory_allocated``, or on CPU the peak resident set size above the process's RSS
  before the model was built (sampled every 10 ms).

Then it projects the full run from the config: per fold, n_test = the fold's actors x clips per actor and
n_train = the other actors' clips; each fine-tuned model costs epochs x n_train training clips plus one evaluation
pass over n_test clips (the eval forward is taken as the frozen forward scaled to the fine-tuning frames,
20/88 for the ResNets); an ``extract_frozen`` job passes every clip through the encoder once. Hours come from
the measured throughput on the measuring device and, as a separate and clearly labelled ASSUMPTION, from the
FLOP counts at an assumed sustained GPU throughput (``--gpu-tflops``).

Architectures: the ResNet is ``backbones.resnet.arch`` at ``patches.size``. Wav2Vec2 is the real checkpoint's
architecture (base: the ``Wav2Vec2Config()`` defaults; large: :data:`WAV2VEC2_LARGE`), unless the config's
section is ``init: random`` with its own ``config`` overrides (the demo's tiny models), which are then used
as they are: the benchmark measures what the configured run would train.

CLI::

    python -m avemotion.bench backbones --device cpu --threads 2 --cpu-batch 2 wav2vec2_large=1 \
        --steps 3 wav2vec2_large=1 [--config workflow/profiles/demo/demo.yaml] [--out-dir results/benchmarks]

writes ``<out-dir>/backbones.csv``, ``backbones.md`` and ``backbones.json`` (machine, settings, measurements).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import json
import math
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch.utils import flop_counter

from avemotion import backbones, bench_seeds, finetune, paper, registry, train
from avemotion import config as avcfg
from avemotion.config import TrainSpec
from avemotion.io import atomic_write_text
from avemotion.models import BackboneClassifier, TIMNetClassifier, TIMNetConfig

BACKBONE_FEATURES = tuple(k for k, f in registry.FEATURES.items() if f.is_backbone)
RULES = ("finetune_binary", "finetune_multiclass", "extract_frozen")
# facebook/wav2vec2-large's architecture (its config.json); everything else is the Wav2Vec2Config default,
# which is facebook/wav2vec2-base's architecture. The three last keys are defaults, spelt out because they
# are what distinguishes these checkpoints from the "lv60" / "xlsr" large models.
WAV2VEC2_LARGE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
    "conv_bias": False,
}
REAL_WAV2VEC2 = {"wav2vec2_base": {}, "wav2vec2_large": WAV2VEC2_LARGE}
# Sustained training throughput assumed for one H100-class GPU on these models in eager PyTorch with autocast:
# ResNet-18 at 224 px (5.5 GFLOP per image, forward + backward) near 4,500 images/s and Wav2Vec2-base near
# 200 clips/s both come to about 25 TFLOP/s, a few percent of the card's dense bf16 peak (small convolutions and
# kernel launches dominate). An assumption, never a measurement: a CUDA run measures instead.
DEFAULT_GPU_TFLOPS = 25.0
DEFAULT_CPU_BATCH, DEFAULT_STEPS = 2, 3
RSS_INTERVAL_S = 0.01


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


# PyTorch's FLOP counter knows the CUDA attention kernels but not the CPU one Wav2Vec2 runs on the CPU; the
# same formulas (two batched matmuls forward, five backward) apply.
CPU_SDPA_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}


class BenchError(RuntimeError):
    """The benchmark cannot run as asked; the message says which option or config key and what to do."""


# -------------------------------------------------------------------------------------------- projection


def clips_per_actor(config: dict) -> int:
    """Clips of one actor: ``data.expected_clips`` / number of ``data.actors`` (60 on real RAVDESS,
    ``paper.CLIPS_PER_ACTOR``; 16 in the demo)."""
    actors, expected = config["data"]["actors"], config["data"]["expected_clips"]
    if expected % len(actors):
        raise BenchError(
            f"config key 'data.expected_clips': {expected} clips are not the same number for each of the "
            f"{len(actors)} actors of data.actors"
        )
    return expected // len(actors)


def fold_clips(config: dict) -> dict[int, tuple[int, int]]:
    """fold -> (n_train, n_test) clips: the fold's test actors among ``data.actors`` and all the others."""
    per_actor, actors = clips_per_actor(config), set(config["data"]["actors"])
    counts = {}
    for fold, test in avcfg.folds_of(config).items():
        n_test = len(actors & set(test))
        counts[fold] = ((len(actors) - n_test) * per_actor, n_test * per_actor)
    return counts


def targets_per_fold(config: dict, feature: str, task: str) -> int:
    """Models fine-tuned per fold for ``feature`` and ``task``: one per emotion for a Table 1 row (binary), one
    for a Table 2 single-feature cell (multiclass), none otherwise."""
    table = "table1" if task == "binary" else "table2"
    if feature not in avcfg.implemented_configurations(config, table):
        return 0
    return len(paper.CLASSES) if task == "binary" else 1


def finetune_job_counts(
    config: dict, features: Sequence[str] = BACKBONE_FEATURES
) -> dict[tuple[str, str], int]:
    """(feature, task) -> number of ``finetune_<task>`` jobs, for the backbone features that have any: the
    workflow's own training jobs (``config.training_jobs``: one per fold, all its targets), counted."""
    return dict(Counter((name, task) for name, task, *_ in avcfg.training_jobs(config) if name in features))


def frozen_job_counts(config: dict, features: Sequence[str] = BACKBONE_FEATURES) -> dict[str, int]:
    """feature -> number of ``extract_frozen`` jobs: one per fold for each feature with an 8-class job."""
    n_folds = len(avcfg.folds_of(config))
    return {f: n_folds for f in avcfg.frozen_features(config) if f in features}


def job_hours(epochs: int, n_train: int, n_test: int, train_rate: float, eval_rate: float) -> float:
    """Hours of one fine-tuned model: ``epochs`` passes over ``n_train`` clips at ``train_rate`` clips/s, then one
    evaluation pass over ``n_test`` clips at ``eval_rate`` clips/s."""
    return (epochs * n_train / train_rate + n_test / eval_rate) / 3600


@dataclass(frozen=True)
class Workload:
    """All jobs of one rule for one feature and task, summed over folds and targets."""

    rule: str  # finetune_binary | finetune_multiclass | extract_frozen
    feature: str
    task: str  # binary | multiclass; "-" for extract_frozen (the 8-class fold model's encoder)
    jobs: int
    epochs: int  # 0 for extract_frozen
    train_clips: int  # clips through a training step: sum over jobs of epochs x n_train
    eval_clips: int  # clips through an eval forward: n_test per fine-tune job, every clip per extract job

    def hours(self, train_rate: float, eval_rate: float) -> float:
        """Hours of all these jobs at ``train_rate`` / ``eval_rate`` clips/s (the sum of :func:`job_hours`)."""
        train_s = self.train_clips / train_rate if self.train_clips else 0.0
        return (train_s + self.eval_clips / eval_rate) / 3600


def workloads(config: dict, features: Sequence[str] = BACKBONE_FEATURES) -> list[Workload]:
    """The fine-tune and frozen-extraction workloads of the configured run, for ``features``."""
    folds = fold_clips(config)
    n_train, n_test = sum(tr for tr, _ in folds.values()), sum(te for _, te in folds.values())
    n_clips = clips_per_actor(config) * len(config["data"]["actors"])
    hp = config["training"]["hyperparameters"]
    out = []
    for (feature, task), jobs in finetune_job_counts(config, features).items():
        targets, epochs = targets_per_fold(config, feature, task), int(hp[feature][task]["epochs"])
        out.append(
            Workload(
                f"finetune_{task}", feature, task, jobs, epochs, targets * epochs * n_train, targets * n_test
            )
        )
    for feature, jobs in frozen_job_counts(config, features).items():
        out.append(Workload("extract_frozen", feature, "-", jobs, 0, 0, jobs * n_clips))
    return out


def eval_scale(feature: registry.Feature) -> float:
    """Cost of a fine-tune job's eval forward relative to the frozen forward: the ResNets evaluate on the 20
    fine-tuning frames but extract on the central 88; Wav2Vec2 reads the same audio window for both."""
    return feature.frames / feature.frozen_frames if feature.source == "patches" else 1.0


def flop_rate(flops_per_clip: float, tflops: float) -> float:
    """Clips/s at a sustained ``tflops`` TFLOP/s."""
    return tflops * 1e12 / flops_per_clip


# ------------------------------------------------------------------------------------------- measurement


def encoder_params(config: dict, feature: registry.Feature) -> dict:
    """The ``backbones.<name>`` section to build the feature's encoder untrained: ``init: random`` and, for
    Wav2Vec2, the real checkpoint's architecture unless the section already is a random model with its own
    ``config`` (see the module docstring)."""
    params = dict(config["backbones"][feature.backbone])
    own = params.get("init") == "random" and bool(params.get("config"))
    params["init"] = "random"
    if feature.backbone in REAL_WAV2VEC2 and not own:
        params["config"] = dict(REAL_WAV2VEC2[feature.backbone])
    return params


def measured_task(config: dict, feature: str) -> str:
    """The task whose Table 3 TIM-Net is put on the backbone for measuring (binary if the feature has binary
    jobs): TIM-Net's share of the cost is small, so one measurement serves both tasks."""
    return "binary" if targets_per_fold(config, feature, "binary") else "multiclass"


def example_inputs(config: dict, feature: registry.Feature, batch: int, frames: int) -> torch.Tensor:
    """Random inputs shaped like the real ones: patches (B, frames, V, S, S, 3) uint8 at ``patches.size``, or
    z-scored 16 kHz audio (B, 46,934) (the 140,800-sample window through ``backbones.speech_input``)."""
    gen = torch.Generator().manual_seed(0)
    if feature.source == "patches":
        size = config["patches"]["size"]
        shape = (batch, frames, len(feature.streams), size, size, 3)
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
    n = backbones.resampled_length(paper.N_SAMPLES, paper.SAMPLE_RATE, paper.WAV2VEC2_SAMPLE_RATE)
    return torch.randn(batch, n, generator=gen)


def describe(encoder: torch.nn.Module, config: dict, feature: registry.Feature) -> str:
    if feature.source == "patches":
        return (
            f"{config['backbones']['resnet']['arch']} {config['patches']['size']}px x{len(feature.streams)}"
        )
    c = encoder.net.config
    return f"wav2vec2 h{c.hidden_size} L{c.num_hidden_layers}"


def _trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc), so the RSS baseline holds no earlier measurement's
    cached memory that the next one would reuse unseen."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Peak memory per phase: CUDA ``max_memory_allocated`` (absolute), or on CPU the peak RSS above the RSS
    at :meth:`start`, sampled by a thread (``ru_maxrss`` delta where /proc is missing: a process-wide high-water
    mark, so 0 once an earlier, larger measurement set it)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.kind = "cuda max_memory_allocated"
        elif _rss_bytes() is not None:
            self.kind = "cpu peak RSS above the RSS before the model was built (sampled every 10 ms)"
        else:
            self.kind = "cpu ru_maxrss delta"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(RSS_INTERVAL_S):
            self._peak = max(self._peak, _rss_bytes() or 0)

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.kind.startswith("cpu peak"):
            gc.collect()
            _trim_heap()
            self._base = self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

    def reset(self) -> None:
        """Start a new phase (the CPU baseline stays the one of :meth:`start`)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self._thread is not None:
            self._peak = _rss_bytes() or 0

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self._thread is not None:
            return (max(self._peak, _rss_bytes() or 0) - self._base) / 2**20
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self._base) / 2**20

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (matmuls, convolutions, attention; forward and backward)."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
        fn()
    return counter.get_total_flops()


@contextlib.contextmanager
def all_layers(model: torch.nn.Module) -> Iterator[None]:
    """Wav2Vec2's layerdrop (0.1 by default) skips random transformer layers in train mode; FLOPs are counted
    with every layer, so the count is deterministic (an upper bound: the mean under layerdrop p is ~(1-p) x
    the transformer's share)."""
    configs = [m.config for m in model.modules() if hasattr(getattr(m, "config", None), "layerdrop")]
    saved = [c.layerdrop for c in configs]
    for c in configs:
        c.layerdrop = 0.0
    try:
        yield
    finally:
        for c, p in zip(configs, saved, strict=True):
            c.layerdrop = p


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    """Mean wall-clock seconds of ``fn`` over ``steps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


@dataclass(frozen=True)
class Measurement:
    feature: str
    task: str  # the Table 3 setting of the TIM-Net on top
    architecture: str
    device: str
    batch: int
    steps: int
    warmup: int
    train_clips_per_s: float
    frozen_clips_per_s: float
    train_flops_per_clip: float
    frozen_flops_per_clip: float
    peak_train_mb: float
    peak_frozen_mb: float
    memory: str  # how the peaks were measured


def training_cost(
    model: torch.nn.Module, x: torch.Tensor, spec: TrainSpec, device: torch.device, steps: int, warmup: int
) -> tuple[float, float]:
    """(FLOPs per clip, seconds per step) of ``train.fit``'s step on the batch ``x`` (kept on the CPU and
    moved per step, as fit does): autocast forward, loss, (scaled) backward, Adam step, loss read back."""
    amp = spec.mixed_precision and device.type == "cuda"
    n = len(x)
    task_classes = 2 if spec.task == "binary" else len(paper.CLASSES)
    y = (torch.arange(n) % task_classes).to(device)
    weights = torch.ones(2, device=device) if spec.task == "binary" else None
    opt = train.adam(model, spec)
    scaler = train.grad_scaler(amp)

    def forward_backward() -> torch.Tensor:
        with train.autocast(device, amp):
            logits = model(x.to(device, non_blocking=True))
        loss = train.loss_fn(logits.float(), y, spec, weights)
        scaler.scale(loss).backward()
        return loss

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = forward_backward()
        scaler.step(opt)
        scaler.update()
        loss.item()  # fit reads the loss every step

    model.train()
    with all_layers(model):
        flops = count_flops(forward_backward) / n
    opt.zero_grad(set_to_none=True)
    seconds = seconds_per_call(step, steps, warmup, device)
    opt.zero_grad(set_to_none=True)  # the Adam state goes with opt; the grads with these
    return flops, seconds


def frozen_cost(
    encoder: torch.nn.Module, x: torch.Tensor, device: torch.device, amp: bool, steps: int, warmup: int
) -> tuple[float, float]:
    """(FLOPs per clip, seconds per batch) of ``finetune.frozen_features`` on the batch ``x``."""

    def extract() -> None:
        finetune.frozen_features(encoder, x, len(x), device, amp)

    flops = count_flops(extract) / len(x)
    return flops, seconds_per_call(extract, steps, warmup, device)


def measure_backbone(
    config: dict, key: str, device: torch.device, batch: int, steps: int, warmup: int
) -> Measurement:
    """Measure one backbone feature's training step and frozen extraction (see the module docstring)."""
    feature = registry.get(key)
    task = measured_task(config, key)
    target = paper.CLASSES[0] if task == "binary" else "all"
    spec = avcfg.train_spec(config, key, task, target, min(avcfg.folds_of(config)))
    spec = dataclasses.replace(spec, backbone=encoder_params(config, feature), batch_size=batch)
    memory = PeakMemory(device)
    memory.start()
    try:
        torch.manual_seed(spec.seed)
        encoder = finetune.build_encoder(feature.backbone, spec.backbone)
        cfg = TIMNetConfig(
            in_features=encoder.out_features,
            channels=spec.channels,
            scales=spec.scales,
            kernel_size=spec.kernel_size,
            convs_per_block=spec.convs_per_block,
            dropout=spec.dropout,
        )
        n_outputs = 1 if task == "binary" else len(paper.CLASSES)
        model = BackboneClassifier(encoder, TIMNetClassifier(cfg, n_outputs)).to(device)
        x = example_inputs(config, feature, batch, feature.frames)
        train_flops, train_s = training_cost(model, x, spec, device, steps, warmup)
        peak_train = memory.peak_mb()
        del x
        gc.collect()
        memory.reset()
        x = example_inputs(config, feature, batch, feature.frozen_frames)
        amp = spec.mixed_precision and device.type == "cuda"
        frozen_flops, frozen_s = frozen_cost(encoder, x, device, amp, steps, warmup)
        peak_frozen = memory.peak_mb()
    finally:
        memory.stop()
    return Measurement(
        feature=key,
        task=task,
        architecture=describe(encoder, config, feature),
        device=device.type,
        batch=batch,
        steps=steps,
        warmup=warmup,
        train_clips_per_s=batch / train_s,
        frozen_clips_per_s=batch / frozen_s,
        train_flops_per_clip=train_flops,
        frozen_flops_per_clip=frozen_flops,
        peak_train_mb=peak_train,
        peak_frozen_mb=peak_frozen,
        memory=memory.kind,
    )


# ------------------------------------------------------------------------------------------------ report

# (column, printed header, format) of the printed and Markdown tables; the CSV has every row field.
COLUMNS = (
    ("rule", "rule", "{}"),
    ("feature", "feature", "{}"),
    ("task", "task", "{}"),
    ("batch", "batch", "{}"),
    ("train_clips_per_s", "train clips/s", "{:.3g}"),
    ("frozen_clips_per_s", "frozen clips/s", "{:.3g}"),
    ("train_gflop_per_clip", "train GFLOP/clip", "{:,.1f}"),
    ("frozen_gflop_per_clip", "frozen GFLOP/clip", "{:,.1f}"),
    ("peak_train_mb", "peak train MB", "{:,.0f}"),
    ("jobs", "jobs", "{}"),
    ("epochs", "epochs", "{}"),
    ("measured_hours", "{device} h", "{:,.1f}"),
    ("gpu_hours_assumed", "GPU h ASSUMED {tflops:g} TFLOP/s", "{:,.1f}"),
)


def cost_rows(config: dict, measurements: dict[str, Measurement], gpu_tflops: float) -> list[dict]:
    """One row per workload, then a total per rule and an overall total. ``measured_hours`` are at the
    measured throughput on the measuring ``device``; ``gpu_hours_assumed`` are FLOPs / ``gpu_tflops``."""
    rows = []
    for w in workloads(config, list(measurements)):
        m, feature = measurements[w.feature], registry.get(w.feature)
        scale = 1.0 if w.rule == "extract_frozen" else eval_scale(feature)
        eval_flops = m.frozen_flops_per_clip * scale
        rows.append(
            {
                "rule": w.rule,
                "feature": w.feature,
                "task": w.task,
                "architecture": m.architecture,
                "device": m.device,
                "batch": m.batch,
                "train_clips_per_s": m.train_clips_per_s,
                "frozen_clips_per_s": m.frozen_clips_per_s,
                "eval_clips_per_s": m.frozen_clips_per_s / scale,
                "train_gflop_per_clip": m.train_flops_per_clip / 1e9,
                "frozen_gflop_per_clip": m.frozen_flops_per_clip / 1e9,
                "eval_gflop_per_clip": eval_flops / 1e9,
                "peak_train_mb": m.peak_train_mb,
                "peak_frozen_mb": m.peak_frozen_mb,
                "jobs": w.jobs,
                "epochs": w.epochs,
                "train_clips": w.train_clips,
                "eval_clips": w.eval_clips,
                "measured_hours": w.hours(m.train_clips_per_s, m.frozen_clips_per_s / scale),
                "gpu_hours_assumed": w.hours(
                    flop_rate(m.train_flops_per_clip, gpu_tflops), flop_rate(eval_flops, gpu_tflops)
                ),
                "assumed_gpu_tflops": gpu_tflops,
            }
        )
    totals = []
    for rule in RULES:
        mine = [r for r in rows if r["rule"] == rule]
        if mine:
            totals.append(_total(mine, rule, "total", gpu_tflops))
    return rows + totals + [_total(rows, "total", "", gpu_tflops)]


def _total(rows: list[dict], rule: str, feature: str, gpu_tflops: float) -> dict:
    keys = ("jobs", "train_clips", "eval_clips", "measured_hours", "gpu_hours_assumed")
    return {"rule": rule, "feature": feature, **{k: sum(r[k] for r in rows) for k in keys}} | {
        "assumed_gpu_tflops": gpu_tflops
    }


def _cell(value: object, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return fmt.format(value)


def render_table(rows: list[dict], device: str, gpu_tflops: float) -> str:
    """The rows as an aligned Markdown pipe table (readable printed, valid in backbones.md)."""
    measured = "CPU" if device == "cpu" else "GPU measured"
    headers = [h.format(device=measured, tflops=gpu_tflops) for _, h, _ in COLUMNS]
    body = [[_cell(r.get(k), fmt) for k, _, fmt in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(headers)]
    numeric = [not k.endswith(("rule", "feature", "task")) for k, _, _ in COLUMNS]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True)
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if n else ("-" * (w + 2)) for w, n in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(b) for b in body)])


def cpu_model() -> str:
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict:
    import torchvision
    import transformers

    cuda = device.type == "cuda"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device.type,
        "cuda_device": torch.cuda.get_device_name(device) if cuda else None,
        "cuda_bf16": torch.cuda.is_bf16_supported() if cuda else None,
    }


def notes(info: dict, gpu_tflops: float, memory: str) -> list[str]:
    hours = (
        f"CPU h: wall-clock hours on this CPU ({info['cpu_model']}) at {info['torch_threads']} torch threads "
        "(core-hours = that x threads), at the measured batch"
        if info["device"] == "cpu"
        else f"GPU measured h: wall-clock hours on {info['cuda_device']} at the Table 3 batch, mixed precision"
    )
    return [
        "train clips/s: forward, loss, backward and Adam step; frozen clips/s: encoder in eval mode, no grad, "
        "on the central 88 frames (ResNets) or the 146-frame audio window (Wav2Vec2); warm-up excluded.",
        "GFLOP/clip: torch FlopCounterMode (matmul, convolution, attention; forward and backward); Adam and "
        "element-wise ops not counted; Wav2Vec2 counted with every layer (layerdrop off).",
        f"{hours}. A fine-tune job = epochs x n_train training clips + n_test eval clips (eval forward = the "
        "frozen forward scaled to 20 frames for the ResNets); extract_frozen = every clip once per fold. "
        "Compute only: video decoding and data loading are not included.",
        f"GPU h ASSUMED: NOT MEASURED. FLOPs / an assumed sustained {gpu_tflops:g} TFLOP/s (--gpu-tflops); "
        "real utilisation of these models is usually lower, so read it as an optimistic bound.",
        f"peak MB: {memory}.",
    ]


def write_reports(
    out_dir: Path, rows: list[dict], info: dict, settings: dict, measurements: list
) -> list[Path]:
    """backbones.csv, backbones.md and backbones.json under ``out_dir``, each written atomically."""
    paths = [out_dir / f"backbones.{ext}" for ext in ("csv", "md", "json")]
    atomic_write_text(paths[0], pd.DataFrame(rows).to_csv(index=False, float_format="%.6g"))
    gpu_tflops = settings["gpu_tflops"]
    memory = measurements[0].memory if measurements else ""
    cuda = f", {info['cuda_device']}" if info["cuda_device"] else ""
    md = [
        "# Backbone cost model (`python -m avemotion.bench backbones`)",
        "",
        f"Measured on {info['device']}{cuda}: {info['cpu_model']}, {info['torch_threads']} torch threads, "
        f"torch {info['torch']}, transformers {info['transformers']}. Config: {', '.join(settings['config'])}.",
        "",
        render_table(rows, info["device"], gpu_tflops),
        "",
        *(f"- {n}" for n in notes(info, gpu_tflops, memory)),
        "- architectures: "
        + "; ".join(f"{m.feature} = {m.architecture} (TIM-Net of {m.task})" for m in measurements)
        + ".",
        "",
    ]
    atomic_write_text(paths[1], "\n".join(md))
    payload = {
        "machine": info,
        "settings": settings,
        "measurements": [dataclasses.asdict(m) for m in measurements],
        "rows": rows,
        # the fine-tuning seeds the rows project (bench cost rescales them to the configured ones)
        "finetune_seeds": settings.get("finetune_seeds", 1),
    }
    atomic_write_text(paths[2], json.dumps(payload, indent=2) + "\n")
    return paths


# --------------------------------------------------------------------------------------------------- CLI


def per_feature(values: Sequence[str], option: str, default: int) -> dict[str | None, int]:
    """``["2", "wav2vec2_large=1"]`` -> ``{None: 2, "wav2vec2_large": 1}``: None is every other feature's
    value (``default`` unless a plain N is given)."""
    out: dict[str | None, int] = {None: default}
    for value in values:
        name, _, number = value.rpartition("=")
        if name and name not in BACKBONE_FEATURES:
            raise BenchError(
                f"{option} {value}: {name!r} is not a backbone feature ({', '.join(BACKBONE_FEATURES)})"
            )
        try:
            n = int(number)
        except ValueError:
            raise BenchError(f"{option} {value}: expected N or FEATURE=N with an integer N") from None
        if n < 1:
            raise BenchError(f"{option} {value}: must be at least 1")
        out[name or None] = n
    return out


def _backbones_main(args: argparse.Namespace) -> int:
    try:
        config = avcfg.load_config(args.base, *args.config)
        features = list(dict.fromkeys(args.features))
        batches = per_feature(args.cpu_batch, "--cpu-batch", DEFAULT_CPU_BATCH)
        steps = per_feature(args.steps, "--steps", DEFAULT_STEPS)
        if args.warmup < 0 or args.gpu_tflops <= 0 or args.threads < 1:
            raise BenchError("--warmup must be >= 0, --gpu-tflops > 0 and --threads >= 1")
        torch.set_num_threads(args.threads)
        if args.device == "cuda" and not torch.cuda.is_available():
            raise BenchError("--device cuda: no CUDA device is available here; use --device auto or cpu")
        device = train.pick_device(args.device)
        measurements = []
        for key in features:
            hp = config["training"]["hyperparameters"].get(key)
            if hp is None:
                raise BenchError(
                    f"config key 'training.hyperparameters.{key}' is not set; {key} needs Table 3 values"
                )
            task = measured_task(config, key)
            batch = int(hp[task]["batch_size"]) if device.type == "cuda" else batches.get(key, batches[None])
            n_steps = steps.get(key, steps[None])
            t0 = time.perf_counter()
            m = measure_backbone(config, key, device, batch, n_steps, args.warmup)
            print(
                f"{key}: {m.architecture}, batch {batch}: train {m.train_clips_per_s:.3g} clips/s, frozen "
                f"{m.frozen_clips_per_s:.3g} clips/s ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            measurements.append(m)
    except (avcfg.ConfigError, backbones.BackboneError, train.TrainingError, BenchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows = cost_rows(config, {m.feature: m for m in measurements}, args.gpu_tflops)
    info = machine_info(device)
    settings = {
        "config": [str(p) for p in (args.base, *args.config)],
        "features": features,
        "device": args.device,
        "cpu_batch": args.cpu_batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "gpu_tflops": args.gpu_tflops,
        "gpu_tflops_is_assumption": True,
        "threads": args.threads,
        "finetune_seeds": len(config["training"]["finetune_seeds"]),
    }
    paths = write_reports(args.out_dir, rows, info, settings, measurements)
    print()
    print(render_table(rows, info["device"], args.gpu_tflops))
    print()
    for n in notes(info, args.gpu_tflops, measurements[0].memory if measurements else ""):
        print(f"- {n}")
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avemotion.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("backbones", help="measure the backbones and project the full run's cost per rule")
    p.add_argument("--base", type=Path, default=Path("config.yaml"), help="the workflow's config file")
    p.add_argument(
        "--config", type=Path, nargs="+", default=[], help="overlays on --base, as snakemake --configfile"
    )
    p.add_argument("--features", nargs="+", choices=BACKBONE_FEATURES, default=list(BACKBONE_FEATURES))
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--cpu-batch",
        nargs="+",
        default=[str(DEFAULT_CPU_BATCH)],
        metavar="N|FEATURE=N",
        help="clips per batch on the CPU (on CUDA: the Table 3 batch); FEATURE=N for one feature",
    )
    p.add_argument(
        "--steps",
        nargs="+",
        default=[str(DEFAULT_STEPS)],
        metavar="N|FEATURE=N",
        help="timed steps per phase",
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the rules run with 1)")
    p.add_argument(
        "--gpu-tflops",
        type=float,
        default=DEFAULT_GPU_TFLOPS,
        help="ASSUMED sustained GPU TFLOP/s for the FLOP-based GPU-hour projection",
    )
    p.add_argument("--out-dir", type=Path, default=Path("results/benchmarks"))
    t = sub.add_parser(
        "timnet", help="TIM-Net training speed per feature shape: ours vs a plain loop, FLOPs, peak"
    )
    t.add_argument("--clips", type=int, default=1152, help="random clips per epoch (a fold's training set)")
    t.add_argument("--epochs", type=int, default=2, help="timed epochs per loop (the fastest counts)")
    t.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads")
    t.add_argument(
        "--shapes", nargs="+", default=None, metavar="FRAMESxDIMS", help="only these shapes, e.g. 88x24"
    )
    t.add_argument(
        "--stack-models",
        nargs="+",
        type=int,
        default=None,
        metavar="K",
        help="stacked one-vs-rest models to compare (default 1 8 on CPU, 1 8 40 on CUDA; none: skip)",
    )
    t.add_argument("--stack-shape", default="88x24", metavar="FRAMESxDIMS", help="shape of the stack runs")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="of the stack runs")
    t.add_argument(
        "--base",
        type=Path,
        default=Path("config.yaml"),
        help="whose training.cpu_precision/compile ours runs",
    )
    t.add_argument(
        "--accuracy-epochs",
        type=int,
        default=10,
        help="epochs of the float32-vs-ours accuracy check on a learnable task (0: skip)",
    )
    t.add_argument("--out-dir", type=Path, default=Path("results/benchmarks"))
    u = sub.add_parser("startup", help="per-job start-up (imports, MLflow) and its total over a workflow run")
    u.add_argument(
        "--workflow-profile",
        type=Path,
        default=None,
        help="whose config overlay to count jobs with (the demo's)",
    )
    u.add_argument("--repeats", type=int, default=3, help="fresh processes per measurement (the best counts)")
    u.add_argument("--out-dir", type=Path, default=Path("results/benchmarks"))
    c = sub.add_parser("cost", help="CPU- and GPU-hours per rule of the full run, from the other benchmarks")
    c.add_argument("--base", type=Path, default=Path("config.yaml"), help="the full run's config")
    c.add_argument("--gpu-tflops", type=float, default=DEFAULT_GPU_TFLOPS, help="ASSUMED sustained TFLOP/s")
    c.add_argument("--out-dir", type=Path, default=Path("results/benchmarks"))
    s = sub.add_parser("seeds", help="accuracy of the LMS TIM-Net on real speech (Emo-DB), every fold x seed")
    s.add_argument("--data", type=Path, required=True, help="folder of Emo-DB wav files (SSTTTEV.wav)")
    s.add_argument("--base", type=Path, default=Path("config.yaml"), help="whose 8-class LMS job to train")
    s.add_argument(
        "--seeds", type=int, nargs="+", default=list(bench_seeds.DEFAULT_SEEDS), help="training seeds"
    )
    s.add_argument(
        "--folds", type=int, default=bench_seeds.DEFAULT_FOLDS, help="speaker folds (sorted, split in order)"
    )
    s.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads")
    s.add_argument("--epochs", type=int, default=None, help="override the config's epochs (smoke runs only)")
    s.add_argument("--out-dir", type=Path, default=Path("results/benchmarks"))
    args = parser.parse_args(argv)
    if args.command == "seeds":
        return bench_seeds.run(args, machine_info)
    if args.command == "cost":
        return _cost_main(args)
    if args.command == "timnet":
        return _timnet_main(args)
    if args.command == "startup":
        return _startup_main(args)
    return _backbones_main(args)


def _shape(text: str) -> tuple[int, int]:
    frames, dims = (int(n) for n in text.lower().split("x"))
    return frames, dims


def _timnet_main(args: argparse.Namespace) -> int:
    from avemotion import bench_timnet

    torch.set_num_threads(args.threads)
    try:
        selected = [_shape(s) for s in args.shapes] if args.shapes else None
        stack_shape = _shape(args.stack_shape)
    except ValueError:
        print("error: --shapes and --stack-shape take FRAMESxDIMS, e.g. 88x24", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is available here; use auto or cpu", file=sys.stderr)
        return 2
    device = train.pick_device(args.device)
    # A fresh compile cache: "first epoch +" is then what a job's compile costs on a machine that has never
    # compiled this model (later jobs on the same machine find it in torch's cache and pay a few seconds).
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="avemotion-bench-inductor-")
    training = avcfg.load_config(args.base)["training"]
    speed = bench_timnet.Speed(training["cpu_precision"], bool(training["compile"]))
    ks = args.stack_models if args.stack_models is not None else bench_timnet.stack_models_default(device)
    peak, rows = bench_timnet.run(args.clips, args.epochs, selected, speed)
    bf16_peak = bench_timnet.matmul_peak_gflops(dtype=torch.bfloat16)
    stack_rows = bench_timnet.measure_stack(*stack_shape, args.clips, args.epochs, ks, device) if ks else []
    accuracy_shape = selected[0] if selected else (88, 24)
    accuracy_rows = (
        bench_timnet.accuracy_check(*accuracy_shape, args.clips, args.accuracy_epochs, speed)
        if args.accuracy_epochs
        else []
    )
    info = machine_info(device)
    table = bench_timnet.render(rows, peak, bf16_peak)
    header = (
        f"# TIM-Net training speed (`python -m avemotion.bench timnet`)\n\n{info['cpu_model']} "
        f"(bfloat16 dot products: {'yes' if train.cpu_has_bfloat16() else 'no'}), {info['torch_threads']} torch "
        f"threads, torch {info['torch']}; {args.clips} random clips, batch {bench_timnet.BATCH}, "
        f"{bench_timnet.CHANNELS} channels, {bench_timnet.CONVS} convs per block; ours = {args.base}'s "
        f"training.cpu_precision {speed.cpu_precision}, training.compile {speed.compile}; plain = float32 "
        f"convolutions, a textbook loop; seconds per epoch = the fastest of {args.epochs} after a warm-up "
        f'epoch ("first epoch +": what that one cost beyond, the compile included).'
    )
    sections = [header, table]
    if stack_rows:
        sections += [
            f"## Stacked one-vs-rest models (`avemotion.stacked`) on {info['device']}",
            bench_timnet.render_stack(stack_rows),
        ]
    if accuracy_rows:
        sections += [
            f"## Does the accuracy hold? The same TIM-Net from one seed, float32 and ours, "
            f"{args.accuracy_epochs} epochs on a learnable synthetic task "
            f"({args.clips} training clips, {args.clips // 4} test clips)",
            bench_timnet.render_accuracy(accuracy_rows),
        ]
    records = bench_timnet.as_records(rows)
    stack_records = [dataclasses.asdict(r) for r in stack_rows]
    atomic_write_text(
        args.out_dir / "timnet.csv", pd.DataFrame(records).to_csv(index=False, float_format="%.6g")
    )
    atomic_write_text(
        args.out_dir / "timnet_stacked.csv",
        pd.DataFrame(stack_records).to_csv(index=False, float_format="%.6g"),
    )
    atomic_write_text(args.out_dir / "timnet.md", "\n\n".join(sections) + "\n")
    payload = {
        "machine": info,
        "matmul_peak_gflops": peak,
        "bfloat16_matmul_peak_gflops": bf16_peak,
        "cpu_bfloat16": train.cpu_has_bfloat16(),
        "speed": dataclasses.asdict(speed),
        "clips": args.clips,
        "rows": records,
        "stacked": stack_records,
        "accuracy": [dataclasses.asdict(r) for r in accuracy_rows],
    }
    atomic_write_text(args.out_dir / "timnet.json", json.dumps(payload, indent=2) + "\n")
    print(*sections, sep="\n\n")
    print(f"wrote {args.out_dir}/timnet.{{csv,md,json}}, timnet_stacked.csv")
    return 0


def _cost_main(args: argparse.Namespace) -> int:
    from avemotion import bench_cost

    if not (args.out_dir / "timnet.json").exists():
        print(f"error: {args.out_dir}/timnet.json is missing: run `python -m avemotion.bench timnet` first",
              file=sys.stderr)  # fmt: skip
        return 2
    config = avcfg.load_config(args.base)
    clips = Path("results/clips/clips.csv")
    run_clips = len(pd.read_csv(clips)) if clips.exists() else None
    startup_file = args.out_dir / "startup.json"
    startup = json.loads(startup_file.read_text()) if startup_file.exists() else None
    rows = bench_cost.cost_table(
        config, args.out_dir, Path("benchmarks"), run_clips, startup, args.gpu_tflops
    )
    info = json.loads((args.out_dir / "timnet.json").read_text())["machine"]
    header = (
        f"# Cost of the full reproduction per rule (`python -m avemotion.bench cost`)\n\n"
        f"CPU-hours measured on {info['cpu_model']} ({info['torch_threads']} torch threads) by `bench timnet`, "
        f"`bench backbones` and `bench startup`; per-clip rules scaled from the last run in this folder "
        f"({run_clips} clips). GPU-hours are NOT measured: FLOPs / an assumed {args.gpu_tflops:g} TFLOP/s."
    )
    table = bench_cost.render(rows) + "\n\n" + "\n".join(bench_cost.seed_costs(config, rows))
    atomic_write_text(args.out_dir / "cost.csv", pd.DataFrame(rows).to_csv(index=False, float_format="%.6g"))
    atomic_write_text(args.out_dir / "cost.md", f"{header}\n\n{table}\n")
    atomic_write_text(
        args.out_dir / "cost.json", json.dumps({"machine": info, "rows": rows}, indent=2) + "\n"
    )
    print(header, "", table, sep="\n")
    print(f"wrote {args.out_dir}/cost.{{csv,md,json}}")
    return 0


def _startup_main(args: argparse.Namespace) -> int:
    from avemotion import bench_startup

    result = bench_startup.measure(Path.cwd(), args.workflow_profile, args.repeats)
    info = machine_info(torch.device("cpu"))
    which = (
        f"profile {args.workflow_profile}" if args.workflow_profile else "the full reproduction (config.yaml)"
    )
    header = (
        f"# Per-job start-up (`python -m avemotion.bench startup`)\n\n{info['cpu_model']}, torch {info['torch']}; "
        f"jobs of {which}; each time the best of {args.repeats} fresh processes."
    )
    table = bench_startup.render(result)
    stem = "startup_demo" if args.workflow_profile else "startup"
    atomic_write_text(args.out_dir / f"{stem}.csv", pd.DataFrame(result["rows"]).to_csv(index=False))
    atomic_write_text(args.out_dir / f"{stem}.md", f"{header}\n\n{table}\n")
    atomic_write_text(args.out_dir / f"{stem}.json", json.dumps({"machine": info, **result}, indent=2) + "\n")
    print(header, "", table, sep="\n")
    print(f"wrote {args.out_dir}/{stem}.{{csv,md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
