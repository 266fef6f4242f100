"""The cost model (avemotion.bench_cost): TIM-Net rules by hand from a made-up throughput per shape."""

import json
import math

import pytest

from avemotion import bench_cost

# samples/s per shape (made up, distinct) and GFLOP per sample
RATES = {"88x24": 200.0, "88x780": 100.0, "88x179": 160.0, "88x35": 180.0, "88x6": 190.0, "88x512": 150.0,
         "146x1024": 50.0}  # fmt: skip


def timnet_json():
    return {
        "rows": [{"shape": s, "ours_samples_per_s": r, "gflop_per_sample": 0.2} for s, r in RATES.items()]
    }


def test_configuration_shapes():
    assert bench_cost.configuration_shapes("lms") == [(88, 24)]
    # fusion: a backbone branch reads its frozen features (Wav2Vec2-L: 146 frames of 1024)
    assert bench_cost.configuration_shapes("face_kpd+wav2vec2_large") == [(88, 780), (146, 1024)]


def test_binary_rule_by_hand(full_config):
    rows = {r["rule"]: r for r in bench_cost.timnet_rows(full_config, timnet_json(), gpu_tflops=10.0)}
    # 1440 clips; test folds of 5, 5, 5, 5, 4 actors (60 clips each): n_train 1140 x 4 + 1200 = 5760 over the
    # folds, n_test 1440. Per binary feature: 8 models x (epochs x 5760 + 1440) samples.
    epochs = {"lms": 100, "face_kpd": 100, "eyes_kpd": 100, "face_au": 40, "head_pose": 100}
    shape = {
        "lms": "88x24",
        "face_kpd": "88x780",
        "eyes_kpd": "88x179",
        "face_au": "88x35",
        "head_pose": "88x6",
    }
    # config.yaml trains 3 seeds of each (training.seeds): a job and its models per seed.
    samples = {f: 3 * 8 * (e * 5760 + 1440) for f, e in epochs.items()}
    hours = sum(samples[f] / RATES[shape[f]] for f in epochs) / 3600
    b = rows["train_binary"]
    assert b["jobs"] == 3 * 25 and b["models"] == 3 * 200
    assert b["cpu_hours"] == pytest.approx(hours)
    assert b["gpu_hours_assumed"] == pytest.approx(sum(samples.values()) * 0.2e9 / 10e12 / 3600)


def test_a_fusion_configuration_costs_the_sum_of_its_branches(full_config, monkeypatch):
    only = "face_kpd+lms"
    monkeypatch.setattr(
        bench_cost.avcfg, "training_jobs", lambda config: [(only, "multiclass", fold, 1) for fold in range(5)]
    )
    (row,) = bench_cost.timnet_rows(full_config, timnet_json(), gpu_tflops=10.0)
    samples = 100 * 5760 + 1440  # Table 3's LMS multimodal row: 100 epochs
    assert row["rule"] == "train_multiclass" and row["jobs"] == 5 and row["models"] == 5
    assert row["cpu_hours"] == pytest.approx(samples * (1 / 100.0 + 1 / 200.0) / 3600)


def compiling_fusion_row(config: dict, monkeypatch) -> dict:
    """The train_multiclass row of Face KPD + LMS alone (5 folds), its branches compiling in 40 and 30 s."""
    monkeypatch.setattr(
        bench_cost.avcfg,
        "training_jobs",
        lambda config: [("face_kpd+lms", "multiclass", k, 1) for k in range(5)],
    )
    timnet = timnet_json()
    for r in timnet["rows"]:
        r["ours_first_epoch_extra_s"] = {"88x780": 40.0, "88x24": 30.0}.get(r["shape"], 1000.0)
    (row,) = bench_cost.timnet_rows(config, timnet, gpu_tflops=10.0)
    return row


def test_each_timnet_of_a_job_pays_its_compile_once(full_config, monkeypatch):
    row = compiling_fusion_row(full_config, monkeypatch)
    samples = 100 * 5760 + 1440
    # 5 jobs, each compiling its two branches' TIM-Nets once: 5 x (40 + 30) s on top.
    assert row["jobs"] == 5
    assert row["cpu_hours"] == pytest.approx((samples * (1 / 100.0 + 1 / 200.0) + 5 * 70.0) / 3600)


def test_grouped_folds_are_one_job_that_compiles_once(full_config, monkeypatch):
    row = compiling_fusion_row(
        {**full_config, "jobs": {**full_config["jobs"], "group_folds": True}}, monkeypatch
    )
    samples = 100 * 5760 + 1440
    # one job for the 5 folds (5 models), its two TIM-Nets compiled once: 70 s on top, not 5 x 70 s
    assert row["jobs"] == 1 and row["models"] == 5
    assert row["cpu_hours"] == pytest.approx((samples * (1 / 100.0 + 1 / 200.0) + 70.0) / 3600)


