"""The backbone cost model: projection arithmetic by hand, and the measuring CLI on tiny random backbones."""

import json
import re

import pandas as pd
import pytest
import torch
import torchvision
import yaml
from torch.utils.flop_counter import FlopCounterMode

from avemotion import bench, paper, registry
from avemotion.config import load_config

RESNETS = ("face_resnet", "eyes_resnet", "mouth_resnet")
TINY_W2V = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "conv_dim": [8] * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}


@pytest.fixture
def demo_config(root) -> dict:
    return load_config(root / "config.yaml", root / "workflow/profiles/demo/demo.yaml")


def test_clips_per_fold_of_the_full_run(full_config):
    assert bench.clips_per_actor(full_config) == paper.CLIPS_PER_ACTOR == 60
    folds = bench.fold_clips(full_config)
    assert folds[0] == (1140, 300)  # test actors 2, 5, 14, 15, 16: 5 x 60; the other 19 actors train
    assert folds[4] == (1200, 240)  # 1, 4, 9, 22
    assert sum(te for _, te in folds.values()) == 1440  # every clip is tested exactly once
    assert sum(tr for tr, _ in folds.values()) == 4 * 1440  # and trained on in the four other folds


def test_clips_per_actor_follows_the_demo_overlay(demo_config):
    assert bench.clips_per_actor(demo_config) == 96 // 12 == 8
    # fold 0 tests actors 2, 5 and 14 of the demo's 12; fold 4 tests 1 and 4
    assert bench.fold_clips(demo_config)[0] == (9 * 8, 3 * 8)
    assert bench.fold_clips(demo_config)[4] == (10 * 8, 2 * 8)


def test_uneven_clip_count_is_refused(full_config):
    full_config["data"]["expected_clips"] = 1441
    with pytest.raises(bench.BenchError, match=r"data\.expected_clips"):
        bench.clips_per_actor(full_config)


def test_job_counts_of_the_full_run(full_config):
    # Table 1 rows: 8 emotions x 5 folds; Table 2 single-feature cells: 5 folds. Wav2Vec2-B is only in Table 1,
    # Wav2Vec2-L only in Table 2.
    # one job per fold: the 8 one-vs-rest models of a binary fold train in one process
    assert bench.finetune_job_counts(full_config) == {
        ("wav2vec2_base", "binary"): 5,
        ("wav2vec2_large", "multiclass"): 5,
        ("face_resnet", "binary"): 5,
        ("face_resnet", "multiclass"): 5,
        ("eyes_resnet", "binary"): 5,
        ("eyes_resnet", "multiclass"): 5,
        ("mouth_resnet", "binary"): 5,
        ("mouth_resnet", "multiclass"): 5,
    }
    # extract_frozen: one job per fold for each backbone with an 8-class model
    assert bench.frozen_job_counts(full_config) == dict.fromkeys(
        ["wav2vec2_large", "eyes_resnet", "mouth_resnet", "face_resnet"], 5
    )
    assert bench.finetune_job_counts(full_config, ["wav2vec2_base"]) == {("wav2vec2_base", "binary"): 5}
    assert bench.frozen_job_counts(full_config, ["wav2vec2_base"]) == {}


def test_jobs_follow_the_experiments(full_config):
    full_config["experiments"]["table1"] = ["lms", "face_resnet"]
    full_config["experiments"]["table2"] = ["lms"]
    assert bench.finetune_job_counts(full_config) == {("face_resnet", "binary"): 5}
    assert bench.frozen_job_counts(full_config) == {}


def test_job_hours_by_hand():
    # 60 epochs x 1140 clips at 10 clips/s = 6840 s, plus 300 test clips at 100 clips/s = 3 s
    assert bench.job_hours(60, 1140, 300, 10.0, 100.0) == pytest.approx(6843 / 3600)


def test_workloads_of_the_full_run(full_config):
    by_key = {(w.rule, w.feature, w.task): w for w in bench.workloads(full_config)}
    w = by_key["finetune_binary", "face_resnet", "binary"]
    # 5 fold jobs of 8 targets: 8 x 60 epochs x (4 folds x 1140 + 1200) train clips; 8 x 1440 test clips
    assert (w.jobs, w.epochs, w.train_clips, w.eval_clips) == (5, 60, 8 * 60 * 5760, 8 * 1440)
    assert w.train_clips == 2_764_800
    hours = (2_764_800 / 10 + 11_520 / 100) / 3600
    assert w.hours(10.0, 100.0) == pytest.approx(hours) == pytest.approx(76.832)
    per_job = sum(
        8 * bench.job_hours(60, tr, te, 10.0, 100.0) for tr, te in bench.fold_clips(full_config).values()
    )
    assert w.hours(10.0, 100.0) == pytest.approx(per_job)
    w = by_key["finetune_multiclass", "wav2vec2_large", "multiclass"]
    assert (w.jobs, w.epochs, w.train_clips, w.eval_clips) == (5, 100, 100 * 5760, 1440)
    w = by_key["extract_frozen", "eyes_resnet", "-"]
    assert (w.jobs, w.epochs, w.train_clips, w.eval_clips) == (5, 0, 0, 5 * 1440)
    assert w.hours(1.0, 7200.0) == pytest.approx(1 / 3600)
    assert len(by_key) == 12


