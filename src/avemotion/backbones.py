"""The pretrained backbones, each from its own ecosystem: ResNet from torchvision, Wav2Vec2 from transformers.

The paper ("The Role of Facial and Speech Features in Emotion Classification") embeds face, eye and mouth
patches with an ImageNet-pretrained ResNet (512-d per frame) and speech with Wav2Vec2 "base" (768-d) and
"large" (1024-d), each fine-tuned with TIM-Net on top. The checkpoints:

- ResNet: ``torchvision.models.resnet18`` with ``ResNet18_Weights.IMAGENET1K_V1`` (the original torchvision
  ImageNet weights, file ``resnet18-f37072fd.pth``), the weights the paper's quoted ImageNet normalisation
  (mean 0.485/0.456/0.406, std 0.229/0.224/0.225) comes from. The classifier ``fc`` is replaced by
  ``nn.Identity``, so the model maps (N, 3, H, W) ImageNet-normalised images to (N, 512). Weight enums are
  named explicitly: ``DEFAULT`` is refused, since it moves between torchvision releases.
- Wav2Vec2: ``facebook/wav2vec2-base`` and ``facebook/wav2vec2-large`` from the Hugging Face Hub, both
  self-supervised on LibriSpeech 960 h without ASR fine-tuning (the paper names only "base and large").
  They are loaded as ``transformers.Wav2Vec2Model`` (the pretraining heads, quantizer and projections, are
  dropped); the features are ``last_hidden_state``, (N, 146, hidden_size) for the 140,800-sample window.

No silent random weights: with ``init: pretrained`` a missing, unreadable or incomplete checkpoint is an
error (:class:`BackboneError`), never a fall-back to random initialisation; this includes Wav2Vec2 weights
that transformers would otherwise "newly initialise" with only a log warning. Random weights come only from
an explicit ``init: random``, which is for the demo and the tests (with a tiny ``config`` for Wav2Vec2).

Decisions, and why:

- ``freeze_feature_encoder`` (default true): the CNN waveform encoder stays frozen while fine-tuning, as in
  the Hugging Face Wav2Vec2 fine-tuning recipes and fairseq's ``feature_grad_mult 0.0``.
- ``mask_time_prob`` (default 0.05, transformers' ``Wav2Vec2Config`` default; it overrides the value in the
  checkpoint's config.json): in train mode Wav2Vec2Model replaces spans of 10 frames by its learned mask
  embedding (SpecAugment along time). For 146 frames, 0.05 gives ``mask_time_min_masks`` = 2 spans, possibly
  overlapping: up to 20 frames of every clip. It is inactive in eval mode, so feature extraction is
  unaffected. The paper does not say; we keep what fine-tuning with transformers does by default. Set 0.0
  to fine-tune without it.
- Speech input (:func:`speech_input`): the 48 kHz window is resampled to 16 kHz with torchaudio (140,800 ->
  46,934 samples) and z-normalised per utterance exactly as ``Wav2Vec2FeatureExtractor(do_normalize=True)``
  does, ``(x - mean) / sqrt(var + 1e-7)`` (the checkpoints' ``preprocessor_config.json``). For these two
  group-norm checkpoints this changes little: the first conv layer's GroupNorm already removes each
  channel's gain and offset.
- Both builders return the model in eval mode (as ``from_pretrained`` does); call ``.train()`` to fine-tune.
  Both set ``model.out_features`` (512 for resnet18/34, ``config.hidden_size`` for Wav2Vec2).

Weights are fetched once, on a machine with internet, by :func:`prefetch`, into the configured ``path``;
cluster jobs then load them offline. The ResNet ``path`` is the state dict file when it ends in ``.pth`` or
``.pt``, else a folder holding ``<arch>-<weights>.pth``; the Wav2Vec2 ``path`` is the snapshot folder
(config.json + weights). A JSON record beside the weights (``<weights file>.json`` for ResNet,
``<folder>/prefetch.json`` for Wav2Vec2) says what was fetched (URL or repository id, revision asked, commit
resolved) and every file's sha256 and size; a later prefetch with a matching, verified record does nothing.

CLI::

    python -m avemotion.backbones prefetch --name resnet --params '<JSON of backbones.resnet>' [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
import torchaudio
import torchvision

from avemotion import paper
from avemotion.io import atomic_path, atomic_write_text, sha256_file

if TYPE_CHECKING:
    from transformers import Wav2Vec2Model

INITS = ("pretrained", "random")
STATE_DICT_SUFFIXES = (".pth", ".pt")  # a ResNet path with another (or no) suffix is a folder
# The ResNet family: torchvision builders whose classifier is a single `fc` Linear.
RESNET_PREFIXES = ("resnet", "resnext", "wide_resnet")
# What a Wav2Vec2 snapshot needs; weights in either format transformers reads.
WAV2VEC2_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WAV2VEC2_PATTERNS = ["config.json", "*.safetensors", "pytorch_model.bin", "preprocessor_config.json"]
RECORD_NAME = "prefetch.json"  # a Wav2Vec2 snapshot's record, inside its directory
NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor's variance floor
_HASH_PREFIX_RE = re.compile(r"-([0-9a-f]{8,})\.[A-Za-z0-9]+$")  # resnet18-f37072fd.pth -> f37072fd


class BackboneError(RuntimeError):
    """A backbone config, checkpoint or download the workflow cannot use; the message names the config key,
    the path and what to do."""


def _prefetch_hint(key: str) -> str:
    name = key.rsplit(".", 1)[-1]
    return (
        f"run `make weights` or `python -m avemotion.backbones prefetch --name {name} --params "
        f"'<JSON of {key}>'` on a machine with internet (and copy the result here), or set {key}.path to "
        f"where the weights are"
    )


# --------------------------------------------------------------------------------------------------- config


def _fail(key: str, name: str, message: str) -> BackboneError:
    return BackboneError(f"{key}.{name}: {message}")


def _check_str(key: str, name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _fail(key, name, f"must be a non-empty string, got {value!r}")


def _check_init(key: str, value: object) -> None:
    if value not in INITS:
        raise _fail(key, "init", f"must be one of {list(INITS)}, got {value!r}")


def _as_path(key: str, value: object) -> Path:
    if isinstance(value, Path):
        return value
    _check_str(key, "path", value)
    return Path(value)  # relative paths are relative to the working directory (the workflow's root)


def _parse(cls: type, d: object, key: str) -> Any:
    """Build ``cls`` from a config mapping: unknown and missing fields are errors naming the key."""
    if not isinstance(d, Mapping):
        raise BackboneError(f"{key}: expected a mapping of settings, got {type(d).__name__}")
    allowed = {f.name for f in fields(cls)} - {"key"}
    unknown = sorted(str(k) for k in set(d) - allowed)
    if unknown:
        raise _fail(key, unknown[0], f"unknown setting; known settings are {sorted(allowed)}")
    for f in fields(cls):
        if f.name != "key" and f.default is MISSING and f.default_factory is MISSING and f.name not in d:
            raise _fail(key, f.name, "missing")
    return cls(**d, key=key)


@dataclass(frozen=True)
class ResNetConfig:
    """``backbones.resnet``: a torchvision ResNet and its weights."""

    arch: str  # torchvision.models builder name, e.g. "resnet18"
    weights: str  # the builder's weights enum member, e.g. "IMAGENET1K_V1" (ResNet18_Weights.IMAGENET1K_V1)
    path: Path  # the state dict (.pth/.pt file) or a folder holding <arch>-<weights>.pth: see weights_file
    init: str  # "pretrained" (load the weights file) or "random" (demo/tests only)
    key: str = "backbones.resnet"  # where this config lives, for error messages
    # Blocks per stage instead of the arch's own (e.g. [1, 1, 1, 1]: a tiny ResNet-10 of the same block type
    # and widths), only with init random: the demo's tiny backbone. None = the arch as published.
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        _check_str(self.key, "arch", self.arch)
        if self.layers is not None:
            layers = self.layers
            if (
                not isinstance(layers, list | tuple)
                or len(layers) != 4
                or not all(type(n) is int and n >= 1 for n in layers)
            ):
                raise _fail(self.key, "layers", f"must be 4 integers >= 1 (blocks per stage), got {layers!r}")
            if self.init != "random":
                raise _fail(
                    self.key, "layers", "applies only with init: random (pretrained weights fix the layers)"
                )
            object.__setattr__(self, "layers", tuple(layers))
        known = torchvision.models.list_models(module=torchvision.models)
        if self.arch not in known or not self.arch.startswith(RESNET_PREFIXES):
            resnets = [m for m in known if m.startswith(RESNET_PREFIXES)]
            raise _fail(self.key, "arch", f"{self.arch!r} is not a torchvision ResNet; one of {resnets}")
        _check_str(self.key, "weights", self.weights)
        members = [m for m in torchvision.models.get_model_weights(self.arch).__members__ if m != "DEFAULT"]
        if self.weights not in members:
            raise _fail(
                self.key,
                "weights",
                f"{self.weights!r} is not a weights name of {self.arch}; one of {members} (DEFAULT is refused: "
                "it changes between torchvision releases)",
            )
        object.__setattr__(self, "path", _as_path(self.key, self.path))
        _check_init(self.key, self.init)

    @classmethod
    def from_dict(cls, d: Mapping, key: str = "backbones.resnet") -> ResNetConfig:
        return _parse(cls, d, key)

    @property
    def torchvision_weights(self) -> torchvision.models.WeightsEnum:
        return torchvision.models.get_model_weights(self.arch)[self.weights]

    def weights_file(self, path: Path | str | None = None) -> Path:
        """The state dict at ``path`` (default: ``self.path``): the path itself when it names a ``.pth`` or
        ``.pt`` file, else ``<path>/<arch>-<weights>.pth`` (a folder, as a Snakemake ``directory()`` output)."""
        path = Path(path) if path is not None else self.path
        return path if path.suffix in STATE_DICT_SUFFIXES else path / f"{self.arch}-{self.weights}.pth"


@dataclass(frozen=True)
class Wav2Vec2BackboneConfig:
    """``backbones.wav2vec2_base`` / ``backbones.wav2vec2_large``: a Hugging Face Wav2Vec2 checkpoint."""

    id: str  # Hub repository, e.g. "facebook/wav2vec2-base"
    revision: str  # branch, tag or commit asked for at prefetch time
    path: Path  # the local snapshot directory (config.json + weights) written by prefetch
    init: str  # "pretrained" (load `path`) or "random" (demo/tests only, built from `config`)
    # Where this config lives, for messages; pass "backbones.wav2vec2_base" or "backbones.wav2vec2_large".
    key: str = "backbones.wav2vec2"
    freeze_feature_encoder: bool = True  # keep the CNN waveform encoder frozen (HF fine-tuning practice)
    mask_time_prob: float = 0.05  # SpecAugment time masking in train mode (transformers' default)
    config: dict = field(default_factory=dict)  # Wav2Vec2Config overrides, only with init "random"

    def __post_init__(self) -> None:
        key = self.key
        _check_str(key, "id", self.id)
        if any(c.isspace() for c in self.id):
            raise _fail(key, "id", f"{self.id!r} is not a Hub repository id (owner/name)")
        _check_str(key, "revision", self.revision)
        object.__setattr__(self, "path", _as_path(key, self.path))
        _check_init(key, self.init)
        if not isinstance(self.freeze_feature_encoder, bool):
            raise _fail(
                key, "freeze_feature_encoder", f"must be true or false, got {self.freeze_feature_encoder!r}"
            )
        p = self.mask_time_prob
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise _fail(key, "mask_time_prob", f"must be a number in [0, 1], got {p!r}")
        object.__setattr__(self, "mask_time_prob", float(p))
        if not isinstance(self.config, Mapping):
            raise _fail(key, "config", f"must be a mapping of Wav2Vec2Config settings, got {self.config!r}")
        object.__setattr__(self, "config", dict(self.config))
        if self.config:
            self._check_overrides()

    def _check_overrides(self) -> None:
        from transformers import Wav2Vec2Config

        key = f"{self.key}.config"
        if self.init != "random":
            raise BackboneError(
                f"{key}: overrides apply only with {self.key}.init: random (a pretrained model's architecture "
                f"is its checkpoint's config.json); empty it, or set init to random"
            )
        if self.config.get("mask_time_prob", self.mask_time_prob) != self.mask_time_prob:
            raise _fail(
                key,
                "mask_time_prob",
                f"{self.config['mask_time_prob']!r} contradicts {self.key}.mask_time_prob "
                f"{self.mask_time_prob!r}; set it there only",
            )
        if "model_type" in self.config:
            # A whole saved config (Wav2Vec2Config.to_dict(), e.g. to rebuild a fine-tuned model): written by
            # transformers, so legacy keys of old checkpoints are expected and not typos.
            if self.config["model_type"] != "wav2vec2":
                raise _fail(key, "model_type", f"{self.config['model_type']!r} is not a Wav2Vec2 config")
        else:
            known = set(Wav2Vec2Config().to_dict())
            for name in self.config:
                if name not in known:  # Wav2Vec2Config would accept and ignore a misspelt name
                    raise _fail(key, str(name), "not a Wav2Vec2Config setting")
        try:
            Wav2Vec2Config(**self.config)
        except Exception as e:  # transformers' validators raise several types
            raise BackboneError(f"{key}: not a valid Wav2Vec2Config ({e})") from None

    @classmethod
    def from_dict(cls, d: Mapping, key: str = "backbones.wav2vec2") -> Wav2Vec2BackboneConfig:
        return _parse(cls, d, key)


BackboneConfig = ResNetConfig | Wav2Vec2BackboneConfig
BACKBONES: dict[str, type] = {
    "resnet": ResNetConfig,
    "wav2vec2_base": Wav2Vec2BackboneConfig,
    "wav2vec2_large": Wav2Vec2BackboneConfig,
}


def parse_config(name: str, d: Mapping) -> BackboneConfig:
    """The typed config of ``backbones.<name>`` (name: resnet, wav2vec2_base or wav2vec2_large)."""
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}")
    return BACKBONES[name].from_dict(d, key=f"backbones.{name}")


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """:func:`build_resnet` or :func:`build_wav2vec2`, by the config's type."""
    return build_resnet(cfg) if isinstance(cfg, ResNetConfig) else build_wav2vec2(cfg)