def test_per_clip_rules_scale_the_recorded_run(full_config, tmp_path):
    (tmp_path / "extract_audio").mkdir()
    for i, s in enumerate((3.0, 5.0)):
        (tmp_path / "extract_audio" / f"a{i}.tsv").write_text(f"s\th:m:s\n{s}\t0:00:0{int(s)}\n")
    (row,) = bench_cost.per_clip_rows(full_config, tmp_path, run_clips=16)
    assert row["rule"] == "extract_audio" and row["cpu_hours"] == pytest.approx(8.0 / 16 * 1440 / 3600)


def test_cost_table_adds_start_up_and_renders_a_total(full_config, tmp_path):
    (tmp_path / "timnet.json").write_text(json.dumps(timnet_json()))
    startup = {"rows": [{"rule": "train_binary", "per_job_s": 36.0}]}
    rows = bench_cost.cost_table(full_config, tmp_path, tmp_path / "none", None, startup, 10.0)
    binary = next(r for r in rows if r["rule"] == "train_binary")
    assert binary["startup_hours"] == pytest.approx(3 * 25 * 36.0 / 3600)  # 3 seeds
    text = bench_cost.render(rows)
    total = sum(r["cpu_hours"] for r in rows)
    assert f"**{total:,.0f}**" in text and not math.isnan(total)


def test_grouped_configurations_count_one_job_and_one_start_up_per_group(full_config, tmp_path):
    """jobs.configurations_per_job 2 (one job per fold): Table 1's 5 engineered rows in 3 groups, so 15
    train_binary jobs instead of 25 per seed (3 seeds); the same models and training time; the groups' rules
    (named train_binary_group<i>) give the start-up per job, at their mean."""
    (tmp_path / "timnet.json").write_text(json.dumps(timnet_json()))
    alone = {r["rule"]: r for r in bench_cost.timnet_rows(full_config, timnet_json(), 10.0)}
    grouped_config = {**full_config, "jobs": {**full_config["jobs"], "configurations_per_job": 2}}
    startup = {
        "rows": [{"rule": f"train_binary_group{i}", "per_job_s": s} for i, s in ((1, 30.0), (2, 42.0))]
    }
    rows = bench_cost.cost_table(grouped_config, tmp_path, tmp_path / "none", None, startup, 10.0)
    binary = next(r for r in rows if r["rule"] == "train_binary")
    assert binary["jobs"] == 3 * 3 * 5 and binary["models"] == alone["train_binary"]["models"] == 3 * 200
    assert binary["startup_hours"] == pytest.approx(3 * 15 * 36.0 / 3600)
    assert binary["cpu_hours"] - binary["startup_hours"] == pytest.approx(alone["train_binary"]["cpu_hours"])


def test_seed_costs_say_what_each_more_seed_adds(full_config):
    rows = [
        {"rule": "train_binary", "cpu_hours": 30.0, "gpu_hours_assumed": 3.0},
        {"rule": "train_multiclass", "cpu_hours": 9.0, "gpu_hours_assumed": math.nan},
        {"rule": "finetune_binary", "cpu_hours": 100.0, "gpu_hours_assumed": 8.0},
        {"rule": "extract_audio", "cpu_hours": 1.0, "gpu_hours_assumed": math.nan},
    ]
    lines = bench_cost.seed_costs(full_config, rows)  # training.seeds: 3, finetune_seeds: 1
    assert lines[0].endswith("3 seed(s) (training.seeds) cost 39.0 CPU-hours / 3.0 GPU-hours (assumed); "
                             "each more seed adds 13.0 CPU-hours / 1.0 GPU-hours.")  # fmt: skip
    assert "1 seed(s) (training.finetune_seeds) cost 100.0 CPU-hours" in lines[1]
    assert "each more seed adds 100.0 CPU-hours / 8.0 GPU-hours" in lines[1]


def test_backbone_rows_scale_the_fine_tuning_to_the_configured_seeds():
    backbones = {
        "machine": {"device": "cpu"},
        "finetune_seeds": 1,
        "rows": [
            {"rule": "finetune_binary", "feature": "total", "jobs": 20, "measured_hours": 50.0,
             "gpu_hours_assumed": 4.0},
            {"rule": "extract_frozen", "feature": "total", "jobs": 20, "measured_hours": 2.0,
             "gpu_hours_assumed": 0.5},
        ],
    }  # fmt: skip
    rows = {r["rule"]: r for r in bench_cost.backbone_rows(backbones, finetune_seeds=3)}
    assert rows["finetune_binary"]["cpu_hours"] == 150.0 and rows["finetune_binary"]["jobs"] == 60
    assert rows["finetune_binary"]["gpu_hours_assumed"] == 12.0
    assert rows["extract_frozen"]["cpu_hours"] == 2.0  # one seed's models give the frozen features
