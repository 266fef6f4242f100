"""Training: one model per (task, configuration, fold[, emotion]), evaluated once on the fold's test actors.

- binary (Table 1): one emotion vs the rest, class-weighted binary cross-entropy (each class weighs
  n / (2 n_class), so both classes count equally), metric macro-F1 over the two classes at p = 0.5;
- multiclass (Table 2): 8 classes in the tables' alphabetical order, unweighted cross-entropy (label
  smoothing from config), metric accuracy.

Adam with the Table 3 learning rate, batch size and epochs. The checkpoint kept is the epoch with the lowest
training loss (paper); the test fold is used for nothing but the final evaluation. The whole fold's features
are read once and kept in memory (on the GPU when there is one). Seeded and deterministic on CPU.

CLI (the ``train_model`` rule)::

    python -m avemotion.train --spec '<TrainSpec JSON>' --features results/features/lms/features.npy \
        --index results/features/lms/index.csv --clips results/clips/clips.csv \
        --manifest results/clips/data_manifest.json --out results/train/lms/multiclass/all/fold0
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from avemotion import paper, registry, runs
from avemotion.config import TrainSpec
from avemotion.io import atomic_path, atomic_write_text
from avemotion.models import TIMNetClassifier, TIMNetConfig

OUTPUTS = ("metrics.json", "predictions.csv", "history.csv", "confusion.csv", "checkpoint.pt")


class TrainingError(RuntimeError):
    """Training cannot go on (bad inputs, non-finite loss); the message says what and where."""


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


# ------------------------------------------------------------------------------------------- metrics


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def macro_f1(cm: np.ndarray) -> float:
    """Unweighted mean of per-class F1 from a confusion matrix (a class never true nor predicted scores 0)."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # predicted + true = 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def accuracy(cm: np.ndarray) -> float:
    return float(np.trace(cm) / cm.sum())


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


def fit(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, spec: TrainSpec, weights: torch.Tensor | None
) -> tuple[list[dict], dict, int]:
    """Train; return the per-epoch history, the state with the lowest training loss, and its epoch (1-based)."""
    opt = torch.optim.Adam(
        model.parameters(),
        lr=spec.learning_rate,
        betas=(spec.beta1, spec.beta2),
        eps=spec.eps,
        weight_decay=spec.weight_decay,
    )
    gen = torch.Generator().manual_seed(spec.seed)
    history, best_state, best_epoch, best_loss = [], None, 0, math.inf
    n = len(y)
    for epoch in range(1, spec.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen).to(x.device)
        total, correct = 0.0, 0
        for start in range(0, n, spec.batch_size):
            batch = order[start : start + spec.batch_size]
            logits = model(x[batch])
            loss = loss_fn(logits, y[batch], spec, weights)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"non-finite training loss ({loss.item()}) at epoch {epoch}; lower the learning rate "
                    f"(training.hyperparameters.{spec.configuration}.{spec.task}.learning_rate)"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
            correct += int((predict(logits, spec.task) == y[batch]).sum())
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
def probabilities(model: torch.nn.Module, x: torch.Tensor, task: str, batch_size: int = 256) -> np.ndarray:
    """(N, n_classes) class probabilities in eval mode (binary: [p(rest), p(target)])."""
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        if task == "binary":
            p = torch.sigmoid(logits[:, 0])
            out.append(torch.stack([1 - p, p], dim=1))
        else:
            out.append(torch.softmax(logits, dim=1))
    return torch.cat(out).cpu().numpy()


