"""Stacked one-vs-rest training (avemotion.stacked) against the same models trained one at a time."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from test_train import _cli_inputs, separable_features, small_spec, toy_table

from avemotion import paper, runs, stacked, train
from avemotion.models import SharedDropout1d, TIMNetClassifier, TIMNetConfig, count_parameters

CFG = TIMNetConfig(in_features=5, channels=6, scales=3, dropout=0.3)


def separate_models(k, seed=3):
    models = []
    for _ in range(k):
        torch.manual_seed(seed)
        models.append(TIMNetClassifier(CFG, 1))
    return models


def perturbed(models):
    """The same-seed models made different (as after training), so a mix-up of models would show."""
    for i, m in enumerate(models):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01 * (i + 1) * torch.randn_like(p))
    return models


def test_state_round_trip_and_parameter_count():
    models = perturbed(separate_models(3))
    s = stacked.StackedTIMNetClassifier.from_models(models)
    assert count_parameters(s) == sum(count_parameters(m) for m in models)
    for k, m in enumerate(models):
        got, want = s.model_state(k), m.state_dict()
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), key


def test_building_the_stack_leaves_the_global_generator_alone():
    models = separate_models(2)
    state = torch.get_rng_state()
    stacked.StackedTIMNetClassifier.from_models(models)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_outputs_and_gradients_equal_separate_models(mode):
    models = perturbed(separate_models(3))
    s = stacked.StackedTIMNetClassifier.from_models(models)
    x = torch.randn(4, 12, 5)
    ys = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0]])
    for m in [s, *models]:
        m.train(mode == "train")
    torch.manual_seed(11)  # the dropout masks: every model alone draws from the same generator state
    out = s(x)  # (B, K, 1)
    F.binary_cross_entropy_with_logits(out[:, :, 0].T, ys, reduction="none").mean(dim=1).sum().backward()
    for k, m in enumerate(models):
        torch.manual_seed(11)
        alone = m(x)
        F.binary_cross_entropy_with_logits(alone[:, 0], ys[k]).backward()
        torch.testing.assert_close(out[:, k], alone, rtol=1e-5, atol=1e-6)
        grads = {n: p.grad for n, p in m.named_parameters()}
        stacked_grads = stacked.unstack_state({n: p.grad for n, p in s.named_parameters()}, k, 3)
        for name, g in grads.items():
            torch.testing.assert_close(stacked_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)
    if mode == "train":  # dropout was on: a different generator state would give other outputs
        torch.manual_seed(12)
        assert not torch.allclose(s(x), out)


def test_shared_dropout_draws_what_dropout1d_draws():
    h = torch.randn(5, 2 * 7, 9)
    drop = SharedDropout1d(0.4, models=2).train()
    torch.manual_seed(0)
    got = drop(h)
    for k in range(2):
        torch.manual_seed(0)
        want = torch.nn.Dropout1d(0.4).train()(h[:, 7 * k : 7 * (k + 1)])
        assert torch.equal(got[:, 7 * k : 7 * (k + 1)], want)


def test_stackable(full_config):
    config = full_config
    specs = [small_spec(config, "binary", e) for e in paper.CLASSES]
    assert stacked.stackable(specs)
    assert not stacked.stackable(specs[:1])
    assert not stacked.stackable([*specs[:2], dataclasses.replace(specs[2], learning_rate=0.5)])
    assert not stacked.stackable([*specs[:2], small_spec(config, "binary", "sad", fold=1)])
    assert not stacked.stackable([small_spec(config, "multiclass", "all")] * 2)


def lags_rounding(key):
    """A block conv's bias feeds BatchNorm, which subtracts the batch mean: its gradient is zero up to
    rounding, and Adam turns rounding noise into lr-sized steps of either sign. In training mode it never
    reaches the output; in eval mode only bias - running_mean does, and the running mean (momentum 0.01)
    follows the drift slowly. So these (and the running means) differ by up to about lr between any two
    implementations of the same model, this one and the plain one alike."""
    return (".convs." in key and key.endswith(".bias")) or key.endswith("running_mean")


def test_stacked_training_equals_separate_training(full_config):
    """Three one-vs-rest jobs of a fold: the stack gives each what it gives alone (histories, best epoch,
    checkpoint, test probabilities), up to float rounding."""
    table = toy_table(per_class=2)
    x = separable_features(table, frames=16, dims=6)
    targets = ["angry", "calm", "sad"]
    specs = [small_spec(full_config, "binary", t, epochs=6, channels=4, dropout=0.2) for t in targets]
    together = stacked.train_jobs(specs, table, x)
    for spec, got in zip(specs, together, strict=True):
        want = train.train_job(spec, table, x)
        assert got["metrics"]["best_epoch"] == want["metrics"]["best_epoch"]
        np.testing.assert_allclose(got["history"]["train_loss"], want["history"]["train_loss"], rtol=1e-6)
        np.testing.assert_array_equal(got["history"]["train_accuracy"], want["history"]["train_accuracy"])
        got_state, want_state = got["checkpoint"]["state_dict"], want["checkpoint"]["state_dict"]
        assert got_state.keys() == want_state.keys()
        for key in want_state:
            tol = (
                {"rtol": 0, "atol": 3 * spec.learning_rate}
                if lags_rounding(key)
                else {"rtol": 1e-4, "atol": 1e-5}
            )
            torch.testing.assert_close(got_state[key], want_state[key], **tol, msg=key)
        p = f"p_{spec.target}"
        np.testing.assert_allclose(got["predictions"][p], want["predictions"][p], atol=2e-3)
        assert got["checkpoint"].keys() == want["checkpoint"].keys()
        assert got["checkpoint"]["spec"] == want["checkpoint"]["spec"]
        torch.testing.assert_close(got["checkpoint"]["mean"], want["checkpoint"]["mean"])
    # The targets differ: the stack did not train one model three times.
    assert (
        len({tuple(r["predictions"][f"p_{t}"].round(4)) for r, t in zip(together, targets, strict=True)}) == 3
    )


def test_stacked_training_stops_on_a_non_finite_loss_naming_the_target(full_config):
    table = toy_table()
    x = separable_features(table, frames=16, dims=6)
    x[:, 0, 0] = np.nan
    specs = [small_spec(full_config, "binary", t, epochs=2, standardize=False) for t in ("angry", "sad")]
    with pytest.raises(train.NonFiniteLoss, match=r"\(nan, nan\) in lms binary fold 0 \(angry, sad\)") as e:
        stacked.train_jobs(specs, table, x)
    assert "rebuild the features of lms" in str(e.value)
    found = e.value.diagnostic
    assert found["targets"] == ["angry", "sad"] and found["loss"] == ["nan", "nan"]
    assert (found["epoch"], found["step"], found["history"]) == (1, 1, {"angry": [], "sad": []})
    assert found["inputs_non_finite"] == [len(found["batch_rows"])]  # frame 0, dim 0 of every clip


def test_cli_trains_a_folds_targets_stacked_with_one_mlflow_run_each(full_config, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = runs.init_store(uri, [runs.experiment_name("t", "binary")], tmp_path / "artifacts")
    inputs = [*_cli_inputs(tmp_path), "--tracking-uri", uri, "--experiment-prefix", "t"]
    targets = ("angry", "calm", "sad")
    specs = [small_spec(full_config, "binary", t, epochs=2, stack_targets="always") for t in targets]
    outs = [tmp_path / "out" / t for t in targets]
    assert train.main([*inputs, "--spec", *(s.to_json() for s in specs), "--out", *map(str, outs)]) == 0
    found = MlflowClient(uri).search_runs(list(ids.values()))
    assert len(found) == 3
    for spec, out in zip(specs, outs, strict=True):
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["stacked_models"] == 3 and metrics["target"] == spec.target
        (run,) = [r for r in found if r.data.tags["target"] == spec.target]
        assert run.info.status == "FINISHED" and run.data.params["stacked_models"] == "3"
        assert run.data.metrics["test_macro_f1"] == pytest.approx(metrics["macro_f1"])
    # "never" trains them one at a time
    never = [dataclasses.replace(s, stack_targets="never").to_json() for s in specs[:2]]
    assert train.main([*inputs, "--spec", *never, "--out", *map(str, outs[:2])]) == 0
    assert json.loads((outs[0] / "metrics.json").read_text())["stacked_models"] == 1


def test_a_job_of_grouped_folds_stacks_each_folds_targets_apart(full_config, tmp_path):
    """jobs.group_folds: 2 folds x 2 targets in one process train as two stacks of 2, one per fold, each
    fold's models as a per-fold job trains them."""
    inputs = _cli_inputs(tmp_path)
    keys = [(k, t) for k in (0, 1) for t in ("angry", "sad")]
    specs = [
        small_spec(full_config, "binary", t, fold=k, epochs=2, stack_targets="always").to_json()
        for k, t in keys
    ]
    outs = [tmp_path / "together" / f"{t}{k}" for k, t in keys]
    assert train.main([*inputs, "--spec", *specs, "--out", *map(str, outs)]) == 0
    alone = [tmp_path / "alone" / o.name for o in outs]
    for k in (0, 1):
        mine = [i for i, (fold, _) in enumerate(keys) if fold == k]
        argv = ["--spec", *(specs[i] for i in mine), "--out", *(str(alone[i]) for i in mine)]
        assert train.main([*inputs, *argv]) == 0
    for out, single in zip(outs, alone, strict=True):
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["stacked_models"] == 2
        assert (out / "predictions.csv").read_text() == (single / "predictions.csv").read_text()


