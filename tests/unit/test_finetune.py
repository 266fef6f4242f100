"""Backbones fine-tuned under TIM-Net and their frozen features, on tiny randomly initialised backbones."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from avemotion import config as C
from avemotion import finetune, paper, registry, train
from avemotion.models import BackboneClassifier, TIMNetClassifier, TIMNetConfig

RESNET = {"arch": "resnet18", "weights": "IMAGENET1K_V1", "path": "unused", "init": "random"}
TINY_W2V = {
    "id": "facebook/wav2vec2-base",
    "revision": "main",
    "path": "unused",
    "init": "random",
    "freeze_feature_encoder": True,
    "mask_time_prob": 0.0,
    "config": {
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "conv_dim": [8] * 7,
        "num_conv_pos_embeddings": 8,
        "num_conv_pos_embedding_groups": 2,
    },
}


def patches_of(n: int, frames: int = paper.FINETUNE_FRAMES, views: int = 2, size: int = 32, seed: int = 0):
    return torch.from_numpy(
        np.random.default_rng(seed).integers(0, 256, (n, frames, views, size, size, 3), np.uint8)
    )


def test_train_spec_of_a_backbone_feature_carries_its_backbone_and_skips_standardisation(full_config):
    spec = C.train_spec(full_config, "eyes_resnet", "multiclass", "all", 2)
    assert spec.backbone == full_config["backbones"]["resnet"] and spec.backbone["init"] == "pretrained"
    assert not spec.standardize and spec.mixed_precision
    assert (spec.learning_rate, spec.batch_size, spec.epochs, spec.scales, spec.channels) == (
        2e-4,
        8,
        60,
        5,
        32,
    )
    lms = C.train_spec(full_config, "lms", "multiclass", "all", 2)
    assert lms.backbone is None and lms.standardize and not lms.mixed_precision
    assert C.TrainSpec.from_json(spec.to_json()) == spec


def test_job_dirs_route_fine_tuned_backbones_to_their_own_stage():
    assert (
        C.job_dir("face_resnet", "binary", "sad", 3, 1)
        == "results/finetune/face_resnet/binary/sad/seed1/fold3"
    )
    assert C.job_dir("lms", "multiclass", "all", 0, 2) == "results/train/lms/multiclass/all/seed2/fold0"
    # a fusion configuration reads frozen features: TIM-Net on arrays, not fine-tuning
    assert C.job_dir("face_resnet+lms", "multiclass", "all", 1, 1).startswith("results/train/")


def test_frame_encoder_averages_the_two_eyes_per_frame():
    torch.manual_seed(0)
    encoder = finetune.build_encoder("resnet", RESNET).eval()
    x = patches_of(2, frames=3)
    with torch.no_grad():
        both = encoder(x)  # (2, 3, 512)
        left, right = encoder(x[:, :, :1]), encoder(x[:, :, 1:])
    assert both.shape == (2, 3, 512)
    torch.testing.assert_close(both, (left + right) / 2, rtol=1e-5, atol=1e-5)


def test_speech_encoder_gives_146_frames_from_the_audio_window():
    torch.manual_seed(0)
    encoder = finetune.build_encoder("wav2vec2_large", TINY_W2V).eval()
    audio = np.random.default_rng(0).normal(0, 0.1, (2, paper.N_SAMPLES)).astype(np.float32)
    x = finetune.backbones.speech_input(audio)
    with torch.no_grad():
        out = encoder(x)
    assert x.shape == (2, 46_934) and out.shape == (2, paper.WAV2VEC2_FRAMES, 16)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_a_fine_tuning_step_changes_the_backbone_weights():
    torch.manual_seed(0)
    encoder = finetune.build_encoder("resnet", RESNET)
    cfg = TIMNetConfig(in_features=encoder.out_features, channels=8, scales=3)
    model = BackboneClassifier(encoder, TIMNetClassifier(cfg, n_outputs=8))
    before = _state(encoder)
    x, y = patches_of(4, frames=8), torch.tensor([0, 1, 2, 3])
    spec = C.TrainSpec(**{**_tiny_spec().__dict__, "batch_size": 4, "epochs": 1})
    train.fit(model, x, y, spec, None)
    after = encoder.state_dict()
    changed = [k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after[k])]
    assert "net.conv1.weight" in changed and "net.layer4.1.conv2.weight" in changed


def test_wav2vec2_fine_tuning_keeps_the_frozen_feature_encoder_and_trains_the_transformer():
    torch.manual_seed(0)
    encoder = finetune.build_encoder("wav2vec2_base", TINY_W2V)
    cfg = TIMNetConfig(in_features=encoder.out_features, channels=8, scales=8)
    model = BackboneClassifier(encoder, TIMNetClassifier(cfg, n_outputs=1))
    before = _state(encoder)
    audio = np.random.default_rng(1).normal(0, 0.1, (4, paper.N_SAMPLES)).astype(np.float32)
    x, y = finetune.backbones.speech_input(audio), torch.tensor([0, 1, 0, 1])
    spec = C.TrainSpec(
        **{**_tiny_spec().__dict__, "task": "binary", "target": "happy", "batch_size": 4, "epochs": 1}
    )
    train.fit(model, x, y, spec, torch.ones(2))
    after = encoder.state_dict()
    conv = [k for k in before if k.startswith("net.feature_extractor.")]
    layers = [k for k in before if k.startswith("net.encoder.layers.0.attention.")]
    assert conv and all(torch.equal(before[k], after[k]) for k in conv)
    assert layers and any(not torch.equal(before[k], after[k]) for k in layers)


def _tiny_spec() -> C.TrainSpec:
    return C.TrainSpec(
        configuration="eyes_resnet", task="multiclass", target="all", fold=0, test_actors=(2,),
        learning_rate=1e-3, batch_size=4, epochs=2, scales=3, channels=8, kernel_size=2, convs_per_block=3,
        dropout=0.1, seed=1, device="cpu", beta1=0.93, beta2=0.98, eps=1e-8, weight_decay=0.0,
        label_smoothing=0.1, standardize=False, backbone=RESNET, mixed_precision=True,
    )  # fmt: skip


def _clip_table(actors: list[int], per_actor: int) -> pd.DataFrame:
    rows = []
    for actor in actors:
        for i in range(per_actor):
            label = i % 8
            rows.append(
                {"clip": f"01-01-0{label + 1}-01-01-01-{actor:02d}", "actor": actor, "label": label,
                 "emotion": paper.CLASSES[label]}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_train_job_fine_tunes_and_its_checkpoint_rebuilds_the_same_encoder(tmp_path):
    table = _clip_table([1, 2], 8)
    x = patches_of(len(table), frames=8)
    torch.manual_seed(1)
    encoder = finetune.build_encoder("resnet", RESNET)
    result = train.train_job(_tiny_spec(), table, x, backbone=encoder)
    assert result["metrics"]["n_train"] == 8 and result["metrics"]["n_test"] == 8
    assert result["checkpoint"]["backbone"]["params"]["init"] == "random"
    path = tmp_path / "checkpoint.pt"
    torch.save(result["checkpoint"], path)
    checkpoint = finetune.load_checkpoint(path)  # weights_only
    rebuilt = finetune.fine_tuned_encoder(checkpoint, path)
    best = {
        k.removeprefix("backbone."): v
        for k, v in result["checkpoint"]["state_dict"].items()
        if k.startswith("backbone.")
    }
    for k, v in rebuilt.state_dict().items():
        assert torch.equal(v, best[k]), k


def test_wav2vec2_fine_tuning_with_specaugment_is_reproducible():
    """Wav2Vec2 draws its time masks from NumPy's global generator: train_job seeds it, so two jobs (two
    processes, a SLURM run and a local one) train the same weights whatever NumPy drew before."""
    table = _clip_table([1, 2], 4)
    audio = np.random.default_rng(1).normal(0, 0.1, (len(table), paper.N_SAMPLES)).astype(np.float32)
    params = {**TINY_W2V, "mask_time_prob": 0.5}
    spec = C.TrainSpec(
        **{**_tiny_spec().__dict__, "configuration": "wav2vec2_large", "scales": 8, "backbone": params}
    )
    losses = []
    for draw in (3, 17):
        np.random.seed(draw)  # whatever state an earlier step left
        torch.manual_seed(spec.seed)
        encoder = finetune.build_encoder("wav2vec2_large", params)
        x = finetune.backbones.speech_input(audio)
        losses.append(train.train_job(spec, table, x, backbone=encoder)["history"]["train_loss"].tolist())
    assert losses[0] == losses[1]


def test_frozen_features_leave_the_weights_untouched():
    torch.manual_seed(0)
    encoder = finetune.build_encoder("resnet", RESNET)
    encoder.train()  # extraction must switch to eval itself: BatchNorm statistics must not move
    before = _state(encoder)
    out = finetune.frozen_features(
        encoder, patches_of(3, frames=paper.N_FRAMES, views=1), 2, torch.device("cpu")
    )
    assert out.shape == (3, paper.N_FRAMES, 512) and out.dtype == np.float32
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    again = finetune.frozen_features(
        encoder, patches_of(3, frames=paper.N_FRAMES, views=1), 3, torch.device("cpu")
    )
    np.testing.assert_allclose(out, again, rtol=1e-5, atol=1e-5)  # batch size does not matter in eval mode


def test_frozen_cli_encodes_each_fold_with_its_own_checkpoint_as_one_fold_jobs_would(tmp_path, capsys):
    """extract_frozen with jobs.group_folds: one process, one --checkpoint/--out/--index per fold."""
    table = _clip_table([2, 3], 2)
    table.to_csv(tmp_path / "clips.csv", index=False)
    audio = np.random.default_rng(0).normal(0, 0.1, (len(table), paper.N_SAMPLES)).astype(np.float32)
    inputs = []
    for actor in (2, 3):
        mine = (table["actor"] == actor).to_numpy()
        inputs.append(str(tmp_path / f"Actor_{actor:02d}.npz"))
        np.savez(inputs[-1], clips=table["clip"].to_numpy(dtype=str)[mine], audio=audio[mine])
    checkpoints = []
    for fold, test_actor in ((0, 2), (1, 3)):
        spec = C.TrainSpec(
            **{**_tiny_spec().__dict__, "configuration": "wav2vec2_large", "scales": 8, "backbone": TINY_W2V,
               "fold": fold, "test_actors": (test_actor,), "epochs": 1, "seed": fold}
        )  # fmt: skip
        torch.manual_seed(spec.seed)
        encoder = finetune.build_encoder("wav2vec2_large", TINY_W2V)
        result = train.train_job(spec, table, finetune.backbones.speech_input(audio), backbone=encoder)
        checkpoints.append(str(tmp_path / f"checkpoint{fold}.pt"))
        torch.save(result["checkpoint"], checkpoints[-1])
    common = [
        "frozen",
        "--feature",
        "wav2vec2_large",
        "--inputs",
        *inputs,
        "--clips",
        str(tmp_path / "clips.csv"),
    ]
    outs = [str(tmp_path / "together" / f"fold{k}.npy") for k in (0, 1)]
    index = [str(tmp_path / "together" / f"index{k}.csv") for k in (0, 1)]
    assert finetune.main([*common, "--checkpoint", *checkpoints, "--out", *outs, "--index", *index]) == 0
    for k in (0, 1):
        alone, alone_index = tmp_path / f"alone{k}.npy", tmp_path / f"alone_index{k}.csv"
        argv = [*common, "--checkpoint", checkpoints[k], "--out", str(alone), "--index", str(alone_index)]
        assert finetune.main(argv) == 0
        assert np.array_equal(np.load(outs[k]), np.load(alone)) and np.load(alone).shape == (4, 146, 16)
        assert Path(index[k]).read_text() == alone_index.read_text()
    assert not np.allclose(np.load(outs[0]), np.load(outs[1]))  # each fold's own backbone
    # one --out per --checkpoint, or nothing is written
    missing = tmp_path / "short.npy"
    argv = [*common, "--checkpoint", *checkpoints, "--out", str(missing), "--index", *index]
    assert finetune.main(argv) == 1
    assert "2 --checkpoint, 1 --out and 2 --index values" in capsys.readouterr().err and not missing.exists()


def test_a_missing_weight_is_a_clear_error_and_no_output_is_written(full_config, tmp_path, capsys):
    spec = C.train_spec(full_config, "wav2vec2_base", "binary", "happy", 0)
    assert spec.backbone["init"] == "pretrained"
    spec = C.TrainSpec(**{**spec.__dict__, "backbone": {**spec.backbone, "path": str(tmp_path / "nowhere")}})
    table = _clip_table([2, 3], 2)
    table.to_csv(tmp_path / "clips.csv", index=False)
    (tmp_path / "manifest.json").write_text(json.dumps({"sha256": "x"}))
    audio = np.zeros((2, paper.N_SAMPLES), np.float32)
    for actor in (2, 3):
        clips = table[table["actor"] == actor]["clip"].to_numpy(dtype=str)
        np.savez(tmp_path / f"Actor_{actor:02d}.npz", clips=clips, audio=np.repeat(audio, len(clips) // 2, 0))
    out = tmp_path / "job"
    argv = ["train", "--spec", spec.to_json(), "--inputs", str(tmp_path / "Actor_02.npz"), str(tmp_path / "Actor_03.npz"),
            "--clips", str(tmp_path / "clips.csv"), "--manifest", str(tmp_path / "manifest.json"), "--out", str(out)]  # fmt: skip
    assert finetune.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: backbones.wav2vec2_base.path:") and "nowhere" in err and "prefetch" in err
    assert not out.exists()


def test_registry_backbone_features_fit_their_scales(full_config):
    for key, feature in registry.FEATURES.items():
        if feature.is_backbone:
            assert feature.backbone in full_config["backbones"], key
            for task in paper.TASKS:
                scales = full_config["training"]["hyperparameters"][key][task]["scales"]
                assert 2 ** (scales - 1) < feature.frames, key
    assert registry.get("eyes_resnet").streams == ("eye_left", "eye_right")
    assert registry.get("face_resnet").frames == 20 and registry.get("face_resnet").frozen_frames == 88
    with pytest.raises(KeyError):
        registry.get("resnet")
