import pytest
import yaml

from avemotion import config as C
from avemotion import paper


def test_full_config_is_valid_and_holds_table3(full_config):
    hp = full_config["training"]["hyperparameters"]["lms"]
    assert hp["binary"] == {
        "learning_rate": 0.001,
        "batch_size": 64,
        "epochs": 100,
        "scales": 7,
        "channels": 64,
    }
    assert C.folds_of(full_config)[0] == (2, 5, 14, 15, 16)


def test_demo_overlay_is_valid(root):
    cfg = C.load_config(root / "config.yaml", root / "workflow/profiles/demo/demo.yaml")
    assert cfg["data"]["demo"] is not None
    assert cfg["tracking"]["backend"] == "mediapipe"  # offline; the full run uses the published tracking
    # the overlay only overrides: untouched keys keep the full config's values
    assert cfg["features"]["lms"]["n_mels"] == 24


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"training": {"learnig_rate": 1}}, "training"),
        (
            {"training": {"hyperparameters": {"lms": {"binary": {"epochs": 0}}}}},
            "training.hyperparameters.lms",
        ),
        ({"model": {"dropout": 1.5}}, "model.dropout"),
        ({"training": {"device": "tpu"}}, "training.device"),
        ({"features": {"lms": {"frames_rule": "pad"}}}, "features.lms.frames_rule"),
        ({"data": {"actors": [0]}}, "data.actors.0"),
        ({"unknown_section": 1}, "<top level>"),
        ({"tracking": {"backend": "dlib"}}, "tracking.backend"),
        ({"tracking": {"lost": {"max_fraction": 1.5}}}, "tracking.lost.max_fraction"),
        ({"tracking": {"openface": {"flags": ["2Dfp"]}}}, "tracking.openface.flags.0"),
        ({"features": {"face_kpd": {"normalize": "median"}}}, "features.face_kpd.normalize"),
        ({"features": {"face_au": {"scale": 5}}}, "features"),  # face AU has no options
        ({"training": {"hyperparameters": {"mfcc": {}}}}, "training.hyperparameters.mfcc"),
    ],
)
def test_bad_values_name_the_key(root, overrides, key):
    with pytest.raises(C.ConfigError, match=f"config key '{key}"):
        C.load_config(root / "config.yaml", overrides=overrides)


def test_fold_leak_is_refused(root):
    with pytest.raises(C.ConfigError, match="actor 2 is in fold 0 and fold 1"):
        C.load_config(root / "config.yaml", overrides={"folds": {"1": [2, 3, 6, 7, 13, 18]}})


def test_actor_in_no_fold_is_refused(root):
    with pytest.raises(C.ConfigError, match=r"actors \[22\] of data.actors are in no fold"):
        C.load_config(root / "config.yaml", overrides={"folds": {"4": [1, 4, 9]}})


def test_too_many_scales_for_the_frames(root):
    bad = {"training": {"hyperparameters": {"lms": {"multiclass": {"scales": 8}}}}}
    with pytest.raises(C.ConfigError, match=r"lms.multiclass.scales.*2\^7 below the 88 frames"):
        C.load_config(root / "config.yaml", overrides=bad)


def test_table2_experiment_without_a_cell_is_refused(root):
    with pytest.raises(C.ConfigError, match=r"experiments\.table2.*'head_pose' is not a cell of Table 2"):
        C.load_config(root / "config.yaml", overrides={"experiments": {"table2": ["head_pose"]}})


def test_unknown_experiment_feature(root):
    with pytest.raises(C.ConfigError, match=r"experiments\.table2.*unknown feature 'mfcc'"):
        C.load_config(root / "config.yaml", overrides={"experiments": {"table2": ["mfcc"]}})


def test_deep_update_merges_recursively():
    assert C.deep_update({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 3}


def test_train_spec_round_trip(full_config):
    spec = C.train_spec(full_config, "lms", "binary", "angry", 3)
    assert spec.test_actors == (8, 17, 21, 23, 24)
    assert spec.learning_rate == 0.001 and spec.scales == 7 and spec.convs_per_block == 3
    assert (spec.beta1, spec.beta2) == (0.93, 0.98)
    assert C.TrainSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    ("task", "target"), [("binary", "all"), ("multiclass", "angry"), ("regression", "all")]
)
def test_train_spec_rejects_mismatched_targets(full_config, task, target):
    with pytest.raises(C.ConfigError):
        C.train_spec(full_config, "lms", task, target, 0)


