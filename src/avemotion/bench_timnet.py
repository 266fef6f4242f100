"""TIM-Net training speed on this machine: every figure from one run, so every ratio compares like with like.

For each feature shape TIM-Net is trained on (frames x dims: the engineered features, and the frozen backbone
features that multimodal fusion reads), on random float32 data of ``clips`` clips, batch 64, Table 3's TIM-Net
(64 channels, 3 convolutions per block, 7 scales; 8 for 146 frames) with an 8-class head:

- **ours**: one epoch of ``train.fit`` on the model ``train.build_timnet_model`` builds, what every training
  job of the full reproduction runs (``train.fast_path`` for the config's ``training.cpu_precision`` and
  ``training.compile`` on this machine: on a CPU with bfloat16 dot products the time-major layout under
  bfloat16 autocast, compiled; Adam with its fused kernel, the project's loss, the best-state bookkeeping),
  in seconds and samples/s, and the seconds its first epoch costs on top (the compile);
- **ours float32**: the same loop forced to float32 (convolution layout, eager), so both precisions are
  measured;
- **plain**: the textbook PyTorch loop over the same model class (index a shuffled batch, forward,
  cross-entropy, backward, ``torch.optim.Adam()`` step), the reference every speed-up is a ratio to;
- FLOPs per sample of forward + backward (``torch.utils.flop_counter``; convolutions and matmuls, element-wise
  ops not counted), the GFLOP/s each loop achieves, and its share of the float32 matmul peak measured in the
  same run (the best of a few 2048 x 2048 matmuls; the bfloat16 peak beside it);
- a measured floor: the step's matmuls alone, each at its real (narrow) shape, summed over an epoch;
- stacked one-vs-rest models (``avemotion.stacked``): model-samples/s of K models at once against one;
- whether the accuracy holds: the same TIM-Net trained from the same seed in float32 and in ours, on a
  learnable synthetic task (``accuracy_check``), test accuracy and final training loss of each.

CLI: ``python -m avemotion.bench timnet [--clips 1152] [--epochs 2] [--threads N] [--out-dir results/benchmarks]``
writes ``timnet.csv``, ``timnet.md`` and ``timnet.json``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from avemotion import registry, train
from avemotion.config import TrainSpec
from avemotion.models import TIMNetClassifier, TIMNetConfig

BATCH, CHANNELS, CONVS = 64, 64, 3
# The shapes of the 8-class and binary TIM-Nets: every engineered feature, and the frozen features of the
# backbones that fusion reads (Wav2Vec2-L's 146 frames, the ResNets' central 88).
FUSION_BACKBONES = ("wav2vec2_large", "face_resnet", "eyes_resnet", "mouth_resnet")
MATMUL_N = 2048


def shapes() -> list[tuple[int, int]]:
    """(frames, dims) of every TIM-Net the study trains, in registry order, without repeats."""
    found: list[tuple[int, int]] = []
    for f in registry.FEATURES.values():
        if not f.is_backbone:
            shape = (f.frames, f.dims)
        elif f.key in FUSION_BACKBONES:
            shape = (f.frozen_frames, f.dims)
        else:
            continue
        if shape not in found:
            found.append(shape)
    return found


def scales_for(frames: int) -> int:
    """Table 3: 7 scales on the 88-frame features, 8 on Wav2Vec2's 146 (the largest dilation stays < T)."""
    return 8 if frames > 2**7 else 7


def spec_for(frames: int, device: str = "cpu", lr: float = 1e-3) -> TrainSpec:
    return TrainSpec(
        configuration="bench", task="multiclass", target="all", fold=0, test_actors=(1,),
        learning_rate=lr, batch_size=BATCH, epochs=1, scales=scales_for(frames), channels=CHANNELS,
        kernel_size=2, convs_per_block=CONVS, dropout=0.1, seed=0, device=device, beta1=0.93, beta2=0.98,
        eps=1e-8, weight_decay=0.0, label_smoothing=0.1, standardize=True,
    )  # fmt: skip


