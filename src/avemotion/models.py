"""TIM-Net, the temporal model every modality of the study runs through, in PyTorch.

TIM-Net ("Temporal-aware bI-direction Multi-scale Network", Ye et al., ICASSP 2023) is the model the paper
("The Role of Facial and Speech Features in Emotion Classification") trains on each feature sequence: log-mel
frames, Wav2Vec2 frames, face/eyes/mouth embeddings, key points, action units. This file follows the official
Keras code (github.com/Jiaxin-Ye/TIM-Net_SER, Code/TIMNET.py and Code/Model.py) layer for layer:

    x (B, T, F) ──┬──> 1x1 conv ──> block d=1 ──> block d=2 ──> ... ──> block d=2^(S-1)     forward stream
                  │                    │             │                       │
                  └─ flip time ─> 1x1 conv ──> block ──> block ──> ... ──> block             backward stream
                                       │             │                       │
                         per scale i:  fwd_i + bwd_i, averaged over time ──> (B, C)
                         stack ──> (B, S, C) ──> learned weighted sum over scales ──> (B, C)

A temporal-aware block is L causal dilated convolutions (conv -> BatchNorm -> ReLU -> spatial dropout), whose
sigmoid gates the block input: out = x * sigmoid(h). The official code has L = 2; the paper uses L = 3
(``convs_per_block``). Where this file departs from a literal port it says why. The points that matter:

- The backward stream is the input reversed in time *before* any layer, with its own weights (Keras builds new
  layers at each call, so the two streams share nothing).
- fwd_i + bwd_i is added as is, without flipping bwd_i back (``add([skip_out_forward, skip_out_backward])`` in
  the official code): time step t of the sum pairs original time t with original time T-1-t. Only the time
  average of the sum is used, and the average does not care about order, so this equals the re-flipped sum.
- The block's channels always equal the 1x1 conv's, so the official 1x1 residual conv (built only when the
  channel counts differ) never exists: the gate multiplies the block input itself.
- The scale weights are a plain vector initialised U(-0.05, 0.05) (Keras ``'uniform'``), no softmax.
- Keras defaults carried over: BatchNorm eps 1e-3 and momentum 0.99 (PyTorch momentum 0.01), Glorot-uniform
  conv/dense kernels with zero biases; SpatialDropout1D is ``nn.Dropout1d`` (drops whole channels).

TIMNet is the encoder (B, T, F) -> (B, C), so multimodal fusion can concatenate several encoders' outputs;
TIMNetClassifier adds the linear head that gives logits (softmax or sigmoid live in the loss).

Two layouts compute the same function with the same parameters (``TIMNet.layout``):

- ``"conv"`` (the default), the literal port: channels first (B, C, T), ``nn.Conv1d`` on a left-padded
  input, ``nn.BatchNorm1d``, ``nn.Dropout1d``. It is the reference the tests and ``bench timnet``'s plain loop
  use, what the stacked one-vs-rest models (``avemotion.stacked``, grouped convolutions) build on, and the
  faster form in float32 on CPU.
- ``"time_major"``: time first (B, T, C), each causal convolution one matmul of the k taps side by side,
  (B*T, k*C) @ (k*C, C), against the same Conv1d weight, and BatchNorm over the (B*T, C) rows. Under bfloat16
  autocast on a CPU with bf16 dot products it is the faster form (oneDNN's bf16 matmuls gain more than its
  bf16 convolutions), and it compiles (``compile_streams``). The spatial-dropout masks are drawn up front, in
  the order, shape and dtype the reference draws them, (B, C, 1) per convolution, forward stream first: the
  same generator gives the same masks in both layouts, and the stream computation holds no random op.

``avemotion.train`` picks the layout, precision and compilation per device (``train.fast_path``);
``python -m avemotion.bench timnet`` measures each against the plain reference.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# Keras BatchNormalization defaults. Keras' momentum weighs the old running value, PyTorch's the new batch.
BN_EPS = 1e-3
BN_MOMENTUM = 1 - 0.99
# Keras initializer 'uniform' = RandomUniform(-0.05, 0.05), used by the official WeightLayer.
SCALE_WEIGHT_INIT = 0.05


def _check_int(name: str, value: object, minimum: int) -> None:
    # bool is an int subclass; `channels=True` is a config mistake, not 1 channel.
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"TIMNetConfig.{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class TIMNetConfig:
    in_features: int  # F: feature dimension of one time step (24 log-mel bins, 1024 Wav2Vec2-L dims, ...)
    channels: int = 64  # C: filters of every conv (paper Table 3: 64, 32 for a few multiclass settings)
    scales: int = 7  # S: blocks per stream, dilations 2^0 ... 2^(S-1) (Table 3: 5, 7 or 8)
    kernel_size: int = 2  # of every dilated conv, as in the paper and the official code
    convs_per_block: int = 3  # L: the paper uses 3, the official TIM-Net 2
    dropout: float = 0.1  # spatial (whole-channel) dropout after every conv

    def __post_init__(self) -> None:
        _check_int("in_features", self.in_features, 1)
        _check_int("channels", self.channels, 1)
        _check_int("scales", self.scales, 1)
        # A kernel of 1 sees no past step: the dilations would do nothing and the model would not be temporal.
        _check_int("kernel_size", self.kernel_size, 2)
        _check_int("convs_per_block", self.convs_per_block, 1)
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool):
            raise ValueError(f"TIMNetConfig.dropout must be a number in [0, 1), got {self.dropout!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"TIMNetConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def dilations(self) -> tuple[int, ...]:
        return tuple(2**i for i in range(self.scales))


class CausalConv1d(nn.Conv1d):
    """Conv1d that sees only the present and the past: (k-1)*d zeros on the left, none on the right
    (Keras ``padding='causal'``), so output step t depends on inputs t - (k-1)*d ... t."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, groups: int = 1
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, groups=groups)
        self.left_pad = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left_pad, 0)))  # (B, C, T) -> (B, C', T)


