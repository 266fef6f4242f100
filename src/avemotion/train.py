"""Training: one model per (task, configuration, fold[, emotion]), evaluated once on the fold's test actors.

- binary (Table 1): one emotion vs the rest, class-weighted binary cross-entropy (each class weighs
  n / (2 n_class), so both classes count equally), metric macro-F1 over the two classes at p = 0.5;
- multiclass (Table 2): 8 classes in the tables' alphabetical order, unweighted cross-entropy (label
  smoothing from config), metric accuracy.

Adam with the Table 3 learning rate, batch size and epochs. The checkpoint kept is the epoch with the lowest
training loss (paper); the test fold is used for nothing but the final evaluation. The whole fold's features
are read once and kept in memory (on the GPU when there is one). Seeded and deterministic on CPU.

CLI (the ``train_binary`` and ``train_multiclass`` rules). One process trains every target of a configuration,
task and fold: one ``--spec`` and ``--out`` per target (8 for binary, 1 for multiclass), the features read once;
with config ``jobs.group_folds`` every fold of the configuration and task in turn (40 or 5 values), and with
``jobs.configurations_per_job`` several configurations of one task one after the other. A multimodal
configuration (fusion, Table 2) takes one ``--features``/``--index`` pair per branch, in the order of its name
(``face_kpd+lms``: Face KPD, then LMS); where the jobs train on different arrays (a backbone's per-fold frozen
features, several configurations) one pair per branch of each ``--spec``::

    python -m avemotion.train --spec '<TrainSpec JSON>' --features results/features/lms/features.npy \
        --index results/features/lms/index.csv --clips results/clips/clips.csv \
        --manifest results/clips/data_manifest.json --out results/train/lms/multiclass/all/fold0
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from avemotion import paper, registry, runs, seeds
from avemotion.config import JOB_OUTPUTS, TrainSpec
from avemotion.io import DiskFullError, atomic_group, atomic_write_text, write_torch
from avemotion.metrics import accuracy, confusion_matrix, macro_f1
from avemotion.models import BackboneClassifier, FusionClassifier, TIMNet, TIMNetClassifier, TIMNetConfig


class TrainingError(RuntimeError):
    """Training cannot go on (bad inputs, non-finite loss); the message says what and where."""


class NonFiniteLoss(TrainingError):
    """The training loss became NaN or infinite; ``diagnostic`` holds what the job saves for a post-mortem
    (``--diagnostic``): where it happened, the batch, its inputs, the parameters and the history so far."""

    def __init__(self, message: str, diagnostic: dict):
        super().__init__(message)
        self.diagnostic = diagnostic


def nonfinite_diagnostic(
    model: torch.nn.Module,
    inputs: Inputs,
    losses: list[float],
    epoch: int,
    step: int,
    batch: torch.Tensor,
    history: list[dict] | dict[str, list[dict]],
) -> dict:
    """The facts of a non-finite loss: epoch and step, the loss value(s), the batch's rows of the training
    set, per input the count of non-finite values and the largest finite magnitude, the parameters that
    already hold non-finite values and the largest parameter magnitude, and the finished epochs' history."""
    tensors = inputs if isinstance(inputs, list) else [inputs]
    finite_max = []
    for t in tensors:
        finite = t[torch.isfinite(t)]
        finite_max.append(float(finite.abs().max()) if finite.numel() else None)
    return {
        "epoch": epoch,
        "step": step,
        "loss": [str(v) for v in losses],  # "nan", "inf": JSON has no such numbers
        "batch_rows": batch.tolist(),
        "inputs_non_finite": [int((~torch.isfinite(t)).sum()) for t in tensors],
        "inputs_max_abs_finite": finite_max,
        "parameters_non_finite": [
            name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())
        ],
        "parameters_max_abs": max(float(p.detach().abs().max()) for p in model.parameters()),
        "history": history,
    }


def nonfinite_message(spec: TrainSpec, diagnostic: dict, targets: list[str]) -> str:
    """What went wrong, where, and what to do: non-finite inputs point at their features, finite ones at the
    learning rate."""
    if any(diagnostic["inputs_non_finite"]):
        advice = (
            f"the batch's inputs hold {sum(diagnostic['inputs_non_finite'])} non-finite values: rebuild the "
            f"features of {spec.configuration} (snakemake --forcerun extract_features)"
        )
    else:
        advice = (
            "the inputs are finite: lower the learning rate "
            f"(training.hyperparameters.{spec.configuration}.{spec.task}.learning_rate)"
        )
    where = f"{spec.configuration} {spec.task} fold {spec.fold}"
    if spec.task == "binary":
        where += f" ({', '.join(targets)})"
    values = [v for v in diagnostic["loss"] if not math.isfinite(float(v))]
    return (
        f"non-finite training loss ({', '.join(values)}) in {where} at epoch "
        f"{diagnostic['epoch']}, step {diagnostic['step']}; {advice}"
    )


