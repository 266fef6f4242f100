import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from avemotion import config as avcfg
from avemotion import metrics, paper, train
from avemotion.config import train_spec


def toy_table(actors=range(1, 25), per_class=1):
    rows = [
        {"clip": f"{a:02d}-{e}-{i}", "actor": a, "emotion": e, "label": paper.CLASSES.index(e)}
        for a in actors
        for e in paper.CLASSES
        for i in range(per_class)
    ]
    return pd.DataFrame(rows)


def separable_features(table, seed=0, frames=32, dims=8):
    """Class c raises feature dims c (mod dims) in every frame: learnable, with noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(table), frames, dims)).astype(np.float32)
    labels = table["label"].to_numpy()
    x[np.arange(len(table)), :, labels % dims] += 3.0
    return x


def small_spec(config, task, target, fold=0, **changes):
    spec = train_spec(config, "lms", task, target, fold)
    base = {
        "epochs": 15,
        "channels": 8,
        "scales": 3,
        "batch_size": 32,
        "learning_rate": 0.01,
        "device": "cpu",
        # The float32 reference path on every CPU; the bfloat16 and compiled paths have their own tests.
        "cpu_precision": "float32",
        "compile": False,
    }
    return dataclasses.replace(spec, **{**base, **changes})


def test_confusion_and_metrics_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    cm = metrics.confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert metrics.accuracy(cm) == pytest.approx(4 / 6)
    # F1: class0 2*2/(3+2)=0.8, class1 2*1/(2+2)=0.5, class2 2*1/(1+2)=2/3
    assert metrics.macro_f1(cm) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_balanced_weights_by_hand():
    w = train.balanced_weights(np.array([0, 0, 0, 1]), 2)
    # n / (2 n_c): 4/6 and 4/2; weighted class totals equal
    assert w.tolist() == pytest.approx([4 / 6, 2.0])
    with pytest.raises(train.TrainingError, match="a class has no training sample"):
        train.balanced_weights(np.array([0, 0]), 2)


def test_targets():
    table = toy_table(actors=[1])
    assert train.targets(table, "multiclass", "all").tolist() == list(range(8))
    assert train.targets(table, "binary", "happy").tolist() == [0, 0, 0, 0, 1, 0, 0, 0]


def test_standardizer_uses_training_statistics():
    x = np.stack([np.full((2, 3), 1.0), np.full((2, 3), 3.0)]).astype(np.float32)
    mean, std = train.standardizer(x)
    assert mean.tolist() == [2.0, 2.0, 2.0] and std.tolist() == [1.0, 1.0, 1.0]


def test_multiclass_learns_separable_data_and_never_sees_the_test_fold(full_config):
    table = toy_table(per_class=2)
    x = separable_features(table)
    spec = small_spec(full_config, "multiclass", "all", fold=3)
    result = train.train_job(spec, table, x)
    test_actors = set(result["predictions"]["actor"])
    assert test_actors == set(paper.FOLDS[3])
    assert result["metrics"]["n_test"] == 5 * 16 and result["metrics"]["n_train"] == 19 * 16
    assert result["metrics"]["accuracy"] > 0.9
    history = result["history"]
    best = result["metrics"]["best_epoch"]
    assert history["train_loss"].min() == history.loc[best - 1, "train_loss"]


@pytest.mark.parametrize(
    ("precision", "has_bf16", "compile", "expected"),
    [
        ("auto", True, True, ("time_major", True, True)),
        ("auto", True, False, ("time_major", True, False)),
        ("auto", False, True, ("conv", False, False)),  # float32: compiling gains nothing, not done
        ("float32", True, True, ("conv", False, False)),
        ("bfloat16", False, True, ("time_major", True, True)),  # forced: emulated where not native
    ],
)
def test_fast_path_on_the_cpu(full_config, monkeypatch, precision, has_bf16, compile, expected):
    monkeypatch.setattr(train, "cpu_has_bfloat16", lambda: has_bf16)
    spec = small_spec(full_config, "multiclass", "all", cpu_precision=precision, compile=compile)
    fast = train.fast_path(spec, torch.device("cpu"))
    assert (fast.layout, fast.cpu_bfloat16, fast.compile) == expected
    assert fast.precision == ("bfloat16" if expected[1] else "float32")
    # CUDA keeps the convolution layout and its own mixed-precision switch.
    assert train.fast_path(spec, torch.device("cuda")) == train.FastPath("conv", False, False)


def test_without_a_cpp_compiler_the_job_runs_eager_and_says_so(full_config, monkeypatch, capsys):
    monkeypatch.setattr(train, "cpu_has_bfloat16", lambda: True)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CXX", raising=False)
    assert not train.has_cpp_compiler()
    spec = small_spec(full_config, "multiclass", "all", cpu_precision="auto", compile=True)
    cfg = train.timnet_config(spec, 6)
    model = train.build_timnet_model(spec, [cfg], 8, torch.device("cpu"))
    assert model.encoder.layout == "time_major" and model.encoder._compiled is None
    assert "no C++ compiler" in capsys.readouterr().err
    monkeypatch.setenv("CXX", "/bin/true")
    assert train.has_cpp_compiler()


def test_the_config_gives_fast_paths_to_feature_arrays_only(full_config):
    assert full_config["training"]["cpu_precision"] == "auto" and full_config["training"]["compile"] is True
    lms = train_spec(full_config, "lms", "multiclass", "all", 0)
    fusion = train_spec(full_config, "face_kpd+wav2vec2_large", "multiclass", "all", 0)
    resnet = train_spec(full_config, "face_resnet", "multiclass", "all", 0)
    assert (lms.cpu_precision, lms.compile) == (fusion.cpu_precision, fusion.compile) == ("auto", True)
    assert (resnet.cpu_precision, resnet.compile) == ("float32", False)  # fine-tuning: float32, eager


def test_bfloat16_training_learns_as_float32_does_and_says_how_it_ran(full_config):
    table = toy_table(per_class=2)
    x = separable_features(table)
    results = {}
    for precision in ("float32", "bfloat16"):
        spec = small_spec(full_config, "multiclass", "all", fold=1, cpu_precision=precision)
        results[precision] = train.train_job(spec, table, x)
    f32, bf16 = results["float32"]["metrics"], results["bfloat16"]["metrics"]
    assert (f32["precision"], f32["layout"], f32["compiled"]) == ("float32", "conv", False)
    assert (bf16["precision"], bf16["layout"], bf16["compiled"]) == ("bfloat16", "time_major", False)
    assert f32["accuracy"] > 0.9 and bf16["accuracy"] > 0.9
    # The same run up to bfloat16 rounding: the first epoch's loss agrees to about 1 %, not bitwise.
    first = [results[p]["history"]["train_loss"].iloc[0] for p in ("float32", "bfloat16")]
    assert first[0] != first[1] and first[1] == pytest.approx(first[0], rel=2e-2)
    # The checkpoint is a plain float32 state of the same keys, whatever the layout.
    a, b = (results[p]["checkpoint"]["state_dict"] for p in ("float32", "bfloat16"))
    assert a.keys() == b.keys() and all(v.dtype == a[k].dtype for k, v in b.items())


def test_test_features_do_not_influence_training(full_config):
    """Changing the test fold's features changes nothing but its predictions (no leak via standardisation)."""
    table = toy_table()
    x = separable_features(table)
    spec = small_spec(full_config, "binary", "angry", epochs=3)
    a = train.train_job(spec, table, x)
    x2 = x.copy()
    x2[table["actor"].isin(spec.test_actors).to_numpy()] *= 100
    b = train.train_job(spec, table, x2)
    pd.testing.assert_frame_equal(
        a["history"].drop(columns="epoch_seconds"), b["history"].drop(columns="epoch_seconds")
    )
    for k, v in a["checkpoint"]["state_dict"].items():
        assert torch.equal(v, b["checkpoint"]["state_dict"][k])