def test_eval_cost_and_flop_rates():
    assert bench.eval_scale(registry.get("face_resnet")) == pytest.approx(20 / 88)
    assert bench.eval_scale(registry.get("wav2vec2_large")) == 1.0
    assert bench.flop_rate(1e9, 200.0) == pytest.approx(200_000.0)


def test_encoder_params_use_the_real_architectures(full_config, demo_config):
    large = bench.encoder_params(full_config, registry.get("wav2vec2_large"))
    assert large["init"] == "random" and large["mask_time_prob"] == 0.05
    assert large["config"] == bench.WAV2VEC2_LARGE and large["config"]["hidden_size"] == 1024
    assert bench.encoder_params(full_config, registry.get("wav2vec2_base"))["config"] == {}  # the defaults
    assert bench.encoder_params(full_config, registry.get("face_resnet"))["init"] == "random"
    assert full_config["backbones"]["resnet"]["init"] == "pretrained"  # the config is not modified
    # a random model with its own architecture (the demo's tiny ones) is measured as configured
    demo = bench.encoder_params(demo_config, registry.get("wav2vec2_large"))
    assert demo["config"]["hidden_size"] == 48


def test_per_feature_option_values():
    assert bench.per_feature(["wav2vec2_large=1"], "--cpu-batch", 2) == {None: 2, "wav2vec2_large": 1}
    assert bench.per_feature(["4", "face_resnet=8"], "--steps", 3) == {None: 4, "face_resnet": 8}
    with pytest.raises(bench.BenchError, match="'lms' is not a backbone feature"):
        bench.per_feature(["lms=2"], "--cpu-batch", 2)
    for bad in ("x", "0"):
        with pytest.raises(bench.BenchError, match="--steps"):
            bench.per_feature([bad], "--steps", 3)


def _measurement(
    feature: str, train_rate: float, frozen_rate: float, train_flops: float, frozen_flops: float
):
    return bench.Measurement(
        feature,
        "binary",
        "arch",
        "cpu",
        2,
        1,
        0,
        train_rate,
        frozen_rate,
        train_flops,
        frozen_flops,
        1,
        1,
        "rss",
    )


def test_cost_rows_and_totals_by_hand(full_config):
    m = {"face_resnet": _measurement("face_resnet", 10.0, 44.0, 4e11, 8.8e11)}
    rows = bench.cost_rows(full_config, m, gpu_tflops=100.0)
    assert [(r["rule"], r["feature"], r.get("task")) for r in rows] == [
        ("finetune_binary", "face_resnet", "binary"),
        ("finetune_multiclass", "face_resnet", "multiclass"),
        ("extract_frozen", "face_resnet", "-"),
        ("finetune_binary", "total", None),
        ("finetune_multiclass", "total", None),
        ("extract_frozen", "total", None),
        ("total", "", None),
    ]
    binary, multiclass, extract = rows[:3]
    # eval at 20 frames: 44 clips/s x 88/20 = 193.6 clips/s, 8.8e11 x 20/88 = 2e11 FLOPs per clip
    assert binary["eval_clips_per_s"] == pytest.approx(193.6)
    assert binary["eval_gflop_per_clip"] == pytest.approx(200.0)
    assert binary["measured_hours"] == pytest.approx((2_764_800 / 10 + 11_520 / 193.6) / 3600)
    # assumed GPU: 4e11 FLOPs at 1e14 FLOP/s = 250 clips/s train; 2e11 -> 500 clips/s eval
    assert binary["gpu_hours_assumed"] == pytest.approx((2_764_800 / 250 + 11_520 / 500) / 3600)
    assert multiclass["measured_hours"] == pytest.approx((60 * 5760 / 10 + 1440 / 193.6) / 3600)
    assert extract["measured_hours"] == pytest.approx(7200 / 44 / 3600)  # the full 88 frames
    assert extract["gpu_hours_assumed"] == pytest.approx(7200 / (1e14 / 8.8e11) / 3600)
    binary_total, multiclass_total, extract_total, total = rows[3:]
    assert (binary_total["jobs"], multiclass_total["jobs"], extract_total["jobs"], total["jobs"]) == (
        5,
        5,
        5,
        15,
    )
    assert binary_total["measured_hours"] == binary["measured_hours"]
    assert total["measured_hours"] == pytest.approx(
        binary["measured_hours"] + multiclass["measured_hours"] + extract["measured_hours"]
    )
    assert total["gpu_hours_assumed"] == pytest.approx(sum(r["gpu_hours_assumed"] for r in rows[:3]))