# ---------------------------------------------------------------------------------------------- data


def load_features(features: Path, index: Path, table: pd.DataFrame) -> np.ndarray:
    """The feature array in clip-table order, read once; checks that the index covers the table."""
    array = np.load(features)
    idx = pd.read_csv(index)
    if len(idx) != array.shape[0]:
        raise TrainingError(f"{index} lists {len(idx)} clips but {features} holds {array.shape[0]}")
    rows = dict(zip(idx["clip"], idx["row"], strict=True))
    missing = [c for c in table["clip"] if c not in rows]
    if missing:
        raise TrainingError(f"{features} has no row for {len(missing)} clips, e.g. {missing[:3]}")
    return array[[rows[c] for c in table["clip"]]]


def targets(table: pd.DataFrame, task: str, target: str) -> np.ndarray:
    """Class indices: 0..7 (alphabetical) for multiclass; 1 = ``target`` emotion, 0 = rest for binary."""
    if task == "multiclass":
        return table["label"].to_numpy(dtype=np.int64)
    return (table["emotion"] == target).to_numpy(dtype=np.int64)


def standardizer(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over the training clips and frames (std floored so constants stay finite)."""
    mean = x_train.mean(axis=(0, 1), dtype=np.float64)
    std = x_train.std(axis=(0, 1), dtype=np.float64)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def balanced_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Class weights n / (n_classes * n_c): each class contributes equally to the loss."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    if (counts == 0).any():
        raise TrainingError(f"a class has no training sample (counts {counts.tolist()})")
    return (len(y) / (n_classes * counts)).astype(np.float32)


# ------------------------------------------------------------------------------------------ training


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("training.device is 'cuda' but no CUDA device is available (use 'auto')")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def loss_fn(logits: torch.Tensor, y: torch.Tensor, spec: TrainSpec, weights: torch.Tensor | None):
    if spec.task == "binary":
        per_sample = F.binary_cross_entropy_with_logits(logits[:, 0], y.float(), reduction="none")
        return (per_sample * weights[y]).mean()
    return F.cross_entropy(logits, y, label_smoothing=spec.label_smoothing)


def autocast(device: torch.device, enabled: bool, cpu_bfloat16: bool = False):
    """Mixed precision on CUDA when ``enabled`` (bfloat16 where the GPU has it, else float16), bfloat16 on
    the CPU when ``cpu_bfloat16`` (``fast_path``); float32 otherwise."""
    if device.type == "cpu" and cpu_bfloat16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 dot products natively (AVX512-BF16 or AMX): where bfloat16
    autocast pays. Elsewhere oneDNN emulates them, slower than float32."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


@dataclass(frozen=True)
class FastPath:
    """How a TIM-Net job computes on its device; every choice gives the same function (up to rounding)."""

    layout: str  # models.TIMNet layout: "conv" or "time_major"
    cpu_bfloat16: bool  # bfloat16 autocast on the CPU
    compile: bool  # torch.compile of the TIM-Net streams (TIMNet.compile_streams)

    @property
    def precision(self) -> str:
        return "bfloat16" if self.cpu_bfloat16 else "float32"


def fast_path(spec: TrainSpec, device: torch.device) -> FastPath:
    """The fastest form of a job's TIM-Nets that ``python -m avemotion.bench timnet`` measured (README,
    "Training speed"): on a CPU with bfloat16 dot products (config ``training.cpu_precision: auto``, or
    forced with ``bfloat16``) the time-major layout under bfloat16 autocast, compiled with
    ``training.compile``; in float32 the convolution layout, eager (time-major and compiled gain nothing
    there). On CUDA: the convolution layout, as before (``training.mixed_precision`` for backbones)."""
    if device.type != "cpu":
        return FastPath("conv", False, False)
    bf16 = spec.cpu_precision == "bfloat16" or (spec.cpu_precision == "auto" and cpu_has_bfloat16())
    if not bf16:
        return FastPath("conv", False, False)
    return FastPath("time_major", True, spec.compile)


def has_cpp_compiler() -> bool:
    """Whether torch.compile's CPU backend finds a C++ compiler (the CXX variable, or one on PATH)."""
    names = [os.environ.get("CXX", ""), "c++", "g++", "clang++"]
    return any(name and shutil.which(name) for name in names)


