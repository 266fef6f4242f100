"""Pretrained backbones fine-tuned end to end under TIM-Net, per fold, and their frozen per-fold features.

The paper's pretrained half: a backbone turns each time step of a clip into a vector, TIM-Net classifies the
sequence, and both are trained together (Table 3 learning rate, batch, epochs and scales):

    ResNet (face, eyes, mouth)   patches (B, T=20, V, H, W, 3) uint8 ── ImageNet norm ── ResNet per patch
                                 ── (B, T, V, 512) ── mean over the V patches (the two eyes) ── (B, T, 512)
    Wav2Vec2 (base, large)       audio (B, 46,934) 16 kHz, z-scored ── Wav2Vec2 ── (B, 146, 768 | 1024)
                                              ── TIM-Net ── logits

The training loop, checkpoint rule (lowest training loss), outputs and MLflow run are the ones of
``avemotion.train``; this module supplies the backbone, its inputs and the CLI. The inputs stay on the CPU
and each batch moves to the device; on CUDA the forward pass runs in mixed precision (config
``training.mixed_precision``).

Frozen features for fusion (Table 2's multimodal cells): from each fold's fine-tuned 8-class model, the
backbone alone in eval mode, on the central 88 frames' patches (ResNets, eyes averaged) or the same audio
window (Wav2Vec2): one (clips, frames, dims) array per fold. A fold's model never saw its test actors, so its
features of them are honest test inputs for that fold's fusion model.

CLI (the ``finetune_binary``, ``finetune_multiclass`` and ``extract_frozen`` rules; ``train`` takes one
``--spec`` and ``--out`` per target of a fold, or of every fold with config ``jobs.group_folds``, as
``avemotion.train`` does, and reads the inputs once; ``frozen`` one ``--checkpoint``, ``--out`` and
``--index`` per fold)::

    python -m avemotion.finetune train --spec '<TrainSpec JSON>' --inputs results/patches/Actor_* \
        --clips results/clips/clips.csv --manifest results/clips/data_manifest.json \
        --out results/finetune/face_resnet/multiclass/all/fold0
    python -m avemotion.finetune frozen --feature face_resnet \
        --checkpoint results/finetune/face_resnet/multiclass/all/fold0/checkpoint.pt \
        --inputs results/patches/Actor_* --clips results/clips/clips.csv \
        --out results/features/face_resnet/fold0/features.npy --index .../index.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from avemotion import backbones, patches, registry, seeds, train
from avemotion.features import load_audio, save_features
from avemotion.io import DiskFullError
from avemotion.registry import Feature


class FrameEncoder(nn.Module):
    """A ResNet applied to every patch of every frame; a frame's patches (the two eyes) are averaged."""

    def __init__(self, name: str, params: dict) -> None:
        super().__init__()
        self.name, self.params = name, dict(params)
        self.net = backbones.build_resnet(backbones.parse_config(name, params))
        self.out_features = self.net.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, v = x.shape[:3]  # (B, T, V, H, W, 3) uint8
        z = backbones.imagenet_normalize(x.flatten(0, 2))  # (B*T*V, 3, H, W)
        return self.net(z).view(b, t, v, -1).mean(dim=2)  # (B, T, D)

    def architecture(self) -> dict:
        """What rebuilds this encoder untrained, before a fine-tuned state dict is loaded into it."""
        return {"name": self.name, "params": {**self.params, "init": "random"}}


class SpeechEncoder(nn.Module):
    """Wav2Vec2's last hidden states, one vector per 20 ms frame."""

    def __init__(self, name: str, params: dict) -> None:
        super().__init__()
        self.name, self.params = name, dict(params)
        self.net = backbones.build_wav2vec2(backbones.parse_config(name, params))
        self.out_features = self.net.config.hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).last_hidden_state  # (B, L) -> (B, 146, D)

    def architecture(self) -> dict:
        # The checkpoint's own Wav2Vec2Config, so rebuilding needs neither the hub nor the prefetched folder.
        config = self.net.config.to_dict()
        return {"name": self.name, "params": {**self.params, "init": "random", "config": config}}