def test_cli_stack_failure_fails_every_run_and_writes_nothing(full_config, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = runs.init_store(uri, [runs.experiment_name("t", "binary")], tmp_path / "artifacts")
    inputs = [*_cli_inputs(tmp_path), "--tracking-uri", uri, "--experiment-prefix", "t"]
    specs = [
        small_spec(full_config, "binary", t, epochs=2, stack_targets="always", learning_rate=1e30)
        for t in ("angry", "sad")
    ]
    outs = [tmp_path / "out" / t for t in ("angry", "sad")]
    diagnostic = tmp_path / "logs" / "job.log.nonfinite.json"
    argv = ["--spec", *(s.to_json() for s in specs), "--out", *map(str, outs)]
    assert train.main([*inputs, *argv, "--diagnostic", str(diagnostic)]) == 1
    err = capsys.readouterr().err
    assert "non-finite training loss" in err and f"(diagnostic: {diagnostic})" in err
    saved = json.loads(diagnostic.read_text())
    assert saved["targets"] == ["angry", "sad"] and saved["inputs_non_finite"] == [0]
    assert not (tmp_path / "out").exists()
    statuses = [r.info.status for r in MlflowClient(uri).search_runs(list(ids.values()))]
    assert statuses == ["FAILED", "FAILED"]