def build_timnet_model(
    spec: TrainSpec, cfgs: list[TIMNetConfig], n_outputs: int, device: torch.device
) -> torch.nn.Module:
    """A job's TIM-Net model on ``device`` in its ``fast_path`` form: one TIMNetClassifier, or the fusion
    model of ``spec.branches`` (one TIMNet per branch config in ``cfgs``)."""
    fast = fast_path(spec, device)
    if spec.branches:
        model = FusionClassifier(cfgs, spec.fusion_hidden, n_outputs, spec.fusion_dropout, fast.layout)
    else:
        model = TIMNetClassifier(cfgs[0], n_outputs, fast.layout)
    if fast.compile and not has_cpp_compiler():
        # torch.compile on the CPU writes C++ and needs a compiler; without one the job runs eager.
        print("warning: training.compile is on but no C++ compiler (CXX, c++, g++, clang++) is on PATH: "
              "training eager; install one (conda: cxx-compiler) or set training.compile: false",
              file=sys.stderr)  # fmt: skip
    elif fast.compile:
        for module in model.modules():
            if isinstance(module, TIMNet):
                module.compile_streams(spec.batch_size)
    return model.to(device)


def adam(model: torch.nn.Module, spec: TrainSpec) -> torch.optim.Adam:
    """Adam over the trainable parameters (a frozen Wav2Vec2 waveform encoder has none).

    The fused kernel: one pass over all parameters instead of a loop of small ops per tensor, 5.6x faster on
    CPU for a ResNet's 5.4 M parameters (4 ms against 23 ms a step); the same update rule.
    """
    return torch.optim.Adam(
        (p for p in model.parameters() if p.requires_grad),
        lr=spec.learning_rate,
        betas=(spec.beta1, spec.beta2),
        eps=spec.eps,
        weight_decay=spec.weight_decay,
        fused=True,
    )


def grad_scaler(amp: bool) -> torch.amp.GradScaler:
    """Loss scaling for float16 autocast; a no-op for bfloat16 (same range as float32) and without autocast."""
    return torch.amp.GradScaler("cuda", enabled=amp and not torch.cuda.is_bf16_supported())


Inputs = torch.Tensor | list[torch.Tensor]  # one modality, or one tensor per fusion branch


def take(x: Inputs, rows: torch.Tensor, device: torch.device) -> Inputs:
    """Rows ``rows`` of the clips of ``x`` (each branch's, for fusion), moved to ``device``."""
    if isinstance(x, list):
        return [take(t, rows, device) for t in x]
    return x[rows.to(x.device)].to(device, non_blocking=True)