# ----------------------------------------------------------------------------------------------------- ResNet


def _load_resnet_trunk(cfg: ResNetConfig) -> dict[str, torch.Tensor]:
    path = cfg.weights_file()
    if not path.is_file():
        raise BackboneError(
            f"{cfg.key}.path: ResNet weights {path} not found ({cfg.key}.init is pretrained); "
            f"{_prefetch_hint(cfg.key)}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and EOF errors of a truncated or foreign file
        raise BackboneError(
            f"{cfg.key}.path: {path} is not a readable PyTorch state dict ({type(e).__name__}: {e}); delete it "
            f"and {_prefetch_hint(cfg.key)}"
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise BackboneError(f"{cfg.key}.path: {path} holds a {type(state).__name__}, not a state dict")
    # The ImageNet classifier is not part of the backbone.
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def build_resnet(cfg: ResNetConfig) -> nn.Module:
    """The ResNet trunk: (N, 3, H, W) ImageNet-normalised float -> (N, out_features), in eval mode.

    With ``init`` pretrained every trunk tensor comes from ``cfg.weights_file()`` (the ImageNet file's
    ``fc.*`` are dropped); a missing file, a missing or extra key, or a shape mismatch is a BackboneError.
    """
    model = torchvision.models.get_model(cfg.arch, weights=None)
    if cfg.layers is not None:  # the same block type and widths, fewer blocks (random init only)
        model = torchvision.models.resnet.ResNet(type(model.layer1[0]), list(cfg.layers))
    out_features = model.fc.in_features  # 512 for resnet18/34, 2048 for resnet50 and up
    model.fc = nn.Identity()  # (N, C, H, W) -> pooled (N, out_features), no ImageNet logits
    if cfg.init == "pretrained":
        state = _load_resnet_trunk(cfg)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatch, e.g. resnet50 weights for a resnet18
            raise BackboneError(
                f"{cfg.key}.path: {cfg.weights_file()} does not fit {cfg.arch} ({e}); check {cfg.key}.arch"
            ) from None
        if missing or unexpected:
            raise BackboneError(
                f"{cfg.key}.path: {cfg.weights_file()} is not a complete {cfg.arch} state dict (missing {sorted(missing)[:5]}"
                f"{'...' if len(missing) > 5 else ''}, unexpected {sorted(unexpected)[:5]}"
                f"{'...' if len(unexpected) > 5 else ''}); delete it and {_prefetch_hint(cfg.key)}"
            )
    model.out_features = out_features
    return model.eval()


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (..., H, W, 3) -> float32 (..., 3, H, W): scaled to [0, 1], then (x - mean) / std per
    channel with torchvision's ImageNet mean/std (paper.IMAGENET_MEAN/STD). Stays on x's device."""
    if x.dtype != torch.uint8 or x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB images of shape (..., H, W, 3), got {x.dtype} {tuple(x.shape)}")
    x = x.to(torch.float32).div(255.0).movedim(-1, -3)  # (..., H, W, 3) -> (..., 3, H, W)
    mean = torch.tensor(paper.IMAGENET_MEAN, dtype=torch.float32, device=x.device).view(3, 1, 1)
    std = torch.tensor(paper.IMAGENET_STD, dtype=torch.float32, device=x.device).view(3, 1, 1)
    return (x - mean) / std


# ---------------------------------------------------------------------------------------------------- Wav2Vec2


def build_wav2vec2(cfg: Wav2Vec2BackboneConfig) -> Wav2Vec2Model:
    """A ``transformers.Wav2Vec2Model`` (in eval mode), from the local snapshot ``cfg.path`` (init pretrained)
    or from ``Wav2Vec2Config(**cfg.config)`` (init random); ``out_features`` = ``config.hidden_size``."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    if cfg.init == "random":
        model = Wav2Vec2Model(Wav2Vec2Config(**{**cfg.config, "mask_time_prob": cfg.mask_time_prob}))
    else:
        path, key = cfg.path, cfg.key
        # Checked here: transformers would read a missing directory as a Hub id, and a directory without
        # config.json with the default (base-sized) architecture.
        if not path.is_dir():
            raise BackboneError(
                f"{key}.path: Wav2Vec2 snapshot directory {path} not found ({key}.init is pretrained); "
                f"{_prefetch_hint(key)}"
            )
        have = [n for n in WAV2VEC2_WEIGHT_FILES if (path / n).is_file()]
        if not (path / "config.json").is_file() or not have:
            raise BackboneError(
                f"{key}.path: {path} is not a complete Wav2Vec2 snapshot (it needs config.json and one of "
                f"{list(WAV2VEC2_WEIGHT_FILES)}); delete it and {_prefetch_hint(key)}"
            )
        try:
            model, info = Wav2Vec2Model.from_pretrained(
                path, local_files_only=True, output_loading_info=True, mask_time_prob=cfg.mask_time_prob
            )
        except Exception as e:  # OSError, corrupt safetensors/pickle, size mismatch: types vary by cause
            raise BackboneError(
                f"{key}.path: cannot load the Wav2Vec2 snapshot {path} ({type(e).__name__}: {e}); delete it "
                f"and {_prefetch_hint(key)}"
            ) from None
        missing = sorted(info["missing_keys"]) + sorted(str(m) for m in info.get("mismatched_keys", ()))
        if missing:  # transformers would initialise these randomly with only a warning
            raise BackboneError(
                f"{key}.path: {path} lacks weights of Wav2Vec2Model ({missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}); refusing random weights. Delete it and "
                f"{_prefetch_hint(key)}"
            )
    if cfg.freeze_feature_encoder:
        model.freeze_feature_encoder()  # the CNN on the raw waveform: requires_grad False
    model.out_features = model.config.hidden_size
    return model.eval()


def resampled_length(n_samples: int, orig_rate: int, new_rate: int) -> int:
    """Samples after ``torchaudio.functional.resample``: ceil(n * new / orig), in exact integer arithmetic."""
    g = math.gcd(orig_rate, new_rate)
    return -(-n_samples * (new_rate // g) // (orig_rate // g))


def speech_input(
    audio: np.ndarray | torch.Tensor,
    sample_rate: int = paper.SAMPLE_RATE,
    target_rate: int = paper.WAV2VEC2_SAMPLE_RATE,
) -> torch.Tensor:
    """Mono float audio (N, L) at ``sample_rate`` -> Wav2Vec2 input (N, L') float32 at 16 kHz.

    Resampled with torchaudio (sinc interpolation, its defaults), then z-normalised per utterance as
    ``Wav2Vec2FeatureExtractor(do_normalize=True)``: (x - mean) / sqrt(var + 1e-7), so silence stays finite
    (zeros). The paper's window: (N, 140,800) at 48 kHz -> (N, 46,934). Stays on the input's device.
    """
    x = torch.as_tensor(audio)
    if x.ndim != 2 or x.shape[-1] == 0 or not x.is_floating_point():
        raise ValueError(f"expected float mono audio of shape (N, samples), got {x.dtype} {tuple(x.shape)}")
    x = torchaudio.functional.resample(x.to(torch.float32), sample_rate, target_rate)  # (N, L')
    mean = x.mean(dim=-1, keepdim=True)  # (N, 1)
    var = x.var(dim=-1, unbiased=False, keepdim=True)  # (N, 1), numpy's var as in the feature extractor
    return (x - mean) / torch.sqrt(var + NORM_EPS)


def wav2vec2_frames(n_samples_16k: int, model_config: Any = None) -> int:
    """Frames out of Wav2Vec2's conv encoder for ``n_samples_16k`` input samples: per conv layer
    L <- floor((L - kernel) / stride) + 1 (no padding). ``model_config``: a Wav2Vec2Config (default: the
    base/large conv stack, kernels 10,3,3,3,3,2,2 and strides 5,2,2,2,2,2,2). 46,934 samples -> 146."""
    if model_config is None:
        from transformers import Wav2Vec2Config

        model_config = Wav2Vec2Config()
    n = n_samples_16k
    for kernel, stride in zip(model_config.conv_kernel, model_config.conv_stride, strict=True):
        n = (n - kernel) // stride + 1
    if n < 1:
        raise ValueError(f"{n_samples_16k} samples are too few for one Wav2Vec2 frame")
    return n


# --------------------------------------------------------------------------------------------------- prefetch


def _file_entry(path: Path, name: str) -> dict:
    return {"name": name, "sha256": sha256_file(path), "size": path.stat().st_size}


def destination(cfg: BackboneConfig, out: Path | str | None = None) -> Path:
    """What :func:`prefetch` writes for ``cfg`` at ``out`` (default: its ``path``): the ResNet state dict
    file (see :meth:`ResNetConfig.weights_file`) or the Wav2Vec2 snapshot folder."""
    if isinstance(cfg, ResNetConfig):
        return cfg.weights_file(out)
    return Path(out) if out is not None else cfg.path


def record_path(cfg: BackboneConfig, out: Path | str | None = None) -> Path:
    """Where :func:`prefetch` writes the record: ``<weights file>.json`` (ResNet), ``<folder>/prefetch.json``
    (Wav2Vec2)."""
    dest = destination(cfg, out)
    if isinstance(cfg, ResNetConfig):
        return dest.with_name(dest.name + ".json")
    return dest / RECORD_NAME


@contextlib.contextmanager
def _parent_folders(dest: Path) -> Iterator[None]:
    """Create ``dest``'s missing parent folders; if the body fails, remove those again (when empty)."""
    created, folder = [], dest.parent
    while not folder.exists():
        created.append(folder)  # deepest first
        folder = folder.parent
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _recorded(record_file: Path, request: dict, root: Path) -> dict | None:
    """The record if it answers ``request`` and every file it lists is there with its size and sha256."""
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
        if any(record.get(k) != v for k, v in request.items()):
            return None
        for entry in record["files"]:
            path = root / entry["name"]
            if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return record


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _write_record(path: Path, record: dict) -> None:
    atomic_write_text(path, json.dumps(record, sort_keys=True, indent=2) + "\n")  # no timestamps


def _prefetch_resnet(cfg: ResNetConfig, dest: Path, progress: bool) -> dict:
    weights = cfg.torchvision_weights
    url = weights.url
    m = _HASH_PREFIX_RE.search(url.rsplit("/", 1)[-1])
    if m is None:  # every torchvision ResNet file embeds it; without it the download could not be checked
        raise BackboneError(
            f"{cfg.key}.weights: {url} carries no sha256 prefix in its name; cannot verify it"
        )
    request = {
        "source": "torchvision",
        "arch": cfg.arch,
        "weights": f"{type(weights).__name__}.{weights.name}",
        "url": url,
    }
    rec_file = dest.with_name(dest.name + ".json")
    if (record := _recorded(rec_file, request, dest.parent)) is not None:
        return record
    rec_file.unlink(missing_ok=True)  # a record must never describe a file that is being replaced
    with _parent_folders(dest), atomic_path(dest) as tmp:
        try:
            # torch.hub checks the sha256 prefix and removes its own partial file on any error.
            torch.hub.download_url_to_file(url, str(tmp), hash_prefix=m[1], progress=progress)
        except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError; hash mismatch RuntimeError
            raise BackboneError(
                f"{cfg.key}: cannot download {url} ({type(e).__name__}: {e}); nothing was written to {dest}. "
                "Check the connection, or fetch it on a machine with internet and copy it here"
            ) from None
        files = [_file_entry(tmp, dest.name)]
    record = {**request, "hash_prefix": m[1], "files": files}
    _write_record(rec_file, record)
    return record


def _allow_patterns(repo_files: Sequence[str]) -> list[str]:
    # Repositories may hold the weights twice (pytorch_model.bin and a converted model.safetensors):
    # fetch only the safetensors then, not both (1.2 GB each for large).
    if any(f.endswith(".safetensors") for f in repo_files):
        return [p for p in WAV2VEC2_PATTERNS if p != "pytorch_model.bin"]
    return list(WAV2VEC2_PATTERNS)


def _prefetch_wav2vec2(cfg: Wav2Vec2BackboneConfig, dest: Path) -> dict:
    request = {"source": "huggingface", "id": cfg.id, "revision": cfg.revision}
    if (record := _recorded(dest / RECORD_NAME, request, dest)) is not None:
        return record
    tmp = dest.parent / f".{dest.name}.prefetch-tmp"
    old = dest.parent / f".{dest.name}.prefetch-old"
    for stale in (tmp, old):  # left by a killed earlier run
        _remove(stale)
    with _parent_folders(dest):
        return _download_snapshot(cfg, dest, tmp, old, request)


def _download_snapshot(cfg: Wav2Vec2BackboneConfig, dest: Path, tmp: Path, old: Path, request: dict) -> dict:
    import huggingface_hub

    try:
        try:
            # Resolve the revision first and download that commit, so the files are all of one commit
            # even if the branch moves meanwhile, and the record can name it.
            info = huggingface_hub.HfApi().model_info(cfg.id, revision=cfg.revision)
            commit = info.sha
            if not commit:
                raise ValueError(f"the Hub gave no commit for revision {cfg.revision!r}")
            huggingface_hub.snapshot_download(
                repo_id=cfg.id,
                revision=commit,
                local_dir=tmp,
                allow_patterns=_allow_patterns([s.rfilename for s in info.siblings or ()]),
            )
        except Exception as e:  # hub, HTTP and connection errors have many types
            raise BackboneError(
                f"{cfg.key}: cannot download {cfg.id} at revision {cfg.revision!r} from the Hugging Face Hub "
                f"({type(e).__name__}: {e}); nothing was written to {dest}. Check {cfg.key}.id and .revision "
                "and the connection, or fetch it on a machine with internet and copy the directory here"
            ) from None
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's own download metadata
        if not (tmp / "config.json").is_file() or not any((tmp / n).is_file() for n in WAV2VEC2_WEIGHT_FILES):
            got = sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []
            raise BackboneError(
                f"{cfg.key}: {cfg.id}@{commit} gave {got}, not config.json and one of "
                f"{list(WAV2VEC2_WEIGHT_FILES)}; check {cfg.key}.id; nothing was written to {dest}"
            )
        files = [_file_entry(p, p.relative_to(tmp).as_posix()) for p in sorted(tmp.rglob("*")) if p.is_file()]
        record = {**request, "commit": commit, "files": files}
        _write_record(tmp / RECORD_NAME, record)  # inside: the record appears with the snapshot
        if dest.exists() or dest.is_symlink():  # an unrecorded or outdated copy: move aside, then delete
            os.replace(dest, old)
        os.replace(tmp, dest)
        _remove(old)
    finally:
        _remove(tmp)
    return record


def prefetch(name: str, d: Mapping, out: Path | str | None = None, *, progress: bool = True) -> dict:
    """Fetch ``backbones.<name>`` (config mapping ``d``) into ``out`` (default: its ``path``); return the
    record written beside it (see :func:`record_path`). Needs internet unless already done.

    Idempotent: when the record is there, asks for the same source and revision, and every listed file has
    its size and sha256, nothing is fetched. Atomic: files are downloaded beside the destination and moved
    into place whole; on any error nothing new is left (a previous copy is kept only when the download
    fails before it is replaced).
    """
    cfg = parse_config(name, d)
    dest = destination(cfg, out)
    if isinstance(cfg, ResNetConfig):
        return _prefetch_resnet(cfg, dest, progress)
    return _prefetch_wav2vec2(cfg, dest)  # huggingface_hub's bars: HF_HUB_DISABLE_PROGRESS_BARS=1


# --------------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avemotion.backbones", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prefetch", help="download a backbone's weights into its path and record them")
    p.add_argument("--name", required=True, choices=sorted(BACKBONES), help="the backbones.<name> entry")
    p.add_argument("--params", required=True, help="that entry of config.yaml as a JSON object")
    p.add_argument("--out", type=Path, help="where to put the weights (default: the entry's path)")
    p.add_argument("--quiet", action="store_true", help="no download progress")
    args = parser.parse_args(argv)
    try:
        try:
            params = json.loads(args.params)
        except ValueError as e:
            raise BackboneError(f"--params is not JSON ({e})") from None
        record = prefetch(args.name, params, args.out, progress=not args.quiet)
        dest = destination(parse_config(args.name, params), args.out)
    except (BackboneError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{dest} {json.dumps(record, sort_keys=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