def build(frames: int, dims: int, seed: int = 0) -> TIMNetClassifier:
    torch.manual_seed(seed)
    cfg = TIMNetConfig(dims, CHANNELS, scales_for(frames), 2, CONVS, 0.1)
    return TIMNetClassifier(cfg, n_outputs=8)


def plain_epoch(
    model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> float:
    """The reference loop: shuffle, then per batch index, forward, cross-entropy, backward, step."""
    model.train()
    order = torch.randperm(len(y))
    total = 0.0
    for start in range(0, len(y), BATCH):
        batch = order[start : start + BATCH]
        opt.zero_grad()
        loss = F.cross_entropy(model(x[batch]), y[batch])
        loss.backward()
        opt.step()
        total += loss.item() * len(batch)
    return total / len(y)


def flops_per_sample(frames: int, dims: int) -> float:
    """Forward + backward FLOPs of one sample (counted on one batch)."""
    from avemotion.bench import count_flops  # bench imports this module lazily: no cycle at import time

    model = build(frames, dims)
    x = torch.randn(BATCH, frames, dims)
    step = lambda: F.cross_entropy(model(x), torch.zeros(BATCH, dtype=torch.long)).backward()  # noqa: E731
    return count_flops(step) / BATCH


def matmul_peak_gflops(n: int = MATMUL_N, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """The best GFLOP/s of an n x n matmul in ``dtype`` on this machine, at the current torch threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def step_gemms(frames: int, dims: int) -> list[tuple[tuple[int, int, int], int]]:
    """The matmuls of one training step of a batch, as ((m, n, p), times): an (m x n) @ (n x p) product.

    Every TIM-Net convolution is a GEMM over the batch's B*T time steps (kernel 2: the two taps side by side,
    2C inputs). Per stream: the 1x1 input conv (forward and weight gradient; the data needs no gradient) and
    S*L dilated convs (forward, input gradient, weight gradient). The head and scale weighting are left out
    (under 0.1 % of the FLOPs).
    """
    rows, c, k, convs = BATCH * frames, CHANNELS, 2, 2 * scales_for(frames) * CONVS
    return [
        ((rows, dims, c), 2),  # input 1x1 conv forward, two streams
        ((dims, rows, c), 2),  # its weight gradient
        ((rows, k * c, c), convs),  # dilated conv forward
        ((rows, c, k * c), convs),  # its input gradient
        ((k * c, rows, c), convs),  # its weight gradient
    ]


def gemm_floor_seconds(frames: int, dims: int, clips: int, repeats: int = 5) -> float:
    """A measured lower bound of one epoch: the step's matmuls alone (``step_gemms``), each shape timed on
    its own (best of ``repeats``), summed over an epoch's steps. BatchNorm, activations, the gate, dropout,
    Adam and data are left out, so no implementation of this step on this CPU can beat it by much."""
    step = 0.0
    for (m, n, p), times in step_gemms(frames, dims):
        a, b = torch.randn(m, n), torch.randn(n, p)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        step += best * times
    return step * math.ceil(clips / BATCH)


def best_seconds(fn: Callable[[], object], epochs: int) -> float:
    """The fastest of ``epochs`` timed calls, after one untimed warm-up call."""
    return timed(fn, epochs)[0]


def timed(fn: Callable[[], object], epochs: int) -> tuple[float, float]:
    """(the fastest of ``epochs`` timed calls, the first call's seconds beyond it): the first call warms up
    (and compiles, where the loop compiles)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), max(first - min(times), 0.0)


@dataclass(frozen=True)
class Speed:
    """What ``train.fast_path`` runs on the CPU for the measured config: ``config training.cpu_precision``
    and ``training.compile``."""

    cpu_precision: str = "auto"
    compile: bool = True


@dataclass(frozen=True)
class Row:
    shape: str
    frames: int
    dims: int
    scales: int
    clips: int
    precision: str  # ours: float32 or bfloat16 (train.fast_path on this CPU)
    layout: str  # ours: conv or time_major
    compiled: bool  # ours: torch.compile of the streams
    plain_s_per_epoch: float
    ours_s_per_epoch: float
    speedup: float  # plain / ours
    ours_first_epoch_extra_s: float  # the first epoch's seconds beyond a steady one (compile, warm-up)
    ours_float32_s_per_epoch: float  # the same loop in float32, convolution layout, eager
    float32_speedup: float  # plain / ours float32
    plain_samples_per_s: float
    ours_samples_per_s: float
    gflop_per_sample: float  # forward + backward
    plain_gflops: float
    ours_gflops: float
    plain_share_of_peak: float  # of the float32 matmul peak
    ours_share_of_peak: float  # of the float32 matmul peak
    gemm_floor_s_per_epoch: float  # the step's float32 matmuls alone at their shapes (gemm_floor_seconds)


def ours_spec(frames: int, speed: Speed) -> TrainSpec:
    return replace(spec_for(frames), cpu_precision=speed.cpu_precision, compile=speed.compile)


def ours_model(frames: int, dims: int, spec: TrainSpec, seed: int = 0) -> torch.nn.Module:
    """The model a training job builds for ``spec`` (``train.build_timnet_model``), from ``seed``."""
    torch.manual_seed(seed)
    cfg = TIMNetConfig(dims, CHANNELS, scales_for(frames), 2, CONVS, 0.1)
    return train.build_timnet_model(spec, [cfg], 8, torch.device("cpu"))


def measure(frames: int, dims: int, clips: int, epochs: int, peak: float, speed: Speed = Speed()) -> Row:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(clips, frames, dims, generator=gen)
    y = torch.randint(0, 8, (clips,), generator=gen)
    spec = ours_spec(frames, speed)
    fast = train.fast_path(spec, torch.device("cpu"))
    plain_model = build(frames, dims)
    plain_opt = torch.optim.Adam(plain_model.parameters(), lr=spec.learning_rate)
    plain = best_seconds(lambda: plain_epoch(plain_model, plain_opt, x, y), epochs)
    model = ours_model(frames, dims, spec)
    ours, extra = timed(lambda: train.fit(model, x, y, spec, None, fast.cpu_bfloat16), epochs)
    f32_spec = replace(spec, cpu_precision="float32", compile=False)
    f32_model = ours_model(frames, dims, f32_spec)
    ours_f32 = best_seconds(lambda: train.fit(f32_model, x, y, f32_spec, None), epochs)
    flops = flops_per_sample(frames, dims)
    return Row(
        shape=f"{frames}x{dims}", frames=frames, dims=dims, scales=spec.scales, clips=clips,
        precision=fast.precision, layout=fast.layout, compiled=fast.compile,
        plain_s_per_epoch=plain, ours_s_per_epoch=ours, speedup=plain / ours, ours_first_epoch_extra_s=extra,
        ours_float32_s_per_epoch=ours_f32, float32_speedup=plain / ours_f32,
        plain_samples_per_s=clips / plain, ours_samples_per_s=clips / ours,
        gflop_per_sample=flops / 1e9, plain_gflops=flops * clips / plain / 1e9,
        ours_gflops=flops * clips / ours / 1e9, plain_share_of_peak=flops * clips / plain / 1e9 / peak,
        ours_share_of_peak=flops * clips / ours / 1e9 / peak,
        gemm_floor_s_per_epoch=gemm_floor_seconds(frames, dims, clips),
    )  # fmt: skip


def render(rows: Sequence[Row], peak: float, bf16_peak: float | None = None) -> str:
    bf16 = f"; bfloat16: {bf16_peak:.1f} GFLOP/s" if bf16_peak else ""
    lines = [
        f"float32 matmul peak ({MATMUL_N}x{MATMUL_N}, this run): {peak:.1f} GFLOP/s{bf16}",
        "",
        "| shape | scales | ours | plain s/epoch | ours s/epoch | speed-up | first epoch + | ours float32 "
        "s/epoch | float32 speed-up | ours samples/s | GFLOP/sample | ours GFLOP/s | share of peak "
        "(plain) | matmuls alone s/epoch (float32) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        how = f"{r.precision}, {r.layout}" + (", compiled" if r.compiled else "")
        lines.append(
            f"| {r.shape} | {r.scales} | {how} | {r.plain_s_per_epoch:.3f} | {r.ours_s_per_epoch:.3f} | "
            f"{r.speedup:.2f}x | {r.ours_first_epoch_extra_s:.1f} s | {r.ours_float32_s_per_epoch:.3f} | "
            f"{r.float32_speedup:.2f}x | {r.ours_samples_per_s:.0f} | {r.gflop_per_sample:.4f} | "
            f"{r.ours_gflops:.1f} | {100 * r.ours_share_of_peak:.1f} % ({100 * r.plain_share_of_peak:.1f} %) | "
            f"{r.gemm_floor_s_per_epoch:.3f} |"
        )
    return "\n".join(lines)


def run(
    clips: int,
    epochs: int,
    selected: Sequence[tuple[int, int]] | None = None,
    speed: Speed = Speed(),
) -> tuple[float, list[Row]]:
    peak = matmul_peak_gflops()
    rows = [measure(frames, dims, clips, epochs, peak, speed) for frames, dims in (selected or shapes())]
    return peak, rows


# ---------------------------------------------------------------------------------- accuracy check


@dataclass(frozen=True)
class AccuracyRow:
    shape: str
    precision: str  # float32 (the reference) or ours
    layout: str
    compiled: bool
    epochs: int
    final_train_loss: float
    test_accuracy: float


def learnable_task(
    frames: int, dims: int, clips: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A synthetic 8-class task with temporal structure (train x, y, test x, y): class c adds a sinusoid of
    period 4 + 2c frames, of amplitude 0.6 under unit noise, to a quarter of the dims. Not separable from
    one frame: a model must integrate over time, as TIM-Net does on the real features."""
    gen = torch.Generator().manual_seed(seed)
    n = clips + clips // 4
    y = torch.randint(0, 8, (n,), generator=gen)
    t = torch.arange(frames, dtype=torch.float32)
    phase = 2 * math.pi * torch.rand(n, 1, generator=gen)
    wave = torch.sin(2 * math.pi * t / (4 + 2 * y[:, None].float()) + phase)  # (N, T)
    x = torch.randn(n, frames, dims, generator=gen)
    x[:, :, : max(1, dims // 4)] += 0.6 * wave[:, :, None]
    return x[:clips], y[:clips], x[clips:], y[clips:]


def accuracy_check(
    frames: int, dims: int, clips: int, epochs: int, speed: Speed = Speed()
) -> list[AccuracyRow]:
    """The same model (same seed, same batches) trained in float32 and in ours on ``learnable_task``; both
    evaluated in float32, as the jobs evaluate."""
    x, y, x_test, y_test = learnable_task(frames, dims, clips)
    rows = []
    for spec in (
        replace(ours_spec(frames, speed), cpu_precision="float32", compile=False),
        ours_spec(frames, speed),
    ):
        spec = replace(spec, epochs=epochs)
        fast = train.fast_path(spec, torch.device("cpu"))
        model = ours_model(frames, dims, spec)
        history, _, _ = train.fit(model, x, y, spec, None, fast.cpu_bfloat16)
        probs = train.probabilities(model, x_test, "multiclass")
        accuracy = float((torch.from_numpy(probs).argmax(1) == y_test).float().mean())
        rows.append(
            AccuracyRow(
                f"{frames}x{dims}",
                fast.precision,
                fast.layout,
                fast.compile,
                epochs,
                history[-1]["train_loss"],
                accuracy,
            )
        )
    return rows


def render_accuracy(rows: Sequence[AccuracyRow]) -> str:
    lines = [
        "| shape | precision | layout | compiled | epochs | final train loss | test accuracy |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.shape} | {r.precision} | {r.layout} | {'yes' if r.compiled else 'no'} | {r.epochs} | "
            f"{r.final_train_loss:.4f} | {100 * r.test_accuracy:.1f} % |"
        )
    return "\n".join(lines)


def as_records(rows: Sequence[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


# ---------------------------------------------------------------------------------- stacked models


@dataclass(frozen=True)
class StackRow:
    shape: str
    device: str
    models: int  # K: 1 = one model at a time (train.fit), else one stacked model (avemotion.stacked)
    clips: int
    s_per_epoch: float  # one epoch of all K models
    model_samples_per_s: float  # K * clips / s_per_epoch
    speedup: float  # model-samples/s against K = 1
    peak_memory_mb: float  # CUDA: the most allocated during the epoch; NaN on CPU


def stack_models_default(device: torch.device) -> tuple[int, ...]:
    """K = 1 and 8 (a fold's one-vs-rest models); on CUDA also 40 (every fold's)."""
    return (1, 8, 40) if device.type == "cuda" else (1, 8)


def measure_stack(
    frames: int, dims: int, clips: int, epochs: int, ks: Sequence[int], device: torch.device
) -> list[StackRow]:
    """One epoch of K binary TIM-Nets on random data: K = 1 through ``train.fit``, K > 1 through
    ``stacked.fit``; model-samples/s and the ratio to K = 1."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(clips, frames, dims, generator=gen).to(device)
    rows = []
    for k in ks:
        ys = torch.randint(0, 2, (k, clips), generator=gen).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = best_seconds(_stack_epoch(x, ys, device), epochs)
        memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
        rows.append(
            StackRow(f"{frames}x{dims}", device.type, k, clips, seconds, k * clips / seconds, 0.0, memory)
        )
    base = rows[0].model_samples_per_s if rows and rows[0].models == 1 else float("nan")
    return [replace(r, speedup=r.model_samples_per_s / base) for r in rows]


def _stack_epoch(x: torch.Tensor, ys: torch.Tensor, device: torch.device) -> Callable[[], None]:
    """A call that trains one epoch of len(ys) fresh binary TIM-Nets on ``x``: alone or stacked."""
    from avemotion import stacked

    k, (_, frames, dims) = len(ys), x.shape
    spec = replace(spec_for(frames, device.type), task="binary", target="angry")
    cfg = TIMNetConfig(dims, CHANNELS, scales_for(frames), 2, CONVS, 0.1)
    weights = torch.ones(k, 2, device=device)
    torch.manual_seed(0)
    models = [TIMNetClassifier(cfg, 1).to(device) for _ in range(k)]
    model = stacked.StackedTIMNetClassifier.from_models(models).to(device) if k > 1 else None

    def epoch() -> None:
        if model is None:
            train.fit(models[0], x, ys[0], spec, weights[0])
        else:
            stacked.fit(model, x, ys, spec, weights, ["angry"] * k)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return epoch


def render_stack(rows: Sequence[StackRow]) -> str:
    lines = [
        "| shape | device | models K | s/epoch (all K) | model-samples/s | vs K = 1 | peak memory |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        memory = "–" if r.peak_memory_mb != r.peak_memory_mb else f"{r.peak_memory_mb:.0f} MB"
        lines.append(
            f"| {r.shape} | {r.device} | {r.models} | {r.s_per_epoch:.3f} | {r.model_samples_per_s:.0f} | "
            f"{r.speedup:.2f}x | {memory} |"
        )
    return "\n".join(lines)
