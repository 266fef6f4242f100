"""Backbones (avemotion.backbones): ResNet and Wav2Vec2 from local weights, inputs, frame count, prefetch.

No network and no real checkpoints: models are tiny or randomly initialised, "pretrained" weights are saved
to tmp_path first, and prefetch runs against fakes of torch.hub / huggingface_hub that write small files.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import numpy as np
import pytest
import torch
import torchaudio
import torchvision
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining, Wav2Vec2Model

from avemotion import backbones, paper
from avemotion.backbones import (
    BackboneError,
    ResNetConfig,
    Wav2Vec2BackboneConfig,
    build_resnet,
    build_wav2vec2,
    imagenet_normalize,
    prefetch,
    resampled_length,
    speech_input,
    wav2vec2_frames,
)

# A tiny Wav2Vec2 with the real conv kernels and strides, so frame counts are the real ones.
TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [16] * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}
W2V_KEY = "backbones.wav2vec2_base"
RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


def resnet_params(path: Path | str, init: str = "pretrained", **extra) -> dict:
    return {"arch": "resnet18", "weights": "IMAGENET1K_V1", "path": str(path), "init": init, **extra}


def w2v_params(path: Path | str, init: str = "pretrained", **extra) -> dict:
    params = {"id": "facebook/wav2vec2-base", "revision": "main", "path": str(path), "init": init}
    return {**params, **({"config": TINY} if init == "random" else {}), **extra}


def tiny_wav2vec2(seed: int = 0, **extra) -> Wav2Vec2Model:
    torch.manual_seed(seed)
    return build_wav2vec2(
        Wav2Vec2BackboneConfig.from_dict(w2v_params("unused", "random", **extra), key=W2V_KEY)
    )


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_repository_config_parses(full_config: dict) -> None:
    cfgs = {
        name: backbones.parse_config(name, full_config["backbones"][name]) for name in backbones.BACKBONES
    }
    assert all(cfg.init == "pretrained" for cfg in cfgs.values())
    assert (cfgs["resnet"].arch, cfgs["resnet"].weights) == ("resnet18", "IMAGENET1K_V1")
    assert cfgs["wav2vec2_base"].id == "facebook/wav2vec2-base"
    assert cfgs["wav2vec2_large"].id == "facebook/wav2vec2-large"
    with pytest.raises(BackboneError, match=r"unknown backbone 'vgg'"):
        backbones.parse_config("vgg", {})


# --- image input --------------------------------------------------------------------------------------------


def test_paper_normalisation_is_the_weights_own() -> None:
    preset = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    assert tuple(preset.mean) == paper.IMAGENET_MEAN
    assert tuple(preset.std) == paper.IMAGENET_STD


def test_imagenet_normalize_by_hand() -> None:
    x = torch.zeros(2, 4, 5, 3, dtype=torch.uint8)  # (N, H, W, 3)
    x[1, 2, 3] = torch.tensor([255, 0, 128], dtype=torch.uint8)
    y = imagenet_normalize(x)
    assert y.shape == (2, 3, 4, 5) and y.dtype == torch.float32
    want = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    torch.testing.assert_close(y[1, :, 2, 3], torch.tensor(want))
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]))
    assert imagenet_normalize(x[0, 0, 0].reshape(1, 1, 3)).shape == (3, 1, 1)  # no batch dimension


@pytest.mark.parametrize("bad", [torch.zeros(4, 4, 3), torch.zeros(4, 4, 4, dtype=torch.uint8)])
def test_imagenet_normalize_rejects(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"uint8 RGB"):
        imagenet_normalize(bad)


# --- ResNet -------------------------------------------------------------------------------------------------


def test_random_resnet_shape() -> None:
    model = build_resnet(ResNetConfig.from_dict(resnet_params("no/such/file.pth", "random")))
    assert model.out_features == 512 and not model.training
    with torch.no_grad():
        assert model(torch.randn(3, 3, 32, 32)).shape == (3, 512)


def test_pretrained_resnet_loads_the_local_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None)  # stands in for the ImageNet file, fc included
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = build_resnet(ResNetConfig.from_dict(resnet_params(path)))
    source.fc = torch.nn.Identity()
    assert_same_state(model, source)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source.eval()(x), rtol=0, atol=0)


def test_pretrained_resnet_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "weights" / "resnet18-IMAGENET1K_V1.pth"
    with pytest.raises(BackboneError, match=r"backbones\.resnet\.path") as err:
        build_resnet(ResNetConfig.from_dict(resnet_params(path)))
    assert str(path) in str(err.value) and "prefetch --name resnet" in str(err.value)


def test_pretrained_resnet_incomplete_or_corrupt(tmp_path: Path) -> None:
    state = torchvision.models.resnet18(weights=None).state_dict()
    del state["layer4.1.bn2.weight"]
    path = tmp_path / "incomplete.pth"
    torch.save(state, path)
    with pytest.raises(BackboneError, match=r"backbones\.resnet\.path: .*layer4\.1\.bn2\.weight"):
        build_resnet(ResNetConfig.from_dict(resnet_params(path)))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match=r"not a readable PyTorch state dict"):
        build_resnet(ResNetConfig.from_dict(resnet_params(path)))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"init": "imagenet"}, "init"),
        ({"arch": "vgg16"}, "arch"),
        ({"weights": "DEFAULT"}, "weights"),
        ({"weights": "IMAGENET1K_V2"}, "weights"),  # resnet18 has only V1
        ({"path": ""}, "path"),
    ],
)
def test_resnet_config_errors_name_the_key(change: dict, field: str) -> None:
    with pytest.raises(BackboneError, match=rf"^backbones\.resnet\.{field}: "):
        ResNetConfig.from_dict({**resnet_params("w.pth"), **change})


def test_resnet_config_missing_field() -> None:
    params = resnet_params("w.pth")
    del params["path"]
    with pytest.raises(BackboneError, match=r"^backbones\.resnet\.path: missing"):
        ResNetConfig.from_dict(params)
    with pytest.raises(BackboneError, match=r"^backbones\.resnet: expected a mapping"):
        ResNetConfig.from_dict(["resnet18"])  # type: ignore[arg-type]


# --- Wav2Vec2 -----------------------------------------------------------------------------------------------


def test_wav2vec2_pretrained_loads_the_local_snapshot(tmp_path: Path) -> None:
    source = tiny_wav2vec2(seed=2)
    source.save_pretrained(tmp_path / "snap")
    model = build_wav2vec2(Wav2Vec2BackboneConfig.from_dict(w2v_params(tmp_path / "snap"), key=W2V_KEY))
    assert_same_state(model, source)
    assert model.out_features == 32 and not model.training


def test_wav2vec2_loads_a_pretraining_checkpoint_with_legacy_keys(tmp_path: Path) -> None:
    # The facebook checkpoints are Wav2Vec2ForPreTraining files ("wav2vec2." prefix, quantizer heads) from
    # before torch's weight-norm parametrisations (weight_g/weight_v): they must load completely, without
    # tripping the missing-weights check.
    torch.manual_seed(3)
    config = Wav2Vec2Config(**TINY, codevector_dim=16, proj_codevector_dim=16, num_codevectors_per_group=8)
    config.architectures = ["Wav2Vec2ForPreTraining"]
    state = Wav2Vec2ForPreTraining(config).state_dict()
    legacy = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in state.items()
    }
    assert any(k.endswith("weight_g") for k in legacy)
    snap = tmp_path / "snap"
    config.save_pretrained(snap)
    torch.save(legacy, snap / "pytorch_model.bin")
    model = build_wav2vec2(Wav2Vec2BackboneConfig.from_dict(w2v_params(snap), key=W2V_KEY))
    for k, v in model.state_dict().items():
        assert torch.equal(v, state["wav2vec2." + k]), k


def test_wav2vec2_missing_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "wav2vec2-base"
    with pytest.raises(BackboneError, match=rf"{W2V_KEY}\.path: .*not found") as err:
        build_wav2vec2(Wav2Vec2BackboneConfig.from_dict(w2v_params(path), key=W2V_KEY))
    assert str(path) in str(err.value) and "prefetch --name wav2vec2_base" in str(err.value)
    path.mkdir()
    tiny_wav2vec2().config.save_pretrained(path)  # config.json but no weights
    with pytest.raises(BackboneError, match=r"not a complete Wav2Vec2 snapshot"):
        build_wav2vec2(Wav2Vec2BackboneConfig.from_dict(w2v_params(path), key=W2V_KEY))


def test_wav2vec2_refuses_partial_weights(tmp_path: Path) -> None:
    source = tiny_wav2vec2()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("encoder.layers.1.")}
    source.config.save_pretrained(tmp_path)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(BackboneError, match=r"lacks weights .*encoder\.layers\.1\..*refusing random weights"):
        build_wav2vec2(Wav2Vec2BackboneConfig.from_dict(w2v_params(tmp_path), key=W2V_KEY))
    (tmp_path / "pytorch_model.bin").write_bytes(b"garbage")
    with pytest.raises(BackboneError, match=rf"{W2V_KEY}\.path: cannot load"):
        build_wav2vec2(Wav2Vec2BackboneConfig.from_dict(w2v_params(tmp_path), key=W2V_KEY))


def test_wav2vec2_rebuilt_from_a_saved_config(tmp_path: Path) -> None:
    # A fine-tuned model is rebuilt untrained from its whole saved config (Wav2Vec2Config.to_dict()), which
    # for the facebook checkpoints carries legacy keys: accepted as transformers wrote them.
    source = tiny_wav2vec2(seed=7)
    saved = {**source.config.to_dict(), "gradient_checkpointing": True, "mask_channel_prob": 0.0}
    cfg = Wav2Vec2BackboneConfig.from_dict(w2v_params("unused", "random", config=saved), key=W2V_KEY)
    model = build_wav2vec2(cfg)
    model.load_state_dict(source.state_dict())
    assert_same_state(model, source)
    with pytest.raises(BackboneError, match=rf"^{W2V_KEY}\.config\.model_type: 'hubert'"):
        Wav2Vec2BackboneConfig.from_dict(
            w2v_params("unused", "random", config={**saved, "model_type": "hubert"}), key=W2V_KEY
        )


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_feature_encoder(freeze: bool) -> None:
    model = tiny_wav2vec2(freeze_feature_encoder=freeze)
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    encoder = [g for name, g in grads.items() if name.startswith("feature_extractor.")]
    rest = [g for name, g in grads.items() if not name.startswith("feature_extractor.")]
    assert len(encoder) == 7 * 1 + 2  # 7 bias-free convs, GroupNorm (weight, bias) after the first only
    assert all(g is not freeze for g in encoder)
    assert rest and all(rest)  # feature projection, encoder, mask embedding stay trainable


def test_mask_time_prob_reaches_the_model(tmp_path: Path) -> None:
    model = tiny_wav2vec2()
    assert model.config.mask_time_prob == 0.05  # transformers' default
    model.save_pretrained(tmp_path)
    cfg = Wav2Vec2BackboneConfig.from_dict(w2v_params(tmp_path, mask_time_prob=0.0), key=W2V_KEY)
    assert build_wav2vec2(cfg).config.mask_time_prob == 0.0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"init": "imagenet"}, "init"),
        ({"id": ""}, "id"),
        ({"mask_time_prob": 1.5}, "mask_time_prob"),
        ({"freeze_feature_encoder": "yes"}, "freeze_feature_encoder"),
        ({"config": {"hidden_size": 8}}, "config"),  # overrides with init pretrained
        ({"init": "random", "config": {"hidden_sise": 8}}, r"config\.hidden_sise"),
        ({"init": "random", "config": {"mask_time_prob": 0.1}}, r"config\.mask_time_prob"),
        ({"init": "random", "config": {"conv_dim": [16] * 6}}, "config"),  # 6 dims for 7 conv layers
    ],
)
def test_wav2vec2_config_errors_name_the_key(change: dict, field: str) -> None:
    with pytest.raises(BackboneError, match=rf"^backbones\.wav2vec2_large\.{field}: "):
        Wav2Vec2BackboneConfig.from_dict({**w2v_params("p"), **change}, key="backbones.wav2vec2_large")


# --- speech input and frame count ---------------------------------------------------------------------------


def test_speech_input_length_and_normalisation() -> None:
    rng = np.random.default_rng(0)
    audio = (
        rng.standard_normal((3, paper.N_SAMPLES)) * [[0.01], [0.3], [1.0]] + [[0.0], [0.2], [-0.5]]
    ).astype(np.float32)
    audio[2] = 0.0  # silence
    x = speech_input(audio)
    n = math.ceil(paper.N_SAMPLES * paper.WAV2VEC2_SAMPLE_RATE / paper.SAMPLE_RATE)
    assert n == 46_934 == resampled_length(paper.N_SAMPLES, paper.SAMPLE_RATE, paper.WAV2VEC2_SAMPLE_RATE)
    assert x.shape == (3, n) and x.dtype == torch.float32
    torch.testing.assert_close(x[:2].mean(dim=1), torch.zeros(2), rtol=0, atol=1e-5)
    # std 1, up to the variance floor: sqrt(v / (v + 1e-7)) with v the resampled audio's variance.
    v = torchaudio.functional.resample(torch.from_numpy(audio[:2]), 48_000, 16_000).var(dim=1, unbiased=False)
    want = torch.sqrt(v / (v + 1e-7))
    assert want[0] < 0.999 and want[1] > 0.99999  # the quiet row shows the floor
    torch.testing.assert_close(x[:2].std(dim=1, unbiased=False), want, rtol=0, atol=1e-5)
    assert torch.isfinite(x).all() and torch.equal(x[2], torch.zeros(n))
    torch.testing.assert_close(speech_input(torch.from_numpy(audio)), x)  # tensor in, same out


def test_speech_input_matches_the_feature_extractor() -> None:
    audio = np.random.default_rng(1).uniform(-0.5, 0.5, (2, paper.N_SAMPLES)).astype(np.float32)
    resampled = torchaudio.functional.resample(torch.from_numpy(audio), 48_000, 16_000).numpy()
    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=16_000)
    want = extractor(list(resampled), sampling_rate=16_000, return_tensors="np").input_values
    torch.testing.assert_close(speech_input(audio), torch.from_numpy(want), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", [np.zeros(100, np.float32), np.zeros((2, 100), np.int16)])
def test_speech_input_rejects(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"float mono audio of shape \(N, samples\)"):
        speech_input(bad)


def test_the_window_gives_146_frames() -> None:
    model = tiny_wav2vec2()
    n = resampled_length(paper.N_SAMPLES, paper.SAMPLE_RATE, paper.WAV2VEC2_SAMPLE_RATE)
    assert wav2vec2_frames(n, model.config) == paper.WAV2VEC2_FRAMES == 146
    assert wav2vec2_frames(n) == 146  # base/large conv stack by default
    assert int(model._get_feat_extract_output_lengths(n)) == 146
    audio = np.random.default_rng(2).uniform(-0.5, 0.5, (2, paper.N_SAMPLES)).astype(np.float32)
    with torch.no_grad():
        out = model(speech_input(audio)).last_hidden_state
    assert out.shape == (2, paper.WAV2VEC2_FRAMES, 32)
    with pytest.raises(ValueError, match="too few"):
        wav2vec2_frames(300)


# --- prefetch: network fakes --------------------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def fake_download(calls: list, content: bytes | None = None, fail: bool = False):
    def download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        calls.append((url, hash_prefix))
        Path(dst).write_bytes(content if content is not None else b"partial")
        if fail:
            raise RuntimeError('invalid hash value (expected "f37072fd", got "0000")')

    return download


def test_prefetch_resnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(4)
    source = torchvision.models.resnet18(weights=None)
    saved = tmp_path / "source.pth"
    torch.save(source.state_dict(), saved)
    calls: list = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download(calls, saved.read_bytes()))
    dest = tmp_path / "weights" / "resnet18-IMAGENET1K_V1.pth"
    params = resnet_params(dest)
    record = prefetch("resnet", params, progress=False)
    assert calls == [(RESNET18_URL, "f37072fd")]  # the sha256 prefix torch.hub checks
    assert record == json.loads((tmp_path / "weights" / "resnet18-IMAGENET1K_V1.pth.json").read_text())
    assert record["weights"] == "ResNet18_Weights.IMAGENET1K_V1" and record["url"] == RESNET18_URL
    assert record["files"] == [{"name": dest.name, "sha256": sha256(saved), "size": saved.stat().st_size}]
    assert leftovers(dest.parent) == [dest.name, dest.name + ".json"]
    source.fc = torch.nn.Identity()
    assert_same_state(build_resnet(ResNetConfig.from_dict(params)), source)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download(calls, fail=True))
    assert prefetch("resnet", params, progress=False) == record  # recorded and intact: no download
    assert len(calls) == 1
    dest.write_bytes(b"damaged")  # no longer what the record says: fetched again (here: fails)
    with pytest.raises(BackboneError, match=r"backbones\.resnet: cannot download .*nothing was written"):
        prefetch("resnet", params, progress=False)
    assert len(calls) == 2


def test_prefetch_resnet_into_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A path without .pth/.pt is a folder (a Snakemake directory() output) holding <arch>-<weights>.pth.
    torch.manual_seed(6)
    source = torchvision.models.resnet18(weights=None)
    saved = tmp_path / "source.pth"
    torch.save(source.state_dict(), saved)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download([], saved.read_bytes()))
    folder = tmp_path / "weights" / "resnet"
    cfg = ResNetConfig.from_dict(resnet_params(folder))
    assert cfg.weights_file() == folder / "resnet18-IMAGENET1K_V1.pth"
    assert backbones.record_path(cfg) == folder / "resnet18-IMAGENET1K_V1.pth.json"
    prefetch("resnet", resnet_params("elsewhere"), out=folder, progress=False)  # --out wins over path
    assert leftovers(folder) == ["resnet18-IMAGENET1K_V1.pth", "resnet18-IMAGENET1K_V1.pth.json"]
    source.fc = torch.nn.Identity()
    assert_same_state(build_resnet(cfg), source)


def test_prefetch_resnet_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download([], fail=True))
    dest = tmp_path / "w" / "resnet18.pth"
    with pytest.raises(BackboneError, match=r"invalid hash value"):
        prefetch("resnet", resnet_params(dest), progress=False)
    assert leftovers(tmp_path) == []  # not even the folder it made for the file


class FakeHub:
    """model_info and snapshot_download of huggingface_hub: a tiny snapshot of one commit."""

    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, source: Wav2Vec2Model, repo_files: list[str], fail_after_config: bool = False):
        self.source, self.repo_files, self.fail_after_config = source, repo_files, fail_after_config
        self.calls: list[dict] = []

    def model_info(self, repo_id: str, revision: str | None = None, **kwargs) -> SimpleNamespace:
        self.calls.append({"model_info": repo_id, "revision": revision})
        return SimpleNamespace(
            sha=self.COMMIT, siblings=[SimpleNamespace(rfilename=f) for f in self.repo_files]
        )

    def snapshot_download(self, repo_id: str, *, revision: str, local_dir: Path, allow_patterns: list[str]):
        self.calls.append({"snapshot": repo_id, "revision": revision, "allow_patterns": allow_patterns})
        local_dir = Path(local_dir)
        self.source.config.save_pretrained(local_dir)
        if self.fail_after_config:
            raise ConnectionError("connection reset by peer")
        if "*.safetensors" in allow_patterns and "model.safetensors" in self.repo_files:
            self.source.save_pretrained(local_dir)  # model.safetensors
        (local_dir / ".cache" / "huggingface").mkdir(parents=True)
        (local_dir / ".cache" / "huggingface" / "config.json.metadata").write_text(self.COMMIT)
        return str(local_dir)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", self.model_info)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", self.snapshot_download)


def test_prefetch_wav2vec2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tiny_wav2vec2(seed=5)
    hub = FakeHub(
        source, ["config.json", "preprocessor_config.json", "pytorch_model.bin", "model.safetensors"]
    )
    hub.install(monkeypatch)
    dest = tmp_path / "weights" / "wav2vec2-base"
    params = w2v_params(dest)
    record = prefetch("wav2vec2_base", params, progress=False)
    assert hub.calls[0] == {"model_info": "facebook/wav2vec2-base", "revision": "main"}
    assert hub.calls[1]["revision"] == FakeHub.COMMIT  # the resolved commit is what is downloaded
    assert "pytorch_model.bin" not in hub.calls[1]["allow_patterns"]  # safetensors only, not both
    assert record == json.loads((dest / "prefetch.json").read_text())
    assert {k: record[k] for k in ("id", "revision", "commit")} == {
        "id": "facebook/wav2vec2-base",
        "revision": "main",
        "commit": FakeHub.COMMIT,
    }
    names = [f["name"] for f in record["files"]]
    assert names == ["config.json", "model.safetensors"]  # huggingface_hub's .cache is not kept
    for f in record["files"]:
        assert f["sha256"] == sha256(dest / f["name"]) and f["size"] == (dest / f["name"]).stat().st_size
    assert leftovers(dest) == ["config.json", "model.safetensors", "prefetch.json"]
    assert leftovers(dest.parent) == ["wav2vec2-base"]
    assert_same_state(build_wav2vec2(Wav2Vec2BackboneConfig.from_dict(params, key=W2V_KEY)), source)

    assert prefetch("wav2vec2_base", params, progress=False) == record  # recorded: no network
    assert len(hub.calls) == 2
    other = prefetch("wav2vec2_base", {**params, "revision": "v2"}, progress=False)  # asked for another
    assert other["revision"] == "v2" and len(hub.calls) == 4
    assert leftovers(dest.parent) == ["wav2vec2-base"]  # the old copy was replaced, nothing beside it


@pytest.mark.parametrize("fail_after_config", [True, False])  # connection lost / repository without weights
def test_prefetch_wav2vec2_failure_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_after_config: bool
) -> None:
    hub = FakeHub(tiny_wav2vec2(), ["config.json"], fail_after_config)
    hub.install(monkeypatch)
    dest = tmp_path / "weights" / "wav2vec2-base"
    with pytest.raises(BackboneError, match=rf"^{W2V_KEY}: .*nothing was written to {dest}") as err:
        prefetch("wav2vec2_base", w2v_params(dest), progress=False)
    why = (
        "ConnectionError: connection reset" if fail_after_config else "gave ['config.json'], not config.json"
    )
    assert why in str(err.value)
    assert len(hub.calls) == 2  # it did get as far as the download
    assert leftovers(tmp_path) == []  # not even the folder it made for the snapshot


# --- CLI ----------------------------------------------------------------------------------------------------


def test_cli_prefetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download([], b"weights"))
    dest = tmp_path / "resnet18.pth"
    params = json.dumps(resnet_params(dest))
    assert backbones.main(["prefetch", "--name", "resnet", "--params", params, "--quiet"]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line
    path, record = line.split(" ", 1)
    assert (
        path == str(dest)
        and json.loads(record)["files"][0]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    )

    bad = json.dumps(resnet_params(dest, init="imagenet"))
    assert backbones.main(["prefetch", "--name", "resnet", "--params", bad]) == 1
    assert capsys.readouterr().err.startswith("error: backbones.resnet.init: ")
    assert backbones.main(["prefetch", "--name", "resnet", "--params", "{not json"]) == 1
    assert capsys.readouterr().err.startswith("error: --params is not JSON")
