"""The one-vs-rest models of a fold trained as one stacked model: K TIM-Nets, one pass over the data.

Table 1 trains 8 binary TIM-Nets per (feature, fold), one per emotion. They read the same clips in the same
order (one seed), start from the same weights (one seed) and draw the same dropout masks; only the labels and
class weights differ. So they can run as one model whose layers hold all K side by side, (B, K*C, T):

- the input 1x1 convolutions become one F -> K*C matmul (the K weight matrices concatenated);
- every block convolution is a grouped convolution, one group per model; BatchNorm is per channel, so per model;
- each spatial dropout draws the one channel mask every model would have drawn alone and applies it to all K
  (``models.SharedDropout1d``);
- scale weights (K, S) and heads (K, n, C) are per model;
- the loss is the sum of the K models' losses, so each model's gradient is its own loss's gradient, and Adam is
  element-wise, so each model's optimizer state is what it would be alone.

Each model therefore sees exactly the data, seed and optimizer state it would see alone: the tests compare
outputs, gradients and whole trainings with separate models (equal up to float rounding, as summation order in
a grouped convolution differs from a plain one). Every model keeps its own best epoch and checkpoint, which is
a plain ``TIMNetClassifier`` state, and is evaluated alone.

Whether it pays is a property of the device: ``python -m avemotion.bench stacked`` measures K = 1 against
K = 8 (config ``training.stack_targets``: ``auto`` stacks on CUDA only).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from avemotion import seeds
from avemotion.config import TrainSpec
from avemotion.models import Stream, TIMNetClassifier, TIMNetConfig

# TIMNetClassifier keys held with a leading model axis (K, ...) here; every other tensor stacks along channels.
_PER_MODEL = {
    "encoder.scale_weights": "scale_weights",
    "head.weight": "head_weight",
    "head.bias": "head_bias",
}


class StackedTIMNetClassifier(nn.Module):
    """K TIM-Net classifiers of one configuration on one input: (B, T, F) -> logits (B, K, n_outputs)."""

    def __init__(self, cfg: TIMNetConfig, n_outputs: int, models: int) -> None:
        super().__init__()
        if models < 1:
            raise ValueError(f"models must be >= 1, got {models}")
        self.cfg, self.models, self.n_outputs = cfg, models, n_outputs
        self.forward_stream = Stream(cfg, models)
        self.backward_stream = Stream(cfg, models)
        self.scale_weights = nn.Parameter(torch.zeros(models, cfg.scales))
        self.head_weight = nn.Parameter(torch.zeros(models, n_outputs, cfg.channels))
        self.head_bias = nn.Parameter(torch.zeros(models, n_outputs))

    @classmethod
    def from_models(cls, models: list[TIMNetClassifier]) -> StackedTIMNetClassifier:
        """The stack of ``models`` (same configuration), with their weights and BatchNorm statistics."""
        first = models[0]
        if any(m.encoder.cfg != first.encoder.cfg for m in models):
            raise ValueError("stacked models must share one TIMNetConfig")
        with torch.random.fork_rng(devices=[]):  # building the stack must not move the caller's generator
            stacked = cls(first.encoder.cfg, first.head.out_features, len(models))
        stacked.load_state_dict(stack_states([m.state_dict() for m in models]))
        return stacked

    def model_state(self, k: int) -> dict[str, torch.Tensor]:
        """Model ``k``'s state as a ``TIMNetClassifier`` state dict (copies)."""
        return unstack_state(self.state_dict(), k, self.models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, f = x.shape
        if f != self.cfg.in_features or self.cfg.dilations[-1] >= t:
            raise ValueError(f"input {tuple(x.shape)} does not fit {self.cfg}")
        x = x.transpose(1, 2)  # (B, F, T)
        fwd, bwd = self.forward_stream(x), self.backward_stream(x.flip(-1))  # S x (B, K*C, T)
        s = torch.stack([(a + c).mean(dim=-1) for a, c in zip(fwd, bwd, strict=True)], dim=1)  # (B, S, K*C)
        s = s.view(b, self.cfg.scales, self.models, self.cfg.channels)
        fused = torch.einsum("bskc,ks->bkc", s, self.scale_weights)  # (B, K, C)
        return torch.einsum("bkc,knc->bkn", fused, self.head_weight) + self.head_bias  # (B, K, n)


def stack_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """K ``TIMNetClassifier`` state dicts -> one ``StackedTIMNetClassifier`` state dict."""
    out = {}
    for key, first in states[0].items():
        tensors = [s[key] for s in states]
        if key in _PER_MODEL:
            out[_PER_MODEL[key]] = torch.stack(tensors)
        elif key.endswith("num_batches_tracked"):
            out[key.removeprefix("encoder.")] = first.clone()  # one count: the models step together
        else:
            out[key.removeprefix("encoder.")] = torch.cat(tensors)  # channels, model after model
    return out


def unstack_state(state: dict[str, torch.Tensor], k: int, models: int) -> dict[str, torch.Tensor]:
    """Model ``k`` of a ``StackedTIMNetClassifier`` state dict, as a ``TIMNetClassifier`` state dict."""
    by_stacked = {v: key for key, v in _PER_MODEL.items()}
    out = {}
    for key, tensor in state.items():
        if key in by_stacked:
            out[by_stacked[key]] = tensor[k].clone()
        elif key.endswith("num_batches_tracked"):
            out[f"encoder.{key}"] = tensor.clone()
        else:
            out[f"encoder.{key}"] = tensor.view(models, -1, *tensor.shape[1:])[k].clone()
    return out


def stackable(specs: list[TrainSpec]) -> bool:
    """True when ``specs`` are one-vs-rest TIM-Net jobs that differ only in their target emotion."""
    if len(specs) < 2 or any(s.task != "binary" or s.backbone or s.branches for s in specs):
        return False
    same = {s.to_json() for s in (_without_target(s) for s in specs)}
    return len(same) == 1


def use_stack(specs: list[TrainSpec]) -> bool:
    """Whether ``specs`` train stacked: stackable, and ``stack_targets`` is "always", or "auto" on CUDA."""
    from avemotion.train import pick_device

    if not stackable(specs):
        return False
    mode = specs[0].stack_targets
    return mode == "always" or (mode == "auto" and pick_device(specs[0].device).type == "cuda")


def _without_target(spec: TrainSpec) -> TrainSpec:
    return replace(spec, target="")


def fit(
    model: StackedTIMNetClassifier,
    x: torch.Tensor,
    ys: torch.Tensor,
    spec: TrainSpec,
    weights: torch.Tensor,
    targets: list[str],
) -> tuple[list[list[dict]], list[dict], list[int]]:
    """``train.fit`` for K binary models at once: ``ys`` (K, N) labels, ``weights`` (K, 2) class weights.

    Returns per model its history, its best state (a ``TIMNetClassifier`` state dict) and best epoch. The
    batches, the loss of each model and the Adam update are those of ``train.fit`` for that model alone.
    """
    from avemotion.train import NonFiniteLoss, adam, nonfinite_diagnostic, nonfinite_message

    device = next(model.parameters()).device
    k_models, n = ys.shape
    opt = adam(model, spec)
    gen = seeds.batch_generator(spec.seed)
    seeds.seed_dropout(spec.seed)  # the models are built: the masks come from their own stream
    histories: list[list[dict]] = [[] for _ in range(k_models)]
    best_states: list[dict] = [{} for _ in range(k_models)]
    best_epochs, best_losses = [0] * k_models, [math.inf] * k_models
    rows = torch.arange(k_models, device=device)[:, None]
    for epoch in range(1, spec.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        totals, correct = np.zeros(k_models), np.zeros(k_models, dtype=np.int64)
        for start in range(0, n, spec.batch_size):
            batch = order[start : start + spec.batch_size].to(device)
            yb = ys[:, batch]  # (K, B)
            logits = model(x[batch])[:, :, 0].T  # (K, B)
            per_sample = F.binary_cross_entropy_with_logits(logits, yb.float(), reduction="none")
            losses = (per_sample * weights[rows, yb]).mean(dim=1)  # (K,): each model's own loss
            values = losses.detach().cpu().tolist()
            bad = [t for t, v in zip(targets, values, strict=True) if not math.isfinite(v)]
            if bad:
                step = start // spec.batch_size + 1
                done = dict(zip(targets, histories, strict=True))
                found = nonfinite_diagnostic(model, x[batch], values, epoch, step, batch, done)
                found["targets"] = targets
                raise NonFiniteLoss(nonfinite_message(spec, found, bad), found)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()  # d(sum)/d(model k's weights) = d(loss k)/d(model k's weights)
            opt.step()
            totals += np.array(values) * len(batch)
            correct += ((logits > 0).long() == yb).sum(dim=1).cpu().numpy()
        seconds = time.perf_counter() - t0
        for k in range(k_models):
            epoch_loss = float(totals[k]) / n
            histories[k].append(
                {
                    "epoch": epoch,
                    "train_loss": epoch_loss,
                    "train_accuracy": int(correct[k]) / n,
                    "epoch_seconds": seconds,  # of the whole stack's epoch
                }
            )
            if epoch_loss < best_losses[k]:
                best_losses[k], best_epochs[k] = epoch_loss, epoch
                best_states[k] = model.model_state(k)
    return histories, best_states, best_epochs


def train_jobs(
    specs: list[TrainSpec], table: pd.DataFrame, features: np.ndarray, threads: int = 1
) -> list[dict]:
    """``train.train_job`` for every spec of ``specs`` (one-vs-rest jobs of one configuration and fold),
    trained stacked; the same results, in the same order."""
    from avemotion import train

    if not stackable(specs):
        raise ValueError("stacked training needs one-vs-rest TIM-Net specs that differ only in target")
    spec = specs[0]
    device = train.start_job(spec, threads)
    test_mask = train.fold_mask(table, spec)
    xt, x_eval, mean, std, cfg = train.feature_inputs(spec, [np.asarray(features)], test_mask, device)
    models = []
    for s in specs:  # each model built as train_job builds it alone: from the seed's weights stream
        seeds.seed_weights(s.seed)
        models.append(TIMNetClassifier(cfg[0], 1).to(device))
    stacked = StackedTIMNetClassifier.from_models(models).to(device)
    y_all = [train.targets(table, s.task, s.target) for s in specs]
    ys = torch.as_tensor(np.stack([y[~test_mask] for y in y_all]), device=device)
    weights = torch.as_tensor(
        np.stack([train.balanced_weights(y[~test_mask], 2) for y in y_all]), device=device
    )
    histories, best_states, best_epochs = fit(stacked, xt[0], ys, spec, weights, [s.target for s in specs])
    rebuild = {
        "model_config": asdict(cfg[0]),
        "mean": mean[0] if mean else None,
        "std": std[0] if std else None,
        "backbone": None,
    }
    results = []
    for s, model, history, state, epoch in zip(
        specs, models, histories, best_states, best_epochs, strict=True
    ):
        model.load_state_dict(state)  # each model evaluated alone, as train_job evaluates it
        results.append(
            train.evaluate(
                s, table, test_mask, model, history, state, epoch, x_eval[0], 256, rebuild, len(specs)
            )
        )
    return results