def build_encoder(name: str, params: dict) -> nn.Module:
    """The encoder of backbone ``name`` (``backbones.<name>``: resnet, wav2vec2_base, wav2vec2_large)."""
    return (FrameEncoder if name == "resnet" else SpeechEncoder)(name, params)


def encoder_from_architecture(architecture: dict) -> nn.Module:
    return build_encoder(architecture["name"], architecture["params"])


# --------------------------------------------------------------------------------------------- inputs


def actor_folders(paths: list[Path]) -> dict[int, Path]:
    """actor -> its folder among per-actor inputs named ``Actor_XX`` (patch folders, audio .npz)."""
    folders = {}
    for path in paths:
        name = Path(path).stem
        if not name.startswith("Actor_"):
            raise ValueError(f"{path}: expected a per-actor input named Actor_XX")
        folders[int(name.removeprefix("Actor_"))] = Path(path)
    return folders


def load_patches(table: pd.DataFrame, folders: list[Path], streams: tuple[str, ...], frame_set: str):
    """(clips, frames, streams, size, size, 3) uint8 patches of every clip of ``table``, in its order."""
    by_actor = actor_folders(folders)
    clips = []
    for row in table.itertuples(index=False):
        if row.actor not in by_actor:
            raise ValueError(f"no patch folder for actor {row.actor} among the inputs")
        views = [patches.read_patches(by_actor[row.actor], row.clip, s, frame_set) for s in streams]
        clips.append(np.stack(views, axis=1))  # (T, V, S, S, 3)
    return torch.from_numpy(np.stack(clips))


def load_inputs(feature: Feature, table: pd.DataFrame, inputs: list[Path], frame_set: str) -> torch.Tensor:
    """A backbone feature's raw inputs for every clip of ``table``: patches (frame set ``finetune`` or
    ``central``) or the 16 kHz z-scored audio window."""
    if feature.source == "patches":
        return load_patches(table, inputs, feature.streams, frame_set)
    return backbones.speech_input(load_audio(table, inputs))


# --------------------------------------------------------------------------------------- frozen features


@torch.no_grad()
def frozen_features(
    encoder: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device, amp: bool = False
) -> np.ndarray:
    """(clips, frames, dims) float32 features of the encoder in eval mode; its weights stay as they are."""
    encoder.eval()
    out = []
    for start in range(0, len(x), batch_size):
        with train.autocast(device, amp):
            out.append(encoder(x[start : start + batch_size].to(device)).float().cpu())
    return torch.cat(out).numpy()


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise train.TrainingError(
            f"{path}: cannot read the fine-tuned checkpoint ({e}); rerun its job"
        ) from None


def fine_tuned_encoder(checkpoint: dict, where: Path) -> nn.Module:
    """The fine-tuned backbone of a ``finetune`` checkpoint, its architecture rebuilt and weights loaded."""
    if checkpoint.get("backbone") is None:
        raise train.TrainingError(f"{where} is not the checkpoint of a fine-tuned backbone")
    encoder = encoder_from_architecture(checkpoint["backbone"])
    prefix = "backbone."
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    encoder.load_state_dict(state, strict=True)
    return encoder


# ------------------------------------------------------------------------------------------------- CLI


def _train_main(args: argparse.Namespace) -> int:
    loaded: dict[str, torch.Tensor] = {}  # the raw inputs, read once for all the process's jobs

    def run(spec, table: pd.DataFrame) -> dict:
        feature = registry.get(spec.configuration)
        if not feature.is_backbone or spec.backbone is None:
            raise train.TrainingError(f"{spec.configuration} is not a backbone feature")
        try:
            seeds.seed_weights(spec.seed)  # a random-init (demo) backbone: from the seed's weights stream
            encoder = build_encoder(feature.backbone, spec.backbone)  # first: missing weights fail fast
            if not loaded:
                loaded["inputs"] = load_inputs(feature, table, args.inputs, "finetune")
        except (ValueError, backbones.BackboneError, patches.PatchError) as e:
            raise train.TrainingError(str(e)) from None
        return train.train_job(spec, table, loaded["inputs"], args.threads, backbone=encoder)

    return train.run_jobs(args, run)