def test_binary_is_deterministic_and_reports_macro_f1(full_config):
    table = toy_table(per_class=2)
    x = separable_features(table)
    spec = small_spec(full_config, "binary", "sad")
    a, b = train.train_job(spec, table, x), train.train_job(spec, table, x)
    assert a["metrics"] == b["metrics"]
    pd.testing.assert_frame_equal(a["predictions"], b["predictions"])
    pred = a["predictions"]
    cm = train.confusion_matrix(pred["true"].to_numpy(), pred["pred"].to_numpy(), 2)
    assert a["metrics"]["macro_f1"] == pytest.approx(train.macro_f1(cm))
    assert a["metrics"]["macro_f1"] > 0.8
    assert list(pred.columns) == ["clip", "actor", "true", "pred", "p_rest", "p_sad"]
    assert np.allclose(pred["p_rest"] + pred["p_sad"], 1.0)


def test_non_finite_loss_stops_with_a_clear_error(full_config):
    table = toy_table()
    x = separable_features(table)
    x[0, 0, 0] = np.nan
    spec = small_spec(full_config, "multiclass", "all", epochs=2, standardize=False)
    with pytest.raises(train.NonFiniteLoss, match=r"\(nan\) in lms multiclass fold 0 at epoch 1, step") as e:
        train.train_job(spec, table, x)
    found = e.value.diagnostic
    assert "rebuild the features of lms" in str(e.value)
    assert found["inputs_non_finite"] == [1] and found["parameters_non_finite"] == []
    assert found["history"] == [] and found["epoch"] == 1