def _resnet18_flops(size: int) -> int:
    net = torchvision.models.resnet18()
    net.fc = torch.nn.Identity()
    net.eval()
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, size, size))
    return counter.get_total_flops()


def test_backbones_cli_on_tiny_backbones(root, tmp_path, capsys):
    overlay = {
        "patches": {"size": 32},
        "backbones": {
            "resnet": {"init": "random"},
            "wav2vec2_base": {"init": "random", "config": TINY_W2V},
            "wav2vec2_large": {"init": "random", "config": TINY_W2V},
        },
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(overlay))
    out = tmp_path / "bench"
    threads = torch.get_num_threads()  # the CLI sets it; restored below for the other tests
    argv = ["backbones", "--base", str(root / "config.yaml"), "--config", str(tmp_path / "tiny.yaml")]
    argv += ["--device", "cpu", "--cpu-batch", "1", "face_resnet=2", "--steps", "1", "--warmup", "0"]
    argv += ["--threads", "1", "--gpu-tflops", "50", "--out-dir", str(out)]
    try:
        assert bench.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "GPU h ASSUMED 50 TFLOP/s" in printed and "NOT MEASURED" in printed

    table = pd.read_csv(out / "backbones.csv")
    for column in (
        "rule",
        "feature",
        "task",
        "batch",
        "train_clips_per_s",
        "frozen_clips_per_s",
        "train_gflop_per_clip",
        "frozen_gflop_per_clip",
        "peak_train_mb",
        "jobs",
        "epochs",
        "measured_hours",
        "gpu_hours_assumed",
    ):
        assert column in table.columns
    assert len(table) == 12 + 4  # the full run's 12 workloads, three rule totals, the overall total
    rows = table[table["feature"].isin(bench.BACKBONE_FEATURES)].set_index(["rule", "feature", "task"])
    assert (rows[["train_clips_per_s", "frozen_clips_per_s", "train_gflop_per_clip"]] > 0).all().all()
    assert rows.loc[("finetune_binary", "eyes_resnet", "binary"), "batch"] == 1
    assert rows.loc[("finetune_binary", "face_resnet", "binary"), "batch"] == 2
    # frozen FLOPs: the trunk on 88 frames x its patches, counted independently on torchvision's resnet18
    per_image = _resnet18_flops(32) / 1e9
    for feature, views in (("face_resnet", 1), ("eyes_resnet", 2), ("mouth_resnet", 1)):
        row = rows.loc[("extract_frozen", feature, "-")]
        assert row["frozen_gflop_per_clip"] == pytest.approx(88 * views * per_image, rel=1e-4)
        assert row["measured_hours"] == pytest.approx(5 * 1440 / row["frozen_clips_per_s"] / 3600, rel=1e-4)
    # training counts the backward too: more than the forward of its 20 frames
    face = rows.loc[("finetune_binary", "face_resnet", "binary")]
    assert face["train_gflop_per_clip"] > 2 * 20 * per_image
    assert face["measured_hours"] == pytest.approx(
        (2_764_800 / face["train_clips_per_s"] + 11_520 / face["eval_clips_per_s"]) / 3600, rel=1e-4
    )
    total = table[table["rule"] == "total"].iloc[0]
    assert total["jobs"] == 4 * 5 + 4 * 5 + 4 * 5  # fine-tune binary and 8-class, extract: per fold

    info = json.loads((out / "backbones.json").read_text())
    assert info["machine"]["torch"] == torch.__version__ and info["machine"]["device"] == "cpu"
    assert info["settings"]["gpu_tflops_is_assumption"] is True
    assert {m["feature"] for m in info["measurements"]} == set(bench.BACKBONE_FEATURES)
    assert {m["architecture"] for m in info["measurements"] if m["feature"] in RESNETS} >= {
        "resnet18 32px x1",
        "resnet18 32px x2",
    }
    md = (out / "backbones.md").read_text()
    assert re.search(r"\| finetune_binary +\| wav2vec2_base", md) and "NOT MEASURED" in md
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_backbones_cli_reports_bad_options(root, capsys):
    assert bench.main(["backbones", "--base", str(root / "config.yaml"), "--cpu-batch", "lms=1"]) == 1
    assert "not a backbone feature" in capsys.readouterr().err