def train_job(spec: TrainSpec, table: pd.DataFrame, features: np.ndarray, threads: int = 1) -> dict:
    """Train and evaluate one job in memory; returns everything the output files and MLflow need."""
    torch.manual_seed(spec.seed)
    device = pick_device(spec.device)
    if device.type == "cpu":
        # The CPU kernels TIM-Net uses are deterministic (tests rerun jobs and compare). No
        # torch.use_deterministic_algorithms: it imports torch._inductor, 1.2 s of every job's start.
        torch.set_num_threads(threads)
    test_mask = table["actor"].isin(spec.test_actors).to_numpy()
    if not test_mask.any() or test_mask.all():
        raise TrainingError(
            f"fold {spec.fold}: test actors {spec.test_actors} leave an empty train or test set"
        )
    y_all = targets(table, spec.task, spec.target)
    x_train, x_test = features[~test_mask], features[test_mask]
    mean, std = standardizer(x_train) if spec.standardize else (None, None)
    if spec.standardize:
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    n_classes = 2 if spec.task == "binary" else len(paper.CLASSES)
    weights = None
    if spec.task == "binary":
        weights = torch.as_tensor(balanced_weights(y_all[~test_mask], 2), device=device)
    cfg = TIMNetConfig(
        in_features=features.shape[2],
        channels=spec.channels,
        scales=spec.scales,
        kernel_size=spec.kernel_size,
        convs_per_block=spec.convs_per_block,
        dropout=spec.dropout,
    )
    model = TIMNetClassifier(cfg, n_outputs=1 if spec.task == "binary" else n_classes).to(device)
    xt = torch.as_tensor(np.ascontiguousarray(x_train), device=device)
    yt = torch.as_tensor(y_all[~test_mask], device=device)
    history, best_state, best_epoch = fit(model, xt, yt, spec, weights)
    model.load_state_dict(best_state)
    probs = probabilities(model, torch.as_tensor(np.ascontiguousarray(x_test), device=device), spec.task)
    y_test = y_all[test_mask]
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_test, y_pred, n_classes)
    metrics = {
        "accuracy": accuracy(cm),
        "macro_f1": macro_f1(cm),
        "best_epoch": best_epoch,
        "best_train_loss": history[best_epoch - 1]["train_loss"],
        "n_train": int((~test_mask).sum()),
        "n_test": int(test_mask.sum()),
        "device": device.type,
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
        "model_config": asdict(cfg),
        "n_outputs": 1 if spec.task == "binary" else n_classes,
        "spec": asdict(spec),
        "mean": None if mean is None else torch.from_numpy(mean),
        "std": None if std is None else torch.from_numpy(std),
        "classes": class_names,
    }
    return {
        "metrics": metrics,
        "history": pd.DataFrame(history),
        "predictions": predictions,
        "confusion": pd.DataFrame(cm, index=class_names, columns=class_names),
        "checkpoint": checkpoint,
    }


# ---------------------------------------------------------------------------------------- job wiring


def table_number(task: str) -> int:
    return 1 if task == "binary" else 2


def run_label(spec: TrainSpec) -> tuple[str, str]:
    """(job key, human run name): "table2/lms/multiclass/all/fold3", "Table 2 / LMS / fold 3"."""
    labels = " + ".join(registry.get(k).label for k in spec.features)
    parts = [f"Table {table_number(spec.task)}", labels]
    if spec.task == "binary":
        parts.append(spec.target)
    parts.append(f"fold {spec.fold}")
    key = f"table{table_number(spec.task)}/{spec.configuration}/{spec.task}/{spec.target}/fold{spec.fold}"
    return key, " / ".join(parts)


def write_outputs(result: dict, spec: TrainSpec, out: Path) -> list[Path]:
    """Write the job's files atomically; returns their paths (in OUTPUTS order)."""
    metric_name = "macro_f1" if spec.task == "binary" else "accuracy"
    metrics = {
        **asdict(spec),
        **result["metrics"],
        "metric": metric_name,
        "value": result["metrics"][metric_name],
    }
    paths = [out / name for name in OUTPUTS]
    atomic_write_text(paths[0], json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    atomic_write_text(paths[1], result["predictions"].to_csv(index=False, float_format="%.6f"))
    atomic_write_text(paths[2], result["history"].to_csv(index=False, float_format="%.6f"))
    atomic_write_text(paths[3], result["confusion"].to_csv())
    with atomic_path(paths[4]) as tmp:
        torch.save(result["checkpoint"], tmp)
    return paths


def _raise_on_sigterm(signum, frame):  # Snakemake/SLURM stop jobs with SIGTERM: end the MLflow run KILLED
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spec", required=True, help="TrainSpec as JSON")
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--clips", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI; omit to not track")
    parser.add_argument("--experiment-prefix", default="avemotion")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    spec = TrainSpec.from_json(args.spec)
    table = pd.read_csv(args.clips)
    job_key, run_name = run_label(spec)
    tracked = (
        runs.job_run(
            args.tracking_uri,
            runs.experiment_name(args.experiment_prefix, spec.task),
            job_key,
            run_name,
            {
                "table": str(table_number(spec.task)),
                "configuration": spec.configuration,
                "task": spec.task,
                "target": spec.target,
                "fold": str(spec.fold),
            },
        )
        if args.tracking_uri
        else None
    )
    try:
        with tracked or contextlib.nullcontext() as run:
            if run is not None:
                manifest = json.loads(args.manifest.read_text())
                root = Path.cwd()
                run.log_params(
                    {**asdict(spec), "git_commit": runs.git_commit(root), "data_sha256": manifest["sha256"]}
                )
            features = load_features(args.features, args.index, table)
            result = train_job(spec, table, features, args.threads)
            paths = write_outputs(result, spec, args.out)
            if run is not None:
                run.log_metrics(result["history"].to_dict("records"), step_key="epoch")
                m = result["metrics"]
                summary = {k: m[k] for k in ("best_epoch", "best_train_loss", "n_train", "n_test")}
                run.log_metrics([{"test_accuracy": m["accuracy"], "test_macro_f1": m["macro_f1"], **summary}])
                run.log_artifacts(paths)
    except (TrainingError, runs.TrackingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    m = result["metrics"]
    print(
        f"{run_name}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, best epoch {m['best_epoch']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