def test_a_diverging_job_saves_its_diagnostic_and_writes_nothing(full_config, tmp_path, capsys):
    """A learning rate of 1e30 makes the loss of the second step infinite or NaN (the first step's Adam
    update moved the weights by about 1e30): the job stops with a message naming the key to change, writes no
    output, and leaves a diagnostic that names the batch's clips; a later good run removes it."""
    inputs = _cli_inputs(tmp_path)
    spec = small_spec(full_config, "multiclass", "all", epochs=2, learning_rate=1e30, batch_size=16)
    out, diagnostic = tmp_path / "out", tmp_path / "logs" / "fold0.log.nonfinite.json"
    argv = [*inputs, "--out", str(out), "--diagnostic", str(diagnostic)]
    assert train.main([*argv, "--spec", spec.to_json()]) == 1
    err = capsys.readouterr().err
    assert "training.hyperparameters.lms.multiclass.learning_rate" in err and str(diagnostic) in err
    assert not out.exists()
    saved = json.loads(diagnostic.read_text())
    assert saved["job"]["learning_rate"] == 1e30 and saved["job"]["fold"] == 0
    assert saved["inputs_non_finite"] == [0] and saved["parameters_max_abs"] > 1e20  # blown up by Adam
    assert saved["step"] >= 2 and len(saved["batch_clips"]) == len(saved["batch_rows"]) == 16
    test_actors = set(spec.test_actors)
    assert all(int(c[:2]) not in test_actors for c in saved["batch_clips"])  # training clips only
    good = dataclasses.replace(spec, learning_rate=0.01)
    assert train.main([*argv, "--spec", good.to_json()]) == 0
    assert not diagnostic.exists()