def fit(
    model: torch.nn.Module,
    x: Inputs,
    y: torch.Tensor,
    spec: TrainSpec,
    weights: torch.Tensor | None,
    cpu_bfloat16: bool = False,
) -> tuple[list[dict], dict, int]:
    """Train; return the per-epoch history, the state with the lowest training loss, and its epoch (1-based).

    ``x`` is one tensor, or a list of them (one per fusion branch, the same clips in the same order). It may
    live on the CPU while the model is on the GPU (a backbone's raw inputs): each batch is moved to the
    model's device. With ``spec.mixed_precision`` on CUDA the forward pass runs under autocast and the loss
    is scaled when the autocast type is float16; with ``cpu_bfloat16`` (``fast_path``) it runs under
    bfloat16 autocast on the CPU (evaluation stays float32).
    """
    device = next(model.parameters()).device
    opt = adam(model, spec)
    amp = spec.mixed_precision and device.type == "cuda"
    scaler = grad_scaler(amp)
    gen = seeds.batch_generator(spec.seed)
    seeds.seed_dropout(spec.seed)  # the model is built: its dropout masks come from their own stream
    history, best_state, best_epoch, best_loss = [], None, 0, math.inf
    n = len(y)
    for epoch in range(1, spec.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        total, correct = 0.0, 0
        for start in range(0, n, spec.batch_size):
            batch = order[start : start + spec.batch_size]
            xb = take(x, batch, device)
            yb = y[batch.to(y.device)]
            with autocast(device, amp, cpu_bfloat16):
                logits = model(xb)
            loss = loss_fn(logits.float(), yb, spec, weights)
            if not torch.isfinite(loss):
                step = start // spec.batch_size + 1
                found = nonfinite_diagnostic(model, xb, [loss.item()], epoch, step, batch, history)
                raise NonFiniteLoss(nonfinite_message(spec, found, [spec.target]), found)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total += loss.item() * len(batch)
            correct += int((predict(logits, spec.task) == yb).sum())
        epoch_loss = total / n
        history.append(
            {
                "epoch": epoch,
                "train_loss": epoch_loss,
                "train_accuracy": correct / n,
                "epoch_seconds": time.perf_counter() - t0,
            }
        )
        if epoch_loss < best_loss:
            best_loss, best_epoch = epoch_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
    return history, best_state, best_epoch


def predict(logits: torch.Tensor, task: str) -> torch.Tensor:
    if task == "binary":
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


@torch.no_grad()
def probabilities(
    model: torch.nn.Module, x: Inputs, task: str, batch_size: int = 256, amp: bool = False
) -> np.ndarray:
    """(N, n_classes) class probabilities in eval mode (binary: [p(rest), p(target)])."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    n = len(x[0]) if isinstance(x, list) else len(x)
    for start in range(0, n, batch_size):
        with autocast(device, amp):
            logits = model(take(x, torch.arange(start, min(start + batch_size, n)), device)).float()
        if task == "binary":
            p = torch.sigmoid(logits[:, 0])
            out.append(torch.stack([1 - p, p], dim=1))
        else:
            out.append(torch.softmax(logits, dim=1))
    return torch.cat(out).cpu().numpy()


def timnet_config(spec: TrainSpec, in_features: int, branch: dict | None = None) -> TIMNetConfig:
    """The TIM-Net of a job (or of one fusion branch: its own scales and channels)."""
    return TIMNetConfig(
        in_features=in_features,
        channels=branch["channels"] if branch else spec.channels,
        scales=branch["scales"] if branch else spec.scales,
        kernel_size=spec.kernel_size,
        convs_per_block=spec.convs_per_block,
        dropout=spec.dropout,
    )


def start_job(spec: TrainSpec, threads: int, seed_weights: bool = True) -> torch.device:
    """Seed the generators a job draws from before training (avemotion.seeds: the initial weights' stream
    unless ``seed_weights`` is False, where the caller built part of the model from it already, and NumPy's
    augmentation stream) and pick its device; the first thing a training job does. ``fit`` seeds the dropout
    masks' and the batch order's streams."""
    if seed_weights:
        seeds.seed_weights(spec.seed)
    # Wav2Vec2 draws its SpecAugment masks from NumPy's global generator (transformers'
    # _compute_mask_indices): without this a fine-tuning differs from run to run.
    seeds.seed_augment(spec.seed)
    device = pick_device(spec.device)
    if device.type == "cpu":
        # The CPU kernels TIM-Net uses are deterministic (tests rerun jobs and compare). No
        # torch.use_deterministic_algorithms: it imports torch._inductor, 1.2 s of every job's start.
        torch.set_num_threads(threads)
    return device


def fold_mask(table: pd.DataFrame, spec: TrainSpec) -> np.ndarray:
    """True for the clips of the fold's test actors; an error when train or test would be empty."""
    test_mask = table["actor"].isin(spec.test_actors).to_numpy()
    if not test_mask.any() or test_mask.all():
        raise TrainingError(
            f"fold {spec.fold}: test actors {spec.test_actors} leave an empty train or test set"
        )
    return test_mask


def feature_inputs(
    spec: TrainSpec, arrays: list[np.ndarray], test_mask: np.ndarray, device: torch.device
) -> tuple[list[torch.Tensor], list[torch.Tensor], list | None, list | None, list[TIMNetConfig]]:
    """Train and test tensors of feature arrays (one per fusion branch), standardised with the training
    clips' statistics when ``spec.standardize``; the statistics (None without); each branch's TIM-Net."""
    x_train, x_test = [a[~test_mask] for a in arrays], [a[test_mask] for a in arrays]
    stats = [standardizer(a) for a in x_train] if spec.standardize else [(None, None)] * len(arrays)
    if spec.standardize:
        x_train = [(a - m) / sd for a, (m, sd) in zip(x_train, stats, strict=True)]
        x_test = [(a - m) / sd for a, (m, sd) in zip(x_test, stats, strict=True)]
    cfgs = [
        timnet_config(spec, a.shape[2], branch)
        for a, branch in zip(arrays, spec.branches or [None], strict=True)
    ]
    xt = [torch.as_tensor(np.ascontiguousarray(a), device=device) for a in x_train]
    x_eval = [torch.as_tensor(np.ascontiguousarray(a), device=device) for a in x_test]
    mean = [torch.from_numpy(m) for m, _ in stats] if spec.standardize else None
    std = [torch.from_numpy(sd) for _, sd in stats] if spec.standardize else None
    return xt, x_eval, mean, std, cfgs


def train_job(
    spec: TrainSpec,
    table: pd.DataFrame,
    features: np.ndarray | torch.Tensor | list[np.ndarray],
    threads: int = 1,
    backbone: torch.nn.Module | None = None,
) -> dict:
    """Train and evaluate one job in memory; returns everything the output files and MLflow need.

    Without ``backbone``, ``features`` is a (clips, frames, dims) feature array and TIM-Net is trained on it;
    for a multimodal configuration (``spec.branches``) it is a list of such arrays, one per branch in the
    spec's order (frames and dims may differ), and the fusion model is trained on them, each branch
    standardised with its own training-fold statistics.
    With one (``avemotion.finetune``), ``features`` holds the backbone's raw inputs (patches or audio, kept
    on the CPU and moved to the device per batch) and the backbone is fine-tuned end to end under TIM-Net.
    """
    # A backbone passed in was built from the weights stream already (avemotion.finetune): its TIM-Net head
    # draws on from there.
    device = start_job(spec, threads, seed_weights=backbone is None)
    test_mask = fold_mask(table, spec)
    y_all = targets(table, spec.task, spec.target)
    n_outputs = 1 if spec.task == "binary" else len(paper.CLASSES)
    weights = None
    if spec.task == "binary":
        weights = torch.as_tensor(balanced_weights(y_all[~test_mask], 2), device=device)
    if backbone is None:
        # TIM-Net on feature arrays: one (clips, frames, dims) array, or one per fusion branch.
        arrays = [np.asarray(a) for a in features] if spec.branches else [np.asarray(features)]
        if spec.branches and len(arrays) != len(spec.branches):
            raise TrainingError(
                f"{spec.configuration}: {len(spec.branches)} branches but {len(arrays)} inputs"
            )
        xt, x_eval, mean, std, cfgs = feature_inputs(spec, arrays, test_mask, device)
        model = build_timnet_model(spec, cfgs, n_outputs, device)
        if spec.branches:
            model_config = {
                "branches": [asdict(c) for c in cfgs],
                "hidden": list(spec.fusion_hidden),
                "dropout": spec.fusion_dropout,
            }
        else:  # one modality: plain tensors, not one-element lists
            model_config = asdict(cfgs[0])
            xt, x_eval = xt[0], x_eval[0]
            mean, std = (mean[0], std[0]) if spec.standardize else (None, None)
        eval_batch = 256
    else:
        # A backbone's raw inputs (its own normalisation inside the model), on the CPU, moved per batch.
        mask = torch.tensor(test_mask)
        xt, x_eval, eval_batch = features[~mask], features[mask], spec.batch_size
        cfg = timnet_config(spec, backbone.out_features)
        model = BackboneClassifier(backbone, TIMNetClassifier(cfg, n_outputs)).to(device)
        model_config, mean, std = asdict(cfg), None, None
    yt = torch.as_tensor(y_all[~test_mask], device=device)
    fast = fast_path(spec, device) if backbone is None else FastPath("conv", False, False)
    history, best_state, best_epoch = fit(model, xt, yt, spec, weights, fast.cpu_bfloat16)
    model.load_state_dict(best_state)
    return evaluate(
        spec, table, test_mask, model, history, best_state, best_epoch, x_eval, eval_batch,
        {"model_config": model_config, "mean": mean, "std": std,
         "backbone": None if backbone is None else backbone.architecture()},
    )  # fmt: skip


def evaluate(
    spec: TrainSpec,
    table: pd.DataFrame,
    test_mask: np.ndarray,
    model: torch.nn.Module,
    history: list[dict],
    best_state: dict,
    best_epoch: int,
    x_eval: Inputs,
    eval_batch: int,
    rebuild: dict,
    stacked_models: int = 1,
) -> dict:
    """Evaluate a trained job's model (holding its best state) on the fold's test clips; everything the
    output files and MLflow need. ``rebuild``: the checkpoint's model_config, mean, std and backbone;
    ``stacked_models``: how many models trained together with it (``avemotion.stacked``), 1 alone."""
    probs = probabilities(model, x_eval, spec.task, eval_batch, spec.mixed_precision)
    y_test = targets(table, spec.task, spec.target)[test_mask]
    y_pred = probs.argmax(axis=1)
    n_classes = 2 if spec.task == "binary" else len(paper.CLASSES)
    cm = confusion_matrix(y_test, y_pred, n_classes)
    metrics = {
        "accuracy": accuracy(cm),
        "macro_f1": macro_f1(cm),
        "best_epoch": best_epoch,
        "best_train_loss": history[best_epoch - 1]["train_loss"],
        "n_train": int((~test_mask).sum()),
        "n_test": int(test_mask.sum()),
        "device": next(model.parameters()).device.type,
        "stacked_models": stacked_models,
        # How it was computed on that device (fast_path): the same function, up to rounding.
        **_fast_path_metrics(spec, next(model.parameters()).device, stacked_models),
    }
    class_names = ["rest", spec.target] if spec.task == "binary" else list(paper.CLASSES)
    test = table[test_mask]
    predictions = pd.DataFrame(
        {"clip": test["clip"].to_numpy(), "actor": test["actor"].to_numpy(), "true": y_test, "pred": y_pred}
    )
    for i, name in enumerate(class_names):
        predictions[f"p_{name}"] = probs[:, i]
    checkpoint = {
        "state_dict": {k: v.cpu() for k, v in best_state.items()},
        "model_config": rebuild["model_config"],
        "n_outputs": 1 if spec.task == "binary" else n_classes,
        # How to rebuild the backbone's architecture before loading state_dict (avemotion.finetune).
        "backbone": rebuild["backbone"],
        "spec": asdict(spec),
        # Training-fold standardisation: one tensor (a list of them for fusion, per branch), or None.
        "mean": rebuild["mean"],
        "std": rebuild["std"],
        "classes": class_names,
    }
    return {
        "metrics": metrics,
        "history": pd.DataFrame(history),
        "predictions": predictions,
        "confusion": pd.DataFrame(cm, index=class_names, columns=class_names),
        "checkpoint": checkpoint,
    }


def _fast_path_metrics(spec: TrainSpec, device: torch.device, stacked_models: int) -> dict:
    fast = fast_path(spec, device)
    if spec.backbone or stacked_models > 1:  # fine-tuning and the stacked models: float32, convolutions
        fast = FastPath("conv", False, False)
    return {
        "precision": fast.precision,
        "layout": fast.layout,
        "compiled": fast.compile and has_cpp_compiler(),
    }


# ---------------------------------------------------------------------------------------- job wiring


def table_number(task: str) -> int:
    return 1 if task == "binary" else 2


def run_label(spec: TrainSpec) -> tuple[str, str]:
    """(job key, human run name) of one model: "table2/lms/multiclass/all/seed1/fold3",
    "Table 2 / LMS / seed 1 / fold 3"."""
    labels = " + ".join(registry.get(k).label for k in spec.features)
    parts = [f"Table {table_number(spec.task)}", labels]
    if spec.task == "binary":
        parts.append(spec.target)
    parts += [f"seed {spec.seed}", f"fold {spec.fold}"]
    key = (
        f"table{table_number(spec.task)}/{spec.configuration}/{spec.task}/{spec.target}/seed{spec.seed}/"
        f"fold{spec.fold}"
    )
    return key, " / ".join(parts)


def write_outputs(result: dict, spec: TrainSpec, out: Path) -> list[Path]:
    """Write the job's files, all or none (an earlier run's set stays whole when the disk fills: DiskFullError
    naming the file that did not fit); returns their paths (in JOB_OUTPUTS order)."""
    metric_name = "macro_f1" if spec.task == "binary" else "accuracy"
    metrics = {
        **asdict(spec),
        **result["metrics"],
        "metric": metric_name,
        "value": result["metrics"][metric_name],
    }
    paths = [out / name for name in JOB_OUTPUTS]
    with atomic_group() as stage:
        stage(paths[0]).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        stage(paths[1]).write_text(result["predictions"].to_csv(index=False, float_format="%.6f"))
        stage(paths[2]).write_text(result["history"].to_csv(index=False, float_format="%.6f"))
        stage(paths[3]).write_text(result["confusion"].to_csv())
        write_torch(stage(paths[4]), result["checkpoint"])
    return paths


def _raise_on_sigterm(signum, frame):  # Snakemake/SLURM stop jobs with SIGTERM: end the MLflow run KILLED
    raise SystemExit(128 + signum)


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The CLI arguments every training job has (this module's and ``avemotion.finetune``'s).

    One process may train several fold jobs (the 8 one-vs-rest models of a fold, and with jobs.group_folds
    every fold of a configuration): ``--spec`` and ``--out`` take one value per job, in the same order; the
    inputs are read once for all of them.
    """
    parser.add_argument("--spec", nargs="+", required=True, help="TrainSpec as JSON, one per job")
    parser.add_argument("--clips", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path, nargs="+", required=True, help="output folder, one per --spec")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI; omit to not track")
    parser.add_argument("--experiment-prefix", default="avemotion")
    parser.add_argument(
        "--diagnostic",
        type=Path,
        default=None,
        help="where a non-finite loss leaves its diagnostic (JSON; removed when the job next succeeds)",
    )


def run_jobs(
    args: argparse.Namespace,
    train: Callable[[TrainSpec, pd.DataFrame], dict],
    train_stacked: Callable[[list[TrainSpec], pd.DataFrame], list[dict]] | None = None,
) -> int:
    """The fold jobs of ``args.spec``, one after the other: each ``train(spec, clip table)`` inside its own
    MLflow run, its outputs written to its ``--out`` folder, one summary line. Errors the user can act on
    print ``error: ...`` and return 1 at the first failing job (Snakemake then removes the outputs of all of
    them: a rerun trains the whole group again).

    With ``train_stacked``, one-vs-rest specs that ``avemotion.stacked.use_stack`` accepts train together:
    every job's MLflow run is open while the stack trains, then each job's outputs are written and logged."""
    from avemotion import stacked

    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    if len(args.spec) != len(args.out):
        print(f"error: {len(args.spec)} --spec values but {len(args.out)} --out folders", file=sys.stderr)
        return 1
    if args.tracking_uri:  # a store inside the project comes relative to it (the job's working directory)
        args.tracking_uri = runs.absolute_uri(args.tracking_uri, Path.cwd())
    table = pd.read_csv(args.clips)
    data_sha256 = json.loads(args.manifest.read_text())["sha256"] if args.tracking_uri else None
    specs = [TrainSpec.from_json(text) for text in args.spec]
    groups = []
    # A job's configurations and their seeds and folds in turn, each fold's targets together.
    for key in dict.fromkeys((s.configuration, s.task, s.seed, s.fold) for s in specs):
        members = [
            (s, o)
            for s, o in zip(specs, args.out, strict=True)
            if (s.configuration, s.task, s.seed, s.fold) == key
        ]
        if train_stacked is not None and stacked.use_stack([s for s, _ in members]):
            groups.append(members)
        else:
            groups += [[member] for member in members]
    for group in groups:
        try:
            with contextlib.ExitStack() as stack:
                tracked = [stack.enter_context(_job_run(args, s, data_sha256, len(group))) for s, _ in group]
                if len(group) == 1:
                    results = [train(group[0][0], table)]
                else:
                    results = train_stacked([s for s, _ in group], table)
                for (spec, out), run, result in zip(group, tracked, results, strict=True):
                    _finish_job(spec, out, run, result)
        except NonFiniteLoss as e:
            if args.diagnostic is not None:
                save_diagnostic(args.diagnostic, e.diagnostic, group[0][0], table)
                print(f"error: {e} (diagnostic: {args.diagnostic})", file=sys.stderr)
            else:
                print(f"error: {e}", file=sys.stderr)
            return 1
        except (TrainingError, runs.TrackingError, DiskFullError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    if args.diagnostic is not None:
        args.diagnostic.unlink(missing_ok=True)  # an earlier attempt's: this one trained
    return 0


def save_diagnostic(path: Path, diagnostic: dict, spec: TrainSpec, table: pd.DataFrame) -> None:
    """A non-finite loss's diagnostic as JSON, with the job's identity and the names of the batch's clips
    (``batch_rows`` count the fold's training clips in clip-table order)."""
    train_clips = table.loc[~fold_mask(table, spec), "clip"].tolist()
    job = {
        k: getattr(spec, k)
        for k in ("configuration", "task", "target", "fold", "learning_rate", "batch_size", "epochs", "seed")
    }
    record = {"job": job, **diagnostic, "batch_clips": [train_clips[i] for i in diagnostic["batch_rows"]]}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


@contextlib.contextmanager
def _job_run(args: argparse.Namespace, spec: TrainSpec, data_sha256: str | None, stacked_models: int):
    """The job's MLflow run with its parameters logged (None when not tracked)."""
    if not args.tracking_uri:
        yield None
        return
    job_key, run_name = run_label(spec)
    tags = {
        "table": str(table_number(spec.task)),
        "configuration": spec.configuration,
        "task": spec.task,
        "target": spec.target,
        "fold": str(spec.fold),
        "seed": str(spec.seed),
    }
    experiment = runs.experiment_name(args.experiment_prefix, spec.task)
    with runs.job_run(args.tracking_uri, experiment, job_key, run_name, tags) as run:
        params = {
            k: json.dumps(v) if isinstance(v, tuple) and v and isinstance(v[0], dict) else v
            for k, v in asdict(spec).items()
            if k != "backbone"
        }
        for k, v in (spec.backbone or {}).items():
            params[f"backbone.{k}"] = json.dumps(v) if isinstance(v, dict | list) else v
        run.log_params(
            {
                **params,
                "stacked_models": stacked_models,
                "git_commit": runs.git_commit(Path.cwd()),
                "data_sha256": data_sha256,
            }
        )
        yield run


def _finish_job(spec: TrainSpec, out: Path, run: runs.JobRun | None, result: dict) -> None:
    """Write a trained job's files, log its metrics and files to its run, print its summary line."""
    paths = write_outputs(result, spec, out)
    m = result["metrics"]
    if run is not None:
        run.log_metrics(result["history"].to_dict("records"), step_key="epoch")
        summary = {k: m[k] for k in ("best_epoch", "best_train_loss", "n_train", "n_test")}
        run.log_metrics([{"test_accuracy": m["accuracy"], "test_macro_f1": m["macro_f1"], **summary}])
        run.log_artifacts(paths)
    print(
        f"{run_label(spec)[1]}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, "
        f"best epoch {m['best_epoch']}",
        flush=True,
    )


def job_key(spec: TrainSpec) -> tuple[str, str, str, int, int]:
    """A fold job's identity within one process: configuration, task, target, fold, seed."""
    return spec.configuration, spec.task, spec.target, spec.fold, spec.seed


def job_feature_paths(args: argparse.Namespace) -> dict[tuple, tuple[tuple[Path, Path], ...]]:
    """The (features, index) pair of every fusion branch of each ``--spec`` (by job_key). ``--features`` and
    ``--index`` hold one per branch, read by every job of one configuration, or one per branch of each spec
    in ``--spec`` order (a job of several configurations, or jobs.group_folds with a backbone's per-fold
    frozen features). The jobs of one configuration and fold (the 8 one-vs-rest targets) must read the same
    arrays: they are read once, and stacked."""
    specs = [TrainSpec.from_json(text) for text in args.spec]
    counts = [max(len(s.branches), 1) for s in specs]
    n, configurations = len(args.features), list(dict.fromkeys(s.configuration for s in specs))
    shared = len(configurations) == 1 and n == counts[0]
    if n != len(args.index) or not (shared or n == sum(counts)):
        raise TrainingError(
            f"{' '.join(configurations)}: {n} --features and {len(args.index)} --index for {len(specs)} jobs "
            f"of {'/'.join(map(str, dict.fromkeys(counts)))} modality(ies) each (give one per modality, or "
            "one per modality of each job)"
        )
    pairs = list(zip(args.features, args.index, strict=True))
    offsets = [0, *itertools.accumulate(counts)]
    paths = {
        job_key(spec): tuple(pairs) if shared else tuple(pairs[offsets[i] : offsets[i + 1]])
        for i, spec in enumerate(specs)
    }
    per_fold: dict[tuple, set] = {}
    for key, value in paths.items():
        per_fold.setdefault((key[0], key[1], key[3], key[4]), set()).add(value)
    for (configuration, _, fold, _), found in per_fold.items():
        if len(found) != 1:
            raise TrainingError(f"{configuration} fold {fold}: its jobs name different --features")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_job_arguments(parser)
    parser.add_argument(
        "--features",
        type=Path,
        nargs="+",
        required=True,
        help="one per fusion branch, or one per branch and --spec (folds with their own arrays)",
    )
    parser.add_argument("--index", type=Path, nargs="+", required=True, help="one per --features")
    args = parser.parse_args(argv)

    try:
        feature_paths = job_feature_paths(args)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    loaded: dict[tuple, list[np.ndarray]] = {}  # the latest fold's features, read once for its jobs

    def inputs(spec: TrainSpec, table: pd.DataFrame) -> list[np.ndarray]:
        paths = feature_paths[job_key(spec)]
        if paths not in loaded:
            loaded.clear()
            loaded[paths] = [load_features(f, i, table) for f, i in paths]
        return loaded[paths]

    def train(spec: TrainSpec, table: pd.DataFrame) -> dict:
        arrays = inputs(spec, table)
        return train_job(spec, table, arrays if spec.branches else arrays[0], args.threads)

    def train_stacked(specs: list[TrainSpec], table: pd.DataFrame) -> list[dict]:
        from avemotion import stacked

        return stacked.train_jobs(specs, table, inputs(specs[0], table)[0], args.threads)

    return run_jobs(args, train, train_stacked)


if __name__ == "__main__":
    sys.exit(main())
