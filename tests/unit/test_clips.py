"""Tests for avemotion.clips: RAVDESS names, the clip table, the set check, the data manifest and the CLI.

Expected labels are written out by hand from the alphabetical class order
(angry 0, calm 1, disgust 2, fearful 3, happy 4, neutral 5, sad 6, surprised 7) and the RAVDESS emotion
codes (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from avemotion import clips, paper
from avemotion.clips import ClipName, ClipSetError, check_clip_set, clip_table, data_manifest, parse_clip_name
from avemotion.config import ConfigError

# emotion code -> hand-written class index in the tables' alphabetical order
LABEL_OF_CODE = {1: 5, 2: 1, 3: 4, 4: 6, 5: 0, 6: 3, 7: 2, 8: 7}


def actor_clip_names(actor: int, modality: int = 1, vocal: int = 1) -> list[str]:
    """The 60 speech clip names of one actor: neutral 1 intensity x 2 statements x 2 repetitions, the
    other seven emotions 2 x 2 x 2."""
    names = []
    for emotion in range(1, 9):
        for intensity in (1,) if emotion == 1 else (1, 2):
            for statement in (1, 2):
                for repetition in (1, 2):
                    names.append(
                        f"{modality:02d}-{vocal:02d}-{emotion:02d}-{intensity:02d}-"
                        f"{statement:02d}-{repetition:02d}-{actor:02d}"
                    )
    return names


def touch_clips(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        p = folder / f"{name}.mp4"
        p.touch()
        paths.append(p)
    return paths


# ------------------------------------------------------------------------------------------ parse_clip_name


def test_parse_angry_strong_actor_12():
    clip = parse_clip_name("01-01-05-02-01-02-12.mp4")
    assert clip == ClipName(
        modality=1, vocal_channel=1, emotion_code=5, intensity=2, statement=1, repetition=2, actor=12
    )
    assert clip.emotion == "angry"
    assert clip.label == 0 == paper.CLASSES.index("angry")


@pytest.mark.parametrize(
    ("name", "emotion", "label", "actor"),
    [
        ("01-01-01-01-01-01-01", "neutral", 5, 1),  # without the .mp4 suffix
        ("results/clips/Actor_24/01-01-08-02-02-02-24.mp4", "surprised", 7, 24),  # with a folder
        ("02-01-07-01-02-01-03.mp4", "disgust", 2, 3),  # video-only files parse too
        ("03-02-02-02-01-01-10.mp4", "calm", 1, 10),
        ("01-01-06-01-01-01-09.mp4", "fearful", 3, 9),
        ("01-01-03-01-01-01-09.mp4", "happy", 4, 9),
        ("01-01-04-01-01-01-09.mp4", "sad", 6, 9),
    ],
)
def test_parse_valid_names(name, emotion, label, actor):
    clip = parse_clip_name(name)
    assert (clip.emotion, clip.label, clip.actor) == (emotion, label, actor)


def test_label_is_the_index_in_the_alphabetical_class_order_for_every_code():
    for code, label in LABEL_OF_CODE.items():
        clip = parse_clip_name(f"01-01-{code:02d}-01-01-01-01")
        assert clip.label == label
        assert paper.CLASSES[label] == paper.EMOTION_CODES[code]


@pytest.mark.parametrize(
    ("name", "part"),
    [
        ("01-01-09-01-01-01-01.mp4", "emotion"),  # emotion codes are 01..08
        ("01-01-00-01-01-01-01.mp4", "emotion"),
        ("01-01-01-02-01-01-01.mp4", "intensity"),  # neutral has no strong intensity
        ("01-01-05-03-01-01-01.mp4", "intensity"),
        ("01-01-05-01-01-01-25.mp4", "actor"),  # 24 actors
        ("01-01-05-01-01-01-00.mp4", "actor"),
        ("04-01-05-01-01-01-01.mp4", "modality"),
        ("01-03-05-01-01-01-01.mp4", "vocal channel"),
        ("01-01-05-01-03-01-01.mp4", "statement"),
        ("01-01-05-01-01-03-01.mp4", "repetition"),
    ],
)
def test_parse_rejects_invalid_parts_and_names_the_clip(name, part):
    with pytest.raises(ValueError, match=f"invalid {part}") as err:
        parse_clip_name(name)
    assert repr(name) in str(err.value)


def test_parse_lists_every_bad_part():
    with pytest.raises(ValueError, match="invalid emotion, actor"):
        parse_clip_name("01-01-09-01-01-01-30")


@pytest.mark.parametrize(
    "name",
    [
        "01-01-05-02-01-02.mp4",  # six fields
        "01-01-05-02-01-02-12-01.mp4",  # eight fields
        "1-01-05-02-01-02-12.mp4",  # one digit
        "01_01_05_02_01_02_12.mp4",  # wrong separator
        "01-01-05-02-01-02-12.wav",  # not an mp4
        "Actor_12.zip",
        "",
    ],
)
def test_parse_rejects_wrong_format_and_names_the_clip(name):
    with pytest.raises(ValueError, match="is not a RAVDESS clip name") as err:
        parse_clip_name(name)
    assert repr(name) in str(err.value)


# ----------------------------------------------------------------------------------------------- clip_table


def test_clip_table_keeps_only_audio_video_speech_sorted_with_fold_and_label(tmp_path):
    names = [
        "01-01-05-02-01-02-12",  # kept: angry, actor 12 -> fold 2
        "02-01-05-02-01-02-12",  # dropped: video-only
        "03-01-05-02-01-02-12",  # dropped: audio-only
        "01-02-05-02-01-02-12",  # dropped: song
        "01-01-01-01-01-01-01",  # kept: neutral, actor 1 -> fold 4
        "01-01-08-01-02-01-08",  # kept: surprised, actor 8 -> fold 3
    ]
    paths = touch_clips(tmp_path, names)
    table = clip_table(paths, paper.FOLDS)
    assert list(table.columns) == [
        "clip",
        "path",
        "actor",
        "emotion",
        "label",
        "intensity",
        "statement",
        "repetition",
        "fold",
    ]
    assert table["clip"].tolist() == ["01-01-01-01-01-01-01", "01-01-05-02-01-02-12", "01-01-08-01-02-01-08"]
    assert table["path"].tolist() == [str(tmp_path / f"{c}.mp4") for c in table["clip"]]
    assert table["actor"].tolist() == [1, 12, 8]
    assert table["emotion"].tolist() == ["neutral", "angry", "surprised"]
    assert table["label"].tolist() == [5, 0, 7]
    assert table["intensity"].tolist() == [1, 2, 1]
    assert table["statement"].tolist() == [1, 1, 2]
    assert table["repetition"].tolist() == [1, 2, 1]
    assert table["fold"].tolist() == [4, 2, 3]  # FOLDS: 1 in fold 4, 12 in fold 2, 8 in fold 3
    assert table.index.tolist() == [0, 1, 2]


def test_clip_table_full_set_uses_the_paper_folds(tmp_path):
    paths = []
    for actor in paper.ACTORS:
        paths += touch_clips(tmp_path / f"Actor_{actor:02d}", actor_clip_names(actor))
        paths += touch_clips(tmp_path / f"Actor_{actor:02d}", actor_clip_names(actor, modality=2))
    table = clip_table(paths[::-1], paper.FOLDS)  # input order must not matter
    assert len(table) == 1440
    assert table["clip"].is_monotonic_increasing
    assert table["clip"].str.startswith("01-01-").all()
    per_fold = table.groupby("fold")["actor"].unique().map(sorted).to_dict()
    assert per_fold == {0: [2, 5, 14, 15, 16], 1: [3, 6, 7, 13, 18], 2: [10, 11, 12, 19, 20],
                        3: [8, 17, 21, 23, 24], 4: [1, 4, 9, 22]}  # fmt: skip
    counts = table.groupby("emotion").size().to_dict()
    assert counts == {e: (96 if e == "neutral" else 192) for e in paper.CLASSES}  # 24 x 4, 24 x 8
    for _, row in table.iloc[::97].iterrows():
        assert row["label"] == LABEL_OF_CODE[int(row["clip"][6:8])]
    check_clip_set(table, paper.N_CLIPS, list(paper.ACTORS))  # the real set passes


def test_clip_table_empty_has_the_columns(tmp_path):
    table = clip_table(touch_clips(tmp_path, ["02-01-05-02-01-02-12"]), paper.FOLDS)
    assert len(table) == 0
    assert "fold" in table.columns and "label" in table.columns


def test_clip_table_actor_in_no_fold_is_a_config_error(tmp_path):
    paths = touch_clips(tmp_path, ["01-01-05-02-01-02-12"])
    with pytest.raises(ConfigError, match="config key 'folds': actor 12") as err:
        clip_table(paths, {0: (1, 2), 1: (3,)})
    assert "01-01-05-02-01-02-12.mp4" in str(err.value)


def test_clip_table_invalid_name_names_the_file(tmp_path):
    paths = touch_clips(tmp_path, ["01-01-05-02-01-02-12", "01-01-09-01-01-01-01"])
    with pytest.raises(ValueError, match=r"01-01-09-01-01-01-01\.mp4'?: invalid emotion"):
        clip_table(paths, paper.FOLDS)


# ------------------------------------------------------------------------------------------- check_clip_set

SMALL_FOLDS = {0: (1,), 1: (2,)}


def small_table(tmp_path: Path, names: list[str] | None = None) -> pd.DataFrame:
    if names is None:
        names = actor_clip_names(1) + actor_clip_names(2)
    return clip_table(touch_clips(tmp_path, names), SMALL_FOLDS)


def test_check_clip_set_accepts_a_complete_set(tmp_path):
    table = small_table(tmp_path)
    assert len(table) == 120
    check_clip_set(table, 120, [1, 2])


def test_check_clip_set_count_mismatch_names_the_config_key(tmp_path):
    table = small_table(tmp_path)
    with pytest.raises(ClipSetError, match=r"found 120 .*expected 1440 \(config key data\.expected_clips\)"):
        check_clip_set(table, 1440, [1, 2])
    with pytest.raises(ClipSetError, match=r"data\.expected_clips"):
        check_clip_set(table.iloc[1:], 120, [1, 2])


def test_check_clip_set_duplicate_names_the_paths(tmp_path):
    a = touch_clips(tmp_path / "a", actor_clip_names(1) + actor_clip_names(2))
    b = touch_clips(tmp_path / "b", ["01-01-05-02-01-02-02"])
    table = clip_table(a + b, SMALL_FOLDS)
    with pytest.raises(ClipSetError, match="duplicate clips") as err:
        check_clip_set(table, 121, [1, 2])
    # the second occurrence after sorting is reported; both are the same clip name
    message = str(err.value)
    assert "01-01-05-02-01-02-02.mp4" in message
    assert str(tmp_path / "a") in message or str(tmp_path / "b") in message


def test_check_clip_set_missing_actor(tmp_path):
    table = small_table(tmp_path)
    with pytest.raises(ClipSetError, match=r"no clips for actors \[3, 7\] listed in data\.actors"):
        check_clip_set(table, 120, [1, 2, 3, 7])


def test_check_clip_set_fold_lacking_a_class(tmp_path):
    # actor 2 (fold 1) loses its 8 disgust clips (code 07); the expected count is set to match, so only the
    # per-fold class check can catch it
    names = actor_clip_names(1) + [n for n in actor_clip_names(2) if n[6:8] != "07"]
    table = small_table(tmp_path, names)
    assert len(table) == 112
    with pytest.raises(ClipSetError, match=r"fold 1's test actors have no clip of \['disgust'\]"):
        check_clip_set(table, 112, [1, 2])


def test_check_clip_set_fold_lacking_two_classes_lists_both_sorted(tmp_path):
    names = [n for n in actor_clip_names(1) if n[6:8] not in ("02", "08")] + actor_clip_names(2)
    table = small_table(tmp_path, names)
    with pytest.raises(ClipSetError, match=r"fold 0's test actors have no clip of \['calm', 'surprised'\]"):
        check_clip_set(table, len(table), [1, 2])


# -------------------------------------------------------------------------------------------- data_manifest


def write_records(folder: Path, records: list[dict]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, r in enumerate(records):
        p = folder / f"record_{i}.json"
        p.write_text(json.dumps(r))
        paths.append(p)
    return paths


RECORDS = [
    {"name": "Video_Speech_Actor_01.zip", "size": 1000, "md5": "a" * 32, "source": "https://zenodo.org/x/01"},
    {"name": "Video_Speech_Actor_02.zip", "size": 2000, "md5": "b" * 32, "source": "https://zenodo.org/x/02"},
]


def test_data_manifest_checksum_is_sha256_of_sorted_identity(tmp_path):
    manifest = data_manifest(write_records(tmp_path, RECORDS[::-1]))
    assert [a["name"] for a in manifest["archives"]] == [
        "Video_Speech_Actor_01.zip",
        "Video_Speech_Actor_02.zip",
    ]
    assert manifest["archives"][0]["source"] == "https://zenodo.org/x/01"  # sources are kept in the document
    # independent: the documented identity (name, size, md5 per archive, sorted by name) in canonical JSON
    identity = (
        '[{"md5": "' + "a" * 32 + '", "name": "Video_Speech_Actor_01.zip", "size": 1000}, '
        '{"md5": "' + "b" * 32 + '", "name": "Video_Speech_Actor_02.zip", "size": 2000}]'
    )
    assert manifest["sha256"] == hashlib.sha256(identity.encode()).hexdigest()


def test_data_manifest_checksum_ignores_order_and_source(tmp_path):
    base = data_manifest(write_records(tmp_path / "a", RECORDS))["sha256"]
    reordered = data_manifest(write_records(tmp_path / "b", RECORDS[::-1]))["sha256"]
    local = [{**r, "source": f"/data/ravdess/{r['name']}"} for r in RECORDS]
    moved = data_manifest(write_records(tmp_path / "c", local))["sha256"]
    assert base == reordered == moved


@pytest.mark.parametrize(("key", "value"), [("md5", "c" * 32), ("size", 1001), ("name", "Other.zip")])
def test_data_manifest_checksum_changes_with_identity(tmp_path, key, value):
    base = data_manifest(write_records(tmp_path / "a", RECORDS))["sha256"]
    changed = [{**RECORDS[0], key: value}, RECORDS[1]]
    assert data_manifest(write_records(tmp_path / "b", changed))["sha256"] != base


# ---------------------------------------------------------------------------------------------------- CLI


def cli_args(
    tmp_path: Path, dirs: list[Path], records: list[Path], expected: int, actors=(1, 2)
) -> list[str]:
    return [
        "--clips-dir",
        *map(str, dirs),
        "--records",
        *map(str, records),
        "--folds",
        json.dumps({str(k): list(v) for k, v in SMALL_FOLDS.items()}),
        "--actors",
        *map(str, actors),
        "--expected",
        str(expected),
        "--out",
        str(tmp_path / "out" / "clips.csv"),
        "--manifest",
        str(tmp_path / "out" / "data_manifest.json"),
    ]


def make_clip_dirs(tmp_path: Path) -> list[Path]:
    dirs = []
    for actor in (1, 2):
        d = tmp_path / "clips" / f"Actor_{actor:02d}"
        touch_clips(d, actor_clip_names(actor) + actor_clip_names(actor, modality=2))
        (d / "notes.txt").write_text("not a clip")
        dirs.append(d)
    return dirs


def test_main_writes_the_clip_table_and_manifest(tmp_path, capsys):
    dirs = make_clip_dirs(tmp_path)
    records = write_records(tmp_path / "records", RECORDS)
    assert clips.main(cli_args(tmp_path, dirs, records, 120)) == 0
    table = pd.read_csv(tmp_path / "out" / "clips.csv", dtype={"clip": str})
    assert len(table) == 120
    assert table["clip"].tolist() == sorted(actor_clip_names(1) + actor_clip_names(2))
    assert (table.loc[table["actor"] == 1, "fold"] == 0).all()
    assert (table.loc[table["actor"] == 2, "fold"] == 1).all()
    first = table.iloc[0]  # 01-01-01-01-01-01-01: neutral, actor 1
    assert (first["emotion"], first["label"], first["path"]) == (
        "neutral",
        5,
        str(dirs[0] / "01-01-01-01-01-01-01.mp4"),
    )
    manifest = json.loads((tmp_path / "out" / "data_manifest.json").read_text())
    assert manifest == data_manifest(records)
    out = capsys.readouterr().out
    assert "120 clips, 2 actors" in out
    assert "'neutral': 8" in out and "'angry': 16" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clips.csv", "data_manifest.json"]


def test_main_exits_1_with_a_message_on_a_bad_set_and_writes_nothing(tmp_path, capsys):
    dirs = make_clip_dirs(tmp_path)
    (dirs[0] / "01-01-05-01-01-01-01.mp4").unlink()  # one angry clip of actor 1 missing
    records = write_records(tmp_path / "records", RECORDS)
    assert clips.main(cli_args(tmp_path, dirs, records, 120)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: found 119 audio-video speech clips (01-01-*), expected 120")
    assert "data.expected_clips" in err
    assert not (tmp_path / "out").exists()


def test_main_exits_1_on_an_invalid_clip_name(tmp_path, capsys):
    dirs = make_clip_dirs(tmp_path)
    (dirs[1] / "01-01-09-01-01-01-02.mp4").touch()
    records = write_records(tmp_path / "records", RECORDS)
    assert clips.main(cli_args(tmp_path, dirs, records, 120)) == 1
    assert "01-01-09-01-01-01-02.mp4'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_main_exits_1_on_an_actor_in_no_fold(tmp_path, capsys):
    dirs = make_clip_dirs(tmp_path)
    touch_clips(dirs[1], ["01-01-05-01-01-01-03"])
    records = write_records(tmp_path / "records", RECORDS)
    assert clips.main(cli_args(tmp_path, dirs, records, 121)) == 1
    assert "config key 'folds': actor 3" in capsys.readouterr().err


def test_actor_clips_selects_one_actor_or_names_the_table(tmp_path):
    table = tmp_path / "clips.csv"
    table.write_text("clip,actor\n01-01-01-01-01-01-01,1\n01-01-01-01-01-01-02,2\n01-01-03-01-01-01-02,2\n")
    assert clips.actor_clips(table, 2)["clip"].tolist() == ["01-01-01-01-01-01-02", "01-01-03-01-01-01-02"]
    with pytest.raises(clips.ClipSetError, match=r"clips.csv lists no clip of actor 3"):
        clips.actor_clips(table, 3)