def _frozen_main(args: argparse.Namespace) -> int:
    """The frozen features of each ``--checkpoint`` (one per fold), into its ``--out`` and ``--index``."""
    if not len(args.checkpoint) == len(args.out) == len(args.index):
        print(
            f"error: {len(args.checkpoint)} --checkpoint, {len(args.out)} --out and {len(args.index)} "
            "--index values: give one of each per fold",
            file=sys.stderr,
        )
        return 1
    feature = registry.get(args.feature)
    table = pd.read_csv(args.clips)
    torch.set_num_threads(args.threads)
    for checkpoint_path, out, index in zip(args.checkpoint, args.out, args.index, strict=True):
        code = _frozen_fold(args, feature, table, checkpoint_path, out, index)
        if code:
            return code
    return 0


def _frozen_fold(
    args: argparse.Namespace,
    feature: Feature,
    table: pd.DataFrame,
    checkpoint_path: Path,
    out: Path,
    index: Path,
) -> int:
    try:
        checkpoint = load_checkpoint(checkpoint_path)
        encoder = fine_tuned_encoder(checkpoint, checkpoint_path)
        spec = checkpoint["spec"]
        device = train.pick_device(spec["device"])
        encoder = encoder.to(device)
        batch = args.batch_size or spec["batch_size"]
        # Patches are read a batch of clips at a time (the central 88 frames of every clip's two eyes at
        # 224 x 224 would be 38 GB); the audio windows of all clips fit in memory (270 MB) and are read once.
        chunk = batch if feature.source == "patches" else len(table)
        parts = [
            frozen_features(
                encoder,
                load_inputs(feature, table.iloc[start : start + chunk], args.inputs, "central"),
                batch,
                device,
                spec["mixed_precision"],
            )
            for start in range(0, len(table), chunk)
        ]
        features = np.concatenate(parts)
    except (ValueError, train.TrainingError, backbones.BackboneError, patches.PatchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if features.shape[1] != feature.frozen_frames or not np.isfinite(features).all():
        print(
            f"error: {args.feature} frozen features {features.shape} (expected {feature.frozen_frames} "
            f"frames) or not finite, from {checkpoint_path}",
            file=sys.stderr,
        )
        return 1
    rows = pd.DataFrame({"clip": table["clip"], "row": np.arange(len(table))})
    try:
        save_features(out, index, features, rows)
    except DiskFullError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.feature} fold {spec['fold']} frozen features: {features.shape} -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("train", help="fine-tune a backbone under TIM-Net for one fold job")
    train.add_job_arguments(fit)
    fit.add_argument("--inputs", type=Path, nargs="+", required=True, help="per-actor patches or audio")
    frozen = sub.add_parser("frozen", help="frozen per-fold features of a fine-tuned backbone")
    frozen.add_argument(
        "--feature", required=True, choices=[k for k, f in registry.FEATURES.items() if f.is_backbone]
    )
    frozen.add_argument("--checkpoint", type=Path, nargs="+", required=True, help="one per fold")
    frozen.add_argument("--inputs", type=Path, nargs="+", required=True)
    frozen.add_argument("--clips", type=Path, required=True)
    frozen.add_argument("--out", type=Path, nargs="+", required=True, help="one per --checkpoint")
    frozen.add_argument("--index", type=Path, nargs="+", required=True, help="one per --checkpoint")
    frozen.add_argument("--threads", type=int, default=1)
    frozen.add_argument("--batch-size", type=int, default=0, help="clips per batch (0: the job's batch size)")
    args = parser.parse_args(argv)
    return _train_main(args) if args.command == "train" else _frozen_main(args)


if __name__ == "__main__":
    sys.exit(main())