def test_schema_declares_draft_2020_12_and_closes_every_object(root):
    schema = yaml.safe_load((root / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    def objects(node, path="#"):
        if isinstance(node, dict):
            if node.get("type") == "object" or (
                isinstance(node.get("type"), list) and "object" in node["type"]
            ):
                yield path, node
            for k, v in node.items():
                yield from objects(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from objects(v, f"{path}/{i}")

    for path, node in objects(schema):
        assert "additionalProperties" in node, path


def test_config_holds_every_table3_value(full_config):
    from avemotion import registry

    hp = full_config["training"]["hyperparameters"]
    assert set(hp) == set(registry.FEATURES)
    w2v = {"learning_rate": 0.00005, "batch_size": 16, "epochs": 100, "scales": 8, "channels": 64}
    assert hp["wav2vec2_base"]["binary"] == w2v and hp["wav2vec2_large"]["multiclass"] == w2v
    resnet = {"learning_rate": 0.0002, "batch_size": 8, "epochs": 60, "scales": 5, "channels": 64}
    assert hp["face_resnet"]["binary"] == resnet and hp["mouth_resnet"]["multiclass"] == resnet
    assert hp["eyes_resnet"]["multiclass"] == {**resnet, "channels": 32}  # the paper's 32-channel exception
    assert (
        hp["face_kpd"]["binary"]["learning_rate"] == 0.0002
        and hp["eyes_kpd"]["multiclass"]["learning_rate"] == 0.0005
    )
    assert hp["face_au"]["binary"]["epochs"] == 40 and hp["face_au"]["multiclass"]["learning_rate"] == 0.0002
    assert hp["head_pose"] == hp["face_kpd"]  # not in Table 3: the KPD values (ledger)
    fusion = full_config["training"]["fusion"]
    assert fusion["wav2vec2_large"]["learning_rate"] == 0.0001 and fusion["lms"]["learning_rate"] == 0.002
    assert fusion["channels"] == {"eyes_kpd+lms": 32}


def test_feature_params_add_the_face_lost_rule_to_tracking_features(full_config):
    assert C.feature_params(full_config, "lms") == full_config["features"]["lms"]
    assert C.feature_params(full_config, "face_kpd") == {
        "normalize": "neutral",
        "lost": {"min_confidence": 0.8, "max_run": 15, "max_fraction": 0.25},
    }
    assert C.feature_params(full_config, "head_pose") == {"lost": full_config["tracking"]["lost"]}


def test_hyperparameters_of_an_unregistered_feature_are_refused(root):
    hp = {"learning_rate": 0.001, "batch_size": 64, "epochs": 1, "scales": 3, "channels": 8}
    with pytest.raises(C.ConfigError, match=r"'training.hyperparameters.mfcc': unknown feature 'mfcc'"):
        C.load_config(
            root / "config.yaml",
            overrides={"training": {"hyperparameters": {"mfcc": {"binary": hp, "multiclass": hp}}}},
        )


def test_full_config_tracks_with_the_published_release(full_config):
    pre = full_config["tracking"]["precomputed"]
    assert full_config["tracking"]["backend"] == "precomputed"
    assert (pre["md5"], pre["size"]) == ("5753bbc64a9a790f8a8d3e03cba526ee", 417_163_019)
    assert "records/3255102/files/FacialTracking_Actors_01-24.zip" in pre["url"]


def test_training_jobs_group_the_fold_jobs_by_configuration_task_fold_and_seed(full_config):
    full_config["experiments"]["table1"] = ["lms", "face_resnet"]
    full_config["experiments"]["table2"] = ["lms"]
    full_config["training"]["seeds"] = [1, 7]  # TIM-Net on arrays (LMS)
    full_config["training"]["finetune_seeds"] = [3]  # the fine-tuned Face ResNet
    jobs = C.fold_jobs(full_config)
    assert len(jobs) == 2 * 8 * 5 + 8 * 5 + 2 * 5
    assert {seed for c, *_, seed in jobs if c == "face_resnet"} == {3}
    grouped = C.training_jobs(full_config)
    # binary: one job per fold and seed, holding its 8 emotions; multiclass: one per fold and seed
    assert grouped[:11] == (
        [("lms", "binary", k, 1) for k in range(5)]
        + [("lms", "binary", k, 7) for k in range(5)]
        + [("face_resnet", "binary", 0, 3)]
    )
    assert grouped[-5:] == [("lms", "multiclass", k, 7) for k in range(5)] and len(grouped) == 25
    for configuration, task, fold, seed in grouped:
        mine = [target for c, t, target, f, s in jobs if (c, t, f, s) == (configuration, task, fold, seed)]
        assert tuple(mine) == C.targets_of(task)
    assert C.targets_of("binary") == paper.CLASSES and C.targets_of("multiclass") == ("all",)


def test_experiments_all_is_every_configuration_of_the_paper_layouts(full_config):
    assert full_config["experiments"] == {"table1": "all", "table2": "all"}
    t1 = C.implemented_configurations(full_config, "table1")
    t2 = C.implemented_configurations(full_config, "table2")
    assert t1 == [key for key, *_ in paper.TABLE1_ROWS] and len(t1) == 9
    assert len(t2) == 23 and sum("+" in name for name in t2) == 15
    assert t2[:4] == ["lms", "wav2vec2_large", "eyes_resnet", "eyes_resnet+lms"]
    assert "eyes_resnet+mouth_resnet+wav2vec2_large" in t2
    # 9 rows x 8 emotions x 5 folds binary, 23 cells x 5 folds 8-class; 3 seeds for the 5 engineered rows and
    # the 19 Table 2 cells on arrays, 1 for the 4 + 4 fine-tuned backbones
    assert len(C.fold_jobs(full_config)) == (5 * 3 + 4) * 8 * 5 + (19 * 3 + 4) * 5
    assert len(C.training_jobs(full_config)) == (5 * 3 + 4) * 5 + (19 * 3 + 4) * 5


def test_seeds_of_a_configuration_and_its_spec(full_config):
    assert C.seeds_of(full_config, "lms") == [1, 2, 3] == C.seeds_of(full_config, "eyes_resnet+lms")
    assert C.seeds_of(full_config, "face_resnet") == [1] and C.frozen_seed(full_config) == 1
    assert C.train_spec(full_config, "lms", "multiclass", "all", 0).seed == 1  # the first by default
    assert C.train_spec(full_config, "lms", "multiclass", "all", 0, seed=3).seed == 3
    assert C.job_dir("lms", "multiclass", "all", 0, 3) == "results/train/lms/multiclass/all/seed3/fold0"


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ([], "should be non-empty"),
        ([1, 1], "non-unique"),
        ([-1], "less than the minimum"),
        ("1", "not of type"),
    ],
)
def test_bad_seed_lists_name_the_key(full_config, seeds, message):
    full_config["training"]["seeds"] = seeds
    with pytest.raises(C.ConfigError, match=rf"config key 'training.seeds(\.0)?': .*{message}"):
        C.validate_schema(full_config)


def test_fusion_spec_takes_table3_multimodal_rows(full_config):
    w2v = C.train_spec(full_config, "face_kpd+wav2vec2_large", "multiclass", "all", 2)
    assert (w2v.learning_rate, w2v.batch_size, w2v.epochs) == (0.0001, 64, 100)
    assert [(b["feature"], b["frames"], b["scales"], b["channels"]) for b in w2v.branches] == [
        ("face_kpd", 88, 7, 64),
        ("wav2vec2_large", 146, 8, 64),  # its own scales: 146 frozen frames
    ]
    assert w2v.fusion_hidden == (128, 64) and w2v.backbone is None and w2v.standardize
    lms = C.train_spec(full_config, "eyes_kpd+lms", "multiclass", "all", 0)
    assert lms.learning_rate == 0.002 and {b["channels"] for b in lms.branches} == {
        32
    }  # the paper's exception
    assert {
        b["channels"] for b in C.train_spec(full_config, "face_au+lms", "multiclass", "all", 0).branches
    } == {64}
    visual = C.train_spec(full_config, "eyes_resnet+mouth_resnet", "multiclass", "all", 0)
    assert visual.learning_rate == 0.0005 and [b["frames"] for b in visual.branches] == [88, 88]
    assert C.TrainSpec.from_json(w2v.to_json()) == w2v
    with pytest.raises(C.ConfigError, match="8-class"):
        C.train_spec(full_config, "face_kpd+lms", "binary", "angry", 0)


def test_fusion_scales_must_fit_each_branch(root):
    bad = {"training": {"fusion": {"branch_scales": {"wav2vec2_large": 9}}}}
    with pytest.raises(
        C.ConfigError, match=r"training.fusion.branch_scales.*wav2vec2_large branch.*146 frames"
    ):
        C.load_config(root / "config.yaml", overrides=bad)
    bad = {"training": {"fusion": {"lms": {"scales": 8}}}}
    with pytest.raises(
        C.ConfigError, match=r"training.fusion.lms.scales.*eyes_resnet branch of eyes_resnet\+lms.*88 frames"
    ):
        C.load_config(root / "config.yaml", overrides=bad)


def test_fusion_channel_exception_must_name_a_multimodal_cell(root):
    with pytest.raises(C.ConfigError, match=r"training.fusion.channels.lms\+face_au': not a multimodal cell"):
        C.load_config(
            root / "config.yaml", overrides={"training": {"fusion": {"channels": {"lms+face_au": 8}}}}
        )


def _grouped(config, size):
    return {**config, "jobs": {**config["jobs"], "configurations_per_job": size}}


def test_training_groups_cut_each_task_into_near_equal_groups(full_config):
    alone = {t: C.training_groups(full_config, t) for t in paper.TASKS}
    # configurations_per_job 1: one group per TIM-Net configuration; single backbones are fine-tuned instead
    assert alone["binary"] == [("lms",), ("face_kpd",), ("face_au",), ("eyes_kpd",), ("head_pose",)]
    assert len(alone["multiclass"]) == 7 + 12 and ("wav2vec2_large",) not in alone["multiclass"]
    # 2 per job: 5 rows in ceil(5 / 2) = 3 groups, cut at round(5/3) = 2 and round(10/3) = 3
    assert C.training_groups(_grouped(full_config, 2), "binary") == [
        ("lms", "face_kpd"), ("face_au",), ("eyes_kpd", "head_pose"),
    ]  # fmt: skip
    for size in (2, 3, 7, 50):
        groups = C.training_groups(_grouped(full_config, size), "multiclass")
        flat = [name for group in groups for name in group]
        assert sorted(flat) == sorted(n for (n,) in alone["multiclass"])  # each configuration once
        assert all(len(g) <= size for g in groups)
        for group in groups:  # a fusion with a backbone's frozen features is never grouped with the others
            assert len({bool(C.frozen_branches(n)) for n in group}) == 1, group
    # 7 per job: the 7 cells without a backbone in one group, the 12 fusions with one in 2 groups of 6
    sizes = [len(g) for g in C.training_groups(_grouped(full_config, 7), "multiclass")]
    assert sizes == [7, 6, 6]
    assert C.frozen_branches("eyes_resnet+mouth_resnet+lms") == ("eyes_resnet", "mouth_resnet")
    assert C.frozen_branches("face_kpd+lms") == () and C.frozen_branches("wav2vec2_large") == ()


def test_training_groups_keep_a_jobs_command_line_under_the_kernels_limit(full_config):
    """Linux takes at most 128 KiB per argument (bash -c's command): the 5 binary rows' 200 specs (5 folds x 8
    targets, about 23 kB a row) do not fit one job, so even 50 per job gives 2."""
    groups = C.training_groups(_grouped(full_config, 50), "binary")
    assert [len(g) for g in groups] == [2, 3]
    for group in groups:
        spec_bytes = sum(
            len(C.train_spec(full_config, name, "binary", target, fold).to_json()) + 3
            for name in group
            for target in paper.CLASSES
            for fold in range(5)
        )
        assert spec_bytes <= C.SPEC_BYTES_PER_JOB < 128 * 1024
    assert C.training_groups(_grouped(full_config, 50), "multiclass")[0][0] == "lms"  # small: one group


def test_configurations_per_job_must_be_a_positive_count(root):
    with pytest.raises(C.ConfigError, match=r"jobs\.configurations_per_job"):
        C.load_config(root / "config.yaml", overrides={"jobs": {"configurations_per_job": 0}})
