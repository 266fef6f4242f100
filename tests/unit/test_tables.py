import json
import math

import pandas as pd
import pytest

from avemotion import tables


def write_metrics(tmp_path, configuration, task, target, values):
    paths = []
    for fold, value in enumerate(values):
        path = tmp_path / configuration / task / target / f"fold{fold}" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(
            json.dumps(
                {"configuration": configuration, "task": task, "target": target, "fold": fold, "value": value}
            )
        )
        paths.append(path)
    return paths


def test_summarize_by_hand():
    # values 0.6 0.7 0.8 0.9 1.0: mean 0.8, sample variance (0.04+0.01+0+0.01+0.04)/4 = 0.025
    s = tables.summarize([0.6, 0.7, 0.8, 0.9, 1.0], 5)
    assert s["mean"] == pytest.approx(0.8)
    assert s["std"] == pytest.approx(math.sqrt(0.025))
    assert math.isnan(tables.summarize([0.5, 0.6], 5)["mean"])  # incomplete cell: not a number


def test_tables_from_hand_made_fold_metrics(tmp_path):
    paths = write_metrics(tmp_path, "lms", "binary", "angry", [0.6, 0.7, 0.8, 0.9, 1.0])
    paths += write_metrics(tmp_path, "lms", "multiclass", "all", [0.5, 0.6, 0.7, 0.8, 0.9])
    assert tables.main(["--metrics", *map(str, paths), "--folds", "5", "--out-dir", str(tmp_path / "t")]) == 0
    t1 = pd.read_csv(tmp_path / "t" / "table1.csv")
    assert len(t1) == 9 * 8
    cell = t1[(t1.configuration == "lms") & (t1.emotion == "angry")].iloc[0]
    assert cell["mean"] == pytest.approx(0.8) and cell["paper"] == 0.83
    assert cell["difference"] == pytest.approx(0.8 - 0.83, abs=1e-4)
    assert t1["mean"].notna().sum() == 1
    t2 = pd.read_csv(tmp_path / "t" / "table2.csv")
    assert len(t2) == 23
    cell = t2[t2.configuration == "lms"].iloc[0]
    # accuracy in %: mean 70, sample std sqrt(0.025) * 100
    assert cell["mean"] == pytest.approx(70.0) and cell["std"] == pytest.approx(
        100 * math.sqrt(0.025), abs=1e-3
    )
    assert cell["difference"] == pytest.approx(70.0 - 65.6, abs=1e-3)
    md1 = (tmp_path / "t" / "table1.md").read_text()
    assert "| audio | speech | LMS | 0.80 ± 0.16 (paper 0.83, -0.03) | not run |" in md1
    assert md1.count("not run") == 9 * 8 - 1
    md2 = (tmp_path / "t" / "table2.md").read_text()
    assert "| None | — | 70.00 ± 15.81 (paper 65.60, +4.40) | not run |" in md2
    assert "| Face AU | not run | not run | not run |" in md2


def test_uncertain_published_value_is_shown_as_a_range(tmp_path):
    paths = write_metrics(tmp_path, "lms", "binary", "disgust", [0.8] * 5)
    tables.main(["--metrics", *map(str, paths), "--folds", "5", "--out-dir", str(tmp_path / "t")])
    assert "0.80 ± 0.00 (paper 0.8?, 0.80-0.89)" in (tmp_path / "t" / "table1.md").read_text()


def test_duplicate_fold_metrics_are_an_error(tmp_path, capsys):
    paths = write_metrics(tmp_path, "lms", "binary", "angry", [0.6])
    assert (
        tables.main(["--metrics", str(paths[0]), str(paths[0]), "--folds", "5", "--out-dir", str(tmp_path)])
        == 1
    )
    assert "duplicate fold metrics" in capsys.readouterr().err
    assert not (tmp_path / "table1.csv").exists()


def test_no_metrics_gives_an_all_not_run_grid(tmp_path):
    assert tables.main(["--folds", "5", "--out-dir", str(tmp_path)]) == 0
    assert pd.read_csv(tmp_path / "table1.csv")["mean"].isna().all()