class SharedDropout1d(nn.Module):
    """Spatial dropout of ``models`` stacked models, (B, K*C, T): one channel mask (B, C, 1) drawn exactly as
    ``nn.Dropout1d`` on (B, C, T) draws it, applied to every model. K models that each alone would have drawn
    the same mask (same seed, same batches: the one-vs-rest models of a fold) get that very mask here."""

    def __init__(self, p: float, models: int) -> None:
        super().__init__()
        self.p, self.models = p, models

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return h
        b, kc, t = h.shape
        # ATen's feature dropout: noise = empty(B, C, 1).bernoulli_(1 - p) / (1 - p); the same draw.
        noise = h.new_empty(b, kc // self.models, 1).bernoulli_(1 - self.p).div_(1 - self.p)
        return (h.view(b, self.models, -1, t) * noise.unsqueeze(1)).view(b, kc, t)


def dropout_noise(batch: int, channels: int, p: float, count: int, like: torch.Tensor) -> list[torch.Tensor]:
    """``count`` spatial-dropout masks (B, 1, C), scaled by 1 / (1 - p), drawn as ``count`` calls of
    ``nn.Dropout1d`` on (B, C, T) activations would draw them (ATen's feature dropout: ``empty(B, C, 1)
    .bernoulli_(1 - p) / (1 - p)`` in the activations' dtype, one after the other): the same generator state
    gives the same masks. The activations' dtype is that of ``like``, or the autocast type where autocast is
    on (a linear layer's output)."""
    dtype = like.dtype
    if torch.is_autocast_enabled(like.device.type):
        dtype = torch.get_autocast_dtype(like.device.type)
    return [
        torch.empty(batch, channels, 1, dtype=dtype, device=like.device).bernoulli_(1 - p).div_(1 - p)
        .transpose(1, 2)
        for _ in range(count)
    ]  # fmt: skip


def causal_conv_time_major(h: torch.Tensor, conv: CausalConv1d) -> torch.Tensor:
    """``conv`` (groups=1) on a time-major input, (B, T, C) -> (B, T, C'), as one matmul.

    Conv1d's output at t is sum_j W[:, :, j] @ x[t - (k-1-j)*d]: tap j reads the input shifted by (k-1-j)*d
    steps, zeros before the start (the causal padding). The k shifted copies side by side, (B, T, k*C), times
    the weight laid out tap after tap, (C', k*C), is that sum.
    """
    t = h.shape[1]
    k, d = conv.kernel_size[0], conv.dilation[0]
    taps = []
    for j in range(k):
        shift = min((k - 1 - j) * d, t)
        taps.append(F.pad(h[:, : t - shift], (0, 0, shift, 0)) if shift else h)  # (B, T, C)
    weight = conv.weight.permute(0, 2, 1).reshape(conv.out_channels, -1)  # (C', k*C): tap-major
    return F.linear(torch.cat(taps, dim=-1), weight, conv.bias)  # (B, T, k*C) -> (B, T, C')


def batch_norm_time_major(h: torch.Tensor, norm: nn.BatchNorm1d) -> torch.Tensor:
    """``norm`` on (B, T, C): BatchNorm1d over the B*T rows, with its running statistics updated (and its
    batch count) in training mode, exactly as ``norm`` on the (B, C, T) input."""
    b, t, c = h.shape
    if norm.training:
        norm.num_batches_tracked.add_(1)
    out = F.batch_norm(
        h.reshape(b * t, c), norm.running_mean, norm.running_var, norm.weight, norm.bias,
        norm.training, norm.momentum, norm.eps,
    )  # fmt: skip
    return out.view(b, t, c)


class TemporalAwareBlock(nn.Module):
    """L x (causal dilated conv -> BatchNorm -> ReLU -> spatial dropout), then out = x * sigmoid(h).

    ``models`` > 1 stacks that many independent blocks along the channels, (B, K*C, T): grouped convolutions
    (one group per model), per-channel BatchNorm (per model by construction) and one shared dropout mask
    (``SharedDropout1d``); ``avemotion.stacked`` trains the one-vs-rest models of a fold this way.
    """

    def __init__(self, cfg: TIMNetConfig, dilation: int, models: int = 1) -> None:
        super().__init__()
        c = cfg.channels * models
        self.convs = nn.ModuleList(
            CausalConv1d(c, c, cfg.kernel_size, dilation, groups=models) for _ in range(cfg.convs_per_block)
        )
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(c, eps=BN_EPS, momentum=BN_MOMENTUM) for _ in range(cfg.convs_per_block)
        )
        # Dropout1d zeros whole channels of (B, C, T), like SpatialDropout1D.
        self.dropout = nn.Dropout1d(cfg.dropout) if models == 1 else SharedDropout1d(cfg.dropout, models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x  # (B, C, T)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = self.dropout(F.relu(norm(conv(h))))  # (B, C, T)
        # The gate sees ReLU output, so sigmoid(h) lies in [0.5, 1): as in the official code, the block can
        # damp its input at most by half. No residual 1x1 conv: the channel counts always match (see top).
        return x * torch.sigmoid(h)  # (B, C, T)

    def forward_time_major(self, x: torch.Tensor, noise: list[torch.Tensor] | None) -> torch.Tensor:
        """The same block on (B, T, C), one model; ``noise`` holds its convolutions' dropout masks (B, 1, C)
        in order (``dropout_noise``), None when dropout is off (eval mode, p = 0)."""
        h = x  # (B, T, C)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            h = F.relu(batch_norm_time_major(causal_conv_time_major(h, conv), norm))  # (B, T, C)
            if noise is not None:
                h = h * noise[i]
        return x * torch.sigmoid(h)  # (B, T, C)


class Stream(nn.Module):
    """One direction of TIM-Net: a 1x1 conv F -> C, then the chain of blocks with growing dilation.

    With ``models`` > 1, K models that read the same input: the 1x1 conv is F -> K*C (the K projections'
    weights concatenated, one wide matmul), then stacked blocks (``TemporalAwareBlock``)."""

    def __init__(self, cfg: TIMNetConfig, models: int = 1) -> None:
        super().__init__()
        self.proj = nn.Conv1d(cfg.in_features, cfg.channels * models, kernel_size=1)
        self.blocks = nn.ModuleList(TemporalAwareBlock(cfg, d, models) for d in cfg.dilations)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.proj(x)  # (B, F, T) -> (B, C, T)
        outputs = []
        for block in self.blocks:
            h = block(h)  # block i takes block i-1's output
            outputs.append(h)  # (B, C, T), one per scale
        return outputs

    def forward_time_major(self, x: torch.Tensor, noise: list[torch.Tensor] | None) -> list[torch.Tensor]:
        """(B, T, F) -> every scale's output (B, T, C); ``noise``: the stream's masks, block after block."""
        proj = self.proj
        h = F.linear(x, proj.weight[:, :, 0], proj.bias)  # the 1x1 conv: (B, T, F) -> (B, T, C)
        convs = len(self.blocks[0].convs)
        outputs = []
        for i, block in enumerate(self.blocks):
            h = block.forward_time_major(h, None if noise is None else noise[i * convs : (i + 1) * convs])
            outputs.append(h)
        return outputs


def _keras_init(module: nn.Module) -> None:
    # Keras Conv1D/Dense default: Glorot-uniform kernel, zero bias (PyTorch's default is Kaiming-uniform and a
    # random bias). For Conv1d, PyTorch's fans are in*k and out*k, the same as Keras'.
    if isinstance(module, (nn.Conv1d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class TIMNet(nn.Module):
    """The TIM-Net encoder: (B, T, F) feature sequences -> (B, C) fused multi-scale vector."""

    LAYOUTS = ("time_major", "conv")

    def __init__(self, cfg: TIMNetConfig, layout: str = "conv") -> None:
        super().__init__()
        if layout not in self.LAYOUTS:
            raise ValueError(f"TIMNet layout must be one of {self.LAYOUTS}, got {layout!r}")
        self.cfg = cfg
        self.layout = layout  # how forward computes, not what: both give the same function (see top)
        self._compiled: tuple[int, Callable] | None = None  # (batch, compiled streams): compile_streams
        self.forward_stream = Stream(cfg)
        self.backward_stream = Stream(cfg)  # own weights, as Keras builds new layers per call
        self.scale_weights = nn.Parameter(torch.empty(cfg.scales))  # (S,) dynamic fusion, no softmax
        self.apply(_keras_init)
        nn.init.uniform_(self.scale_weights, -SCALE_WEIGHT_INIT, SCALE_WEIGHT_INIT)

    @property
    def out_features(self) -> int:
        return self.cfg.channels

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[-1] != self.cfg.in_features:
            raise ValueError(
                f"TIMNet expects input of shape (batch, time, {self.cfg.in_features} features), got "
                f"{tuple(x.shape)}; check the feature's dims against TIMNetConfig.in_features"
            )
        t, largest = x.shape[1], self.cfg.dilations[-1]
        if largest >= t:
            # With dilation >= T every conv tap but the current one falls on padding: the scale would see
            # no past at all. This is why the paper uses 8 scales for 146 frames (2^7 = 128 < 146).
            raise ValueError(
                f"sequence length T={t} is too short for TIMNetConfig.scales={self.cfg.scales}: the largest "
                f"dilation 2**{self.cfg.scales - 1}={largest} must be < T; lower `scales` or use longer "
                f"sequences"
            )

    def streams(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every scale's output of both streams, each (B, C, T). The backward stream's are in its own,
        reversed time: index s there is original time T-1-s."""
        fwd, bwd = self._streams(x)
        if self.layout == "time_major":  # (B, T, C) -> (B, C, T) views
            fwd, bwd = [h.transpose(1, 2) for h in fwd], [h.transpose(1, 2) for h in bwd]
        return fwd, bwd

    def _streams(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Both streams' outputs in the model's layout: (B, T, C) time-major, (B, C, T) conv."""
        self._check_input(x)
        if self.layout == "conv":
            x = x.transpose(1, 2)  # (B, T, F) -> (B, F, T), channels first for Conv1d
            return self.forward_stream(x), self.backward_stream(x.flip(-1))
        noise = None
        if self.training and self.cfg.dropout > 0:
            count = 2 * self.cfg.scales * self.cfg.convs_per_block
            noise = dropout_noise(x.shape[0], self.cfg.channels, self.cfg.dropout, count, x)
        compiled = self._compiled
        if compiled is not None and self.training and x.shape[0] == compiled[0]:
            return compiled[1](x, noise)
        return self._time_major_streams(x, noise)

    def _time_major_streams(
        self, x: torch.Tensor, noise: list[torch.Tensor] | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Both streams on (B, T, F), given the dropout masks: no random op, so it compiles whole."""
        per_stream = self.cfg.scales * self.cfg.convs_per_block
        fwd_noise, bwd_noise = (None, None) if noise is None else (noise[:per_stream], noise[per_stream:])
        return (
            self.forward_stream.forward_time_major(x, fwd_noise),
            self.backward_stream.forward_time_major(x.flip(1), bwd_noise),
        )

    def compile_streams(self, batch: int) -> None:
        """From now on, training batches of ``batch`` clips run both streams through ``torch.compile``
        (time-major layout): one compiled graph for the job's full batches; a last, smaller batch and
        evaluation stay eager (no second compile). The dropout masks are still drawn eagerly, so a
        compiled model draws exactly the masks an eager one draws."""
        if self.layout != "time_major":
            raise ValueError("compile_streams needs the time_major layout")
        self._compiled = (batch, torch.compile(self._time_major_streams, dynamic=False))

    def scale_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, S, C): per scale, the time average of forward + backward output."""
        fwd, bwd = self._streams(x)
        time = 1 if self.layout == "time_major" else -1
        # No re-flip of bwd before the add (official code); harmless, the mean over time ignores order.
        return torch.stack([(f + b).mean(dim=time) for f, b in zip(fwd, bwd, strict=True)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale_features(x)  # (B, S, C)
        return torch.einsum("bsc,s->bc", s, self.scale_weights)  # (B, C)


class TIMNetClassifier(nn.Module):
    """TIM-Net encoder + linear head: (B, T, F) -> logits (B, n_outputs). n_outputs = 1 for the binary
    one-vs-rest task (sigmoid in the loss), 8 for the 8-class task (softmax in the loss)."""

    def __init__(self, cfg: TIMNetConfig, n_outputs: int, layout: str = "conv") -> None:
        super().__init__()
        if not isinstance(n_outputs, int) or isinstance(n_outputs, bool) or n_outputs < 1:
            raise ValueError(f"n_outputs must be an integer >= 1, got {n_outputs!r}")
        self.encoder = TIMNet(cfg, layout)
        self.head = nn.Linear(cfg.channels, n_outputs)
        _keras_init(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))  # (B, T, F) -> (B, C) -> (B, n_outputs)


class BackboneClassifier(nn.Module):
    """A pretrained backbone (``avemotion.finetune``) under a TIM-Net classifier, trained end to end: raw inputs
    (patches, audio) -> per-time-step features (B, T, D) -> logits."""

    def __init__(self, backbone: nn.Module, timnet: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.timnet = timnet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.timnet(self.backbone(x))  # (B, ...) -> (B, T, D) -> (B, n_outputs)


class FusionClassifier(nn.Module):
    """Multimodal fusion (the paper's Fig. 1): one TIM-Net per modality, each with its own configuration (its
    feature dims and scales), their fused vectors concatenated, then a 3-layer perceptron to the logits; all
    trained end to end.

        x_1 (B, T_1, F_1) ── TIMNet_1 ── (B, C_1) ─┐
        ...                                          ├─ concat (B, sum C) ── Linear ReLU Dropout ── Linear ReLU
        x_m (B, T_m, F_m) ── TIMNet_m ── (B, C_m) ─┘       Dropout ── Linear ── logits (B, n_outputs)

    ``hidden`` holds the widths of the two hidden layers (the paper says "an MLP with 3 layers" and no widths:
    config ``model.fusion.hidden``). The branches' sequence lengths may differ (88 face frames, 146 Wav2Vec2
    frames): each TIM-Net averages over its own time axis.
    """

    def __init__(
        self,
        branches: list[TIMNetConfig],
        hidden: tuple[int, int],
        n_outputs: int,
        dropout: float,
        layout: str = "conv",
    ) -> None:
        super().__init__()
        if len(branches) < 2:
            raise ValueError(f"fusion needs at least 2 branches, got {len(branches)}")
        if len(hidden) != 2:
            raise ValueError(f"the fusion MLP has 3 layers: 2 hidden widths, got {list(hidden)}")
        for width in hidden:
            _check_int("fusion hidden width", width, 1)
        _check_int("n_outputs", n_outputs, 1)
        if not 0 <= dropout < 1:
            raise ValueError(f"fusion dropout must be in [0, 1), got {dropout!r}")
        self.encoders = nn.ModuleList(TIMNet(cfg, layout) for cfg in branches)
        widths = [sum(cfg.channels for cfg in branches), *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(widths[-1], n_outputs))
        self.head = nn.Sequential(*layers)
        self.head.apply(_keras_init)

    def forward(self, inputs: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        if len(inputs) != len(self.encoders):
            raise ValueError(f"expected {len(self.encoders)} modality inputs, got {len(inputs)}")
        fused = torch.cat([enc(x) for enc, x in zip(self.encoders, inputs, strict=True)], dim=1)  # (B, sum C)
        return self.head(fused)  # (B, n_outputs)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters. BatchNorm running mean/variance are buffers, not parameters, so they are never
    counted (Keras' summary lists them as "non-trainable params")."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def timnet_parameter_count(cfg: TIMNetConfig, n_outputs: int | None = None) -> int:
    """Parameters of TIMNet (n_outputs None) or TIMNetClassifier(cfg, n_outputs), by formula.

    With F = in_features, C = channels, S = scales, k = kernel_size, L = convs_per_block, n = n_outputs:

    - input 1x1 conv, per stream:     F*C weights + C biases                    = F*C + C
    - one causal conv in a block:     C*C*k weights + C biases                  = k*C^2 + C
    - its BatchNorm:                  C scales (gamma) + C shifts (beta)        = 2*C
    - one block:                      L * (k*C^2 + C + 2*C)                     = L*(k*C^2 + 3*C)
    - one stream:                     F*C + C + S * L*(k*C^2 + 3*C)
    - two streams, separate weights:  2 * (F*C + C + S*L*(k*C^2 + 3*C))
    - scale weights:                  S
    - head:                           C*n weights + n biases                    = C*n + n

    e.g. log-mel F=24, C=64, S=7, k=2, L=3, n=8: 2*(1600 + 7*25152) + 7 + 520 = 355,855.
    """
    f, c, s, k, convs = cfg.in_features, cfg.channels, cfg.scales, cfg.kernel_size, cfg.convs_per_block
    block = convs * (k * c * c + 3 * c)
    stream = f * c + c + s * block
    total = 2 * stream + s
    if n_outputs is not None:
        total += c * n_outputs + n_outputs
    return total