def test_cli_writes_outputs_that_load_with_weights_only(full_config, tmp_path):
    table = toy_table()
    table["path"] = table["clip"] + ".mp4"
    x = separable_features(table, frames=88, dims=24)
    clips, feats, index, manifest = (tmp_path / n for n in ("clips.csv", "f.npy", "index.csv", "m.json"))
    table.to_csv(clips, index=False)
    # features stored in reverse order: the index maps clips to rows
    np.save(feats, x[::-1].copy())
    pd.DataFrame({"clip": table["clip"], "row": np.arange(len(table))[::-1]}).to_csv(index, index=False)
    manifest.write_text(json.dumps({"sha256": "0" * 64}))
    spec = small_spec(full_config, "multiclass", "all", epochs=2)
    out = tmp_path / "out"
    argv = ["--spec", spec.to_json(), "--features", str(feats), "--index", str(index), "--clips", str(clips)]
    assert train.main([*argv, "--manifest", str(manifest), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(avcfg.JOB_OUTPUTS)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metric"] == "accuracy" and metrics["value"] == metrics["accuracy"]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["classes"] == list(paper.CLASSES) and ckpt["spec"]["fold"] == 0
    cm = pd.read_csv(out / "confusion.csv", index_col=0)
    assert cm.to_numpy().sum() == metrics["n_test"]
    assert len(pd.read_csv(out / "history.csv")) == 2


def _cli_inputs(tmp_path):
    table = toy_table()
    table["path"] = table["clip"] + ".mp4"
    paths = [tmp_path / n for n in ("clips.csv", "f.npy", "index.csv", "m.json")]
    table.to_csv(paths[0], index=False)
    np.save(paths[1], separable_features(table, frames=16, dims=8))
    pd.DataFrame({"clip": table["clip"], "row": np.arange(len(table))}).to_csv(paths[2], index=False)
    paths[3].write_text(json.dumps({"sha256": "0" * 64}))
    clips, feats, index, manifest = map(str, paths)
    return ["--features", feats, "--index", index, "--clips", clips, "--manifest", manifest]


def test_one_process_trains_several_fold_jobs_as_separate_processes_would(full_config, tmp_path):
    inputs = _cli_inputs(tmp_path)
    specs = [small_spec(full_config, "binary", t, epochs=3).to_json() for t in ("angry", "sad")]
    together = [tmp_path / "together" / t for t in ("angry", "sad")]
    assert train.main([*inputs, "--spec", *specs, "--out", *map(str, together)]) == 0
    for spec, out in zip(specs, together, strict=True):
        alone = tmp_path / "alone" / out.name
        assert train.main([*inputs, "--spec", spec, "--out", str(alone)]) == 0
        for name in ("metrics.json", "predictions.csv", "history.csv", "confusion.csv"):
            if name == "history.csv":  # its epoch_seconds column is a timing
                a, b = (pd.read_csv(d / name).drop(columns="epoch_seconds") for d in (out, alone))
                pd.testing.assert_frame_equal(a, b)
            else:
                assert (out / name).read_text() == (alone / name).read_text(), name
        a, b = (torch.load(d / "checkpoint.pt", weights_only=True)["state_dict"] for d in (out, alone))
        assert all(torch.equal(a[k], b[k]) for k in a)
    # the two targets are different models
    assert (together[0] / "predictions.csv").read_text() != (together[1] / "predictions.csv").read_text()


def _second_array(tmp_path, seed):
    """Another features.npy/index.csv pair of the _cli_inputs clips (other values, same layout)."""
    table = pd.read_csv(tmp_path / "clips.csv")
    feats, index = tmp_path / f"f{seed}.npy", tmp_path / f"index{seed}.csv"
    np.save(feats, separable_features(table, seed=seed, frames=16, dims=8))
    pd.DataFrame({"clip": table["clip"], "row": np.arange(len(table))}).to_csv(index, index=False)
    return str(feats), str(index)


def test_a_job_of_grouped_folds_trains_each_fold_on_its_own_arrays_as_a_fold_job_would(full_config, tmp_path):
    """jobs.group_folds: one process, folds 0 and 1 in turn, each on its own per-fold array (one --features
    per --spec), gives what two per-fold jobs give."""
    inputs = _cli_inputs(tmp_path)
    clips, manifest = inputs[inputs.index("--clips") + 1], inputs[inputs.index("--manifest") + 1]
    common = ["--clips", clips, "--manifest", manifest]
    arrays = {0: _second_array(tmp_path, 1), 1: _second_array(tmp_path, 2)}
    specs = {k: small_spec(full_config, "multiclass", "all", fold=k, epochs=2).to_json() for k in (0, 1)}
    together = [tmp_path / "together" / f"fold{k}" for k in (0, 1)]
    argv = [*common, "--spec", specs[0], specs[1], "--out", *map(str, together)]
    argv += ["--features", arrays[0][0], arrays[1][0], "--index", arrays[0][1], arrays[1][1]]
    assert train.main(argv) == 0
    for k, out in zip((0, 1), together, strict=True):
        alone = tmp_path / "alone" / out.name
        one = ["--features", arrays[k][0], "--index", arrays[k][1]]
        assert train.main([*common, *one, "--spec", specs[k], "--out", str(alone)]) == 0
        assert (out / "predictions.csv").read_text() == (alone / "predictions.csv").read_text()
        assert json.loads((out / "metrics.json").read_text())["fold"] == k
    # the two folds are different models on different arrays
    assert (together[0] / "predictions.csv").read_text() != (together[1] / "predictions.csv").read_text()


def test_the_jobs_of_one_fold_must_read_the_same_arrays(full_config, tmp_path, capsys):
    inputs = _cli_inputs(tmp_path)
    clips, manifest = inputs[inputs.index("--clips") + 1], inputs[inputs.index("--manifest") + 1]
    (f1, i1), (f2, i2) = _second_array(tmp_path, 1), _second_array(tmp_path, 2)
    specs = [small_spec(full_config, "binary", t, epochs=1).to_json() for t in ("angry", "sad")]
    outs = [str(tmp_path / "out" / t) for t in ("angry", "sad")]
    argv = ["--clips", clips, "--manifest", manifest, "--spec", *specs, "--out", *outs]
    assert train.main([*argv, "--features", f1, f2, "--index", i1, i2]) == 1
    assert "fold 0: its jobs name different --features" in capsys.readouterr().err
    assert train.main([*argv, "--features", f1, f2, f1, "--index", i1, i2, i1]) == 1
    assert "lms: 3 --features and 3 --index for 2 jobs of 1 modality(ies) each" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_each_spec_needs_its_output_folder(full_config, tmp_path, capsys):
    inputs = _cli_inputs(tmp_path)
    specs = [small_spec(full_config, "binary", t, epochs=1).to_json() for t in ("angry", "sad")]
    assert train.main([*inputs, "--spec", *specs, "--out", str(tmp_path / "out")]) == 1
    assert "2 --spec values but 1 --out folders" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_features_index_must_cover_the_clips(tmp_path):
    table = toy_table(actors=[1])
    np.save(tmp_path / "f.npy", np.zeros((7, 4, 2), np.float32))
    pd.DataFrame({"clip": table["clip"][:7], "row": range(7)}).to_csv(tmp_path / "i.csv", index=False)
    with pytest.raises(train.TrainingError, match="no row for 1 clips"):
        train.load_features(tmp_path / "f.npy", tmp_path / "i.csv", table)


def test_run_label():
    from avemotion.config import TrainSpec

    fields = {f.name: 0 for f in dataclasses.fields(TrainSpec)}
    spec = TrainSpec(
        **{**fields, "configuration": "lms", "task": "multiclass", "target": "all", "fold": 3, "seed": 2}
    )
    assert train.run_label(spec) == (
        "table2/lms/multiclass/all/seed2/fold3",
        "Table 2 / LMS / seed 2 / fold 3",
    )
    spec = dataclasses.replace(spec, task="binary", target="angry")
    assert train.run_label(spec)[1] == "Table 1 / LMS / angry / seed 2 / fold 3"


def fusion_spec(config, **changes):
    spec = train_spec(config, "face_kpd+lms", "multiclass", "all", 0)
    branches = tuple({**b, "scales": 3, "channels": 8} for b in spec.branches)
    base = {"epochs": 15, "batch_size": 32, "learning_rate": 0.01, "device": "cpu", "fusion_hidden": (16, 8)}
    return dataclasses.replace(spec, branches=branches, **{**base, **changes})


def test_fusion_learns_from_either_branch_and_standardises_each_with_training_statistics(full_config):
    table = toy_table(per_class=2)
    face = separable_features(table, seed=1, frames=32, dims=12)  # the class signal
    speech = np.random.default_rng(2).normal(size=(len(table), 20, 5)).astype(np.float32) * 50 + 7  # noise
    spec = fusion_spec(full_config)
    result = train.train_job(spec, table, [face, speech])
    test = table["actor"].isin(spec.test_actors).to_numpy()
    assert result["metrics"]["accuracy"] > 0.8 and result["metrics"]["n_test"] == test.sum()
    ck = result["checkpoint"]
    assert [b["in_features"] for b in ck["model_config"]["branches"]] == [12, 5]
    assert ck["model_config"]["hidden"] == [16, 8]
    # per-branch statistics of the training clips only
    np.testing.assert_allclose(ck["mean"][1].numpy(), speech[~test].mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(ck["std"][0].numpy(), face[~test].std(axis=(0, 1)), rtol=1e-4)
    # the signal can sit in either branch
    noise = np.random.default_rng(4).normal(size=face.shape).astype(np.float32)
    swapped = train.train_job(spec, table, [noise, separable_features(table, seed=5, frames=20, dims=8)])
    assert swapped["metrics"]["accuracy"] > 0.8


def test_fusion_of_unrelated_inputs_stays_at_chance(full_config):
    """The check above can fail: with no signal in any branch the model cannot beat chance by much."""
    table = toy_table(per_class=2)
    rng = np.random.default_rng(3)
    noise = [rng.normal(size=(len(table), 24, 6)).astype(np.float32) for _ in range(2)]
    result = train.train_job(fusion_spec(full_config), table, noise)
    assert result["metrics"]["accuracy"] < 0.5


def test_fusion_cli_reads_one_array_per_branch(full_config, tmp_path):
    table = toy_table(per_class=2)
    clips, manifest = tmp_path / "clips.csv", tmp_path / "manifest.json"
    table.to_csv(clips, index=False)
    manifest.write_text(json.dumps({"sha256": "x"}))
    args = []
    for name, x in (("a", separable_features(table, frames=16, dims=4)), ("b", separable_features(table))):
        order = np.random.default_rng(0).permutation(len(table))  # rows in another order than the table
        np.save(tmp_path / f"{name}.npy", x[order])
        pd.DataFrame({"clip": table["clip"].to_numpy()[order], "row": range(len(table))}).to_csv(
            tmp_path / f"{name}.csv", index=False
        )
        args.append(name)
    spec = fusion_spec(full_config, epochs=3)
    out = tmp_path / "out"
    argv = ["--spec", spec.to_json(), "--clips", str(clips), "--manifest", str(manifest), "--out", str(out)]
    one = ["--features", str(tmp_path / "a.npy"), "--index", str(tmp_path / "a.csv")]
    assert train.main([*argv, *one]) == 1 and not out.exists()  # one input for two branches
    both = ["--features", *(str(tmp_path / f"{n}.npy") for n in args)]
    both += ["--index", *(str(tmp_path / f"{n}.csv") for n in args)]
    assert train.main([*argv, *both]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["configuration"] == "face_kpd+lms" and len(metrics["branches"]) == 2
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert len(ck["mean"]) == 2 and ck["model_config"]["branches"][0]["in_features"] == 4


def test_a_job_of_several_configurations_trains_each_as_its_own_job_would(full_config, tmp_path):
    """jobs.configurations_per_job: LMS (one branch, two folds) and Face KPD + LMS (two branches) in one
    process, one --features per branch of each --spec in --spec order, give what one job each gives."""
    inputs = _cli_inputs(tmp_path)
    clips, manifest = inputs[inputs.index("--clips") + 1], inputs[inputs.index("--manifest") + 1]
    common = ["--clips", clips, "--manifest", manifest]
    lms, face = _second_array(tmp_path, 1), _second_array(tmp_path, 2)
    jobs = [  # (spec, its arrays)
        (small_spec(full_config, "multiclass", "all", fold=0, epochs=2), [lms]),
        (small_spec(full_config, "multiclass", "all", fold=1, epochs=2), [lms]),
        (fusion_spec(full_config, epochs=2), [face, lms]),
    ]
    together = [tmp_path / "together" / f"{s.configuration}-{s.fold}" for s, _ in jobs]
    argv = [*common, "--spec", *(s.to_json() for s, _ in jobs), "--out", *map(str, together)]
    argv += ["--features", *(f for _, arrays in jobs for f, _ in arrays)]
    argv += ["--index", *(i for _, arrays in jobs for _, i in arrays)]
    assert train.main(argv) == 0
    for (spec, arrays), out in zip(jobs, together, strict=True):
        alone = tmp_path / "alone" / out.name
        one = ["--features", *(f for f, _ in arrays), "--index", *(i for _, i in arrays)]
        assert train.main([*common, *one, "--spec", spec.to_json(), "--out", str(alone)]) == 0
        for name in ("metrics.json", "predictions.csv", "confusion.csv"):
            assert (out / name).read_text() == (alone / name).read_text(), (out.name, name)
        a, b = (torch.load(d / "checkpoint.pt", weights_only=True)["state_dict"] for d in (out, alone))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads((out / "metrics.json").read_text()) for out in together]
    assert [(m["configuration"], m["fold"]) for m in metrics] == [("lms", 0), ("lms", 1), ("face_kpd+lms", 0)]
    # a branch too few for the fusion: refused before anything trains
    short = [*common, "--spec", *(s.to_json() for s, _ in jobs), "--out", *map(str, together)]
    short += ["--features", lms[0], lms[0], face[0], "--index", lms[1], lms[1], face[1]]
    assert train.main(short) == 1
