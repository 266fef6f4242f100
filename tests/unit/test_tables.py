import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from avemotion import paper, tables

# Hand-made binary folds (rows true rest/emotion, columns predicted). Macro-F1 = mean over the two classes
# of 2tp / (2tp + fp + fn):
#   [[2, 2], [2, 2]]: 4/8 and 4/8 -> 0.5;   [[3, 1], [1, 3]]: 6/8 and 6/8 -> 0.75;   [[8, 0], [0, 1]] -> 1.0
# mean 0.75, sample std sqrt((0.25² + 0 + 0.25²) / 2) = 0.25.
# Pooled: [[13, 3], [3, 6]]: rest 26/32 = 0.8125, emotion 12/18 = 2/3 -> macro-F1 0.739583 (its accuracy,
# 19/25 = 0.76, and the mean, 0.75, both differ).
BINARY_FOLDS = [np.array([[2, 2], [2, 2]]), np.array([[3, 1], [1, 3]]), np.array([[8, 0], [0, 1]])]
BINARY_VALUES = [0.5, 0.75, 1.0]
BINARY_POOLED = (0.8125 + 2 / 3) / 2
# Hand-made 8-class folds: 5/10, 12/20, 21/30 correct -> accuracy 50, 60, 70 %: mean 60, std 10; pooled
# 38/60 = 63.33 % (the mean weighs the folds equally, the pooled value weighs them by their clips).
MULTICLASS_CORRECT = [(5, 10), (12, 20), (21, 30)]
MULTICLASS_POOLED = 100 * 38 / 60


def multiclass_matrix(correct: int, total: int) -> np.ndarray:
    """8x8 counts with ``correct`` clips on the diagonal and the rest one class off, spread over classes."""
    cm = np.zeros((8, 8), dtype=np.int64)
    for i in range(correct):
        cm[i % 8, i % 8] += 1
    for i in range(total - correct):
        cm[i % 8, (i + 1) % 8] += 1
    return cm


# Student t's 97.5 % quantile with 2 degrees of freedom (tables: 4.303): a 95 % interval of 3 values.
T2 = 4.302652729911275


def write_fold(root, configuration, task, target, fold, cm, value, epochs=(1.0, 0.5, 0.25), seed=1):
    """One fold folder as avemotion.train writes it: metrics.json, confusion.csv, history.csv."""
    folder = root / configuration / task / target / f"seed{seed}" / f"fold{fold}"
    folder.mkdir(parents=True)
    metric = "macro_f1" if task == "binary" else "accuracy"
    metrics = {"configuration": configuration, "task": task, "target": target, "fold": fold, "seed": seed}
    (folder / "metrics.json").write_text(json.dumps({**metrics, "metric": metric, "value": value}))
    classes = ["rest", target] if task == "binary" else list(paper.CLASSES)
    pd.DataFrame(cm, index=classes, columns=classes).to_csv(folder / "confusion.csv")
    history = {"epoch": range(1, len(epochs) + 1), "train_loss": epochs, "train_accuracy": 0.5}
    pd.DataFrame({**history, "epoch_seconds": 0.1}).to_csv(folder / "history.csv", index=False)
    return folder / "metrics.json"


def binary_cell(root, configuration="lms", target="angry"):
    return [
        write_fold(root, configuration, "binary", target, k, cm, v)
        for k, (cm, v) in enumerate(zip(BINARY_FOLDS, BINARY_VALUES, strict=True))
    ]


def multiclass_cell(root, configuration="lms"):
    return [
        write_fold(root, configuration, "multiclass", "all", k, multiclass_matrix(c, n), c / n)
        for k, (c, n) in enumerate(MULTICLASS_CORRECT)
    ]


def build(tmp_path, paths, folds=3):
    out = tmp_path / "t"
    assert tables.main(["--metrics", *map(str, paths), "--folds", str(folds), "--out-dir", str(out)]) == 0
    return out


def test_seed_summary_of_one_seed_by_hand():
    # values 0.6 0.7 0.8 0.9 1.0: mean 0.8, sample variance (0.04+0.01+0+0.01+0.04)/4 = 0.025; the interval
    # over the 5 folds: t(4) = 2.776445 x sqrt(0.025) / sqrt(5) = 0.196324
    s = tables.seed_summary(np.array([[0.6], [0.7], [0.8], [0.9], [1.0]]))
    assert s["n_folds"] == 5 and s["n_seeds"] == 1 and s["interval"] == "folds"
    assert s["mean"] == pytest.approx(0.8)
    assert s["std_folds"] == pytest.approx(math.sqrt(0.025)) and math.isnan(s["std_seeds"])
    assert s["ci_low"] == pytest.approx(0.8 - 0.196324, abs=1e-6)
    assert s["ci_high"] == pytest.approx(0.8 + 0.196324, abs=1e-6)


def test_seed_summary_of_several_seeds_by_hand():
    # fold 0 over seeds 60 66 69, fold 1: 58 60 62. Fold means 65, 60 -> std sqrt(12.5); seed means 59, 63,
    # 65.5 (mean 62.5) -> variance (3.5² + 0.5² + 3²) / 2 = 10.75; interval over the 3 seed means:
    # 62.5 +- T2 x sqrt(10.75) / sqrt(3)
    s = tables.seed_summary(np.array([[60.0, 66.0, 69.0], [58.0, 60.0, 62.0]]))
    assert s["n_folds"] == 2 and s["n_seeds"] == 3 and s["interval"] == "seeds"
    assert s["mean"] == pytest.approx(62.5)
    assert s["std_folds"] == pytest.approx(math.sqrt(12.5))
    assert s["std_seeds"] == pytest.approx(math.sqrt(10.75))
    half = T2 * math.sqrt(10.75) / math.sqrt(3)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((62.5 - half, 62.5 + half))
    # a 90 % interval is narrower: t(2) = 2.919986
    s90 = tables.seed_summary(np.array([[60.0, 66.0, 69.0], [58.0, 60.0, 62.0]]), confidence=0.90)
    assert s90["ci_high"] == pytest.approx(62.5 + 2.919986 * math.sqrt(10.75) / math.sqrt(3), abs=1e-5)


def test_the_interval_is_clipped_to_the_metrics_range():
    # 0.9 and 1.0 over 2 seeds: 0.95 +- t(1) = 12.706 x 0.0707 / sqrt(2) = 0.635 reaches past 1
    s = tables.seed_summary(np.array([[0.9, 1.0]]), bounds=(0.0, 1.0))
    assert s["ci_low"] == pytest.approx(0.95 - 12.706205 * math.sqrt(0.005) / math.sqrt(2), abs=1e-5)
    assert s["ci_high"] == 1.0
    assert tables.seed_summary(np.array([[0.9, 1.0]]))["ci_high"] > 1.5  # unbounded by default


def test_seed_summary_of_one_value_has_no_interval_and_bad_grids_are_refused():
    s = tables.seed_summary(np.array([[0.7]]))
    assert s["mean"] == 0.7 and math.isnan(s["ci_low"]) and math.isnan(s["std_folds"]) and s["interval"] == ""
    for bad in (np.zeros((0, 1)), np.array([0.5, 0.6]), np.array([[0.5, math.nan]])):
        with pytest.raises(ValueError, match="finite"):
            tables.seed_summary(bad)


def test_paper_inside():
    assert tables.paper_inside(65.6, 60.0, 70.0) == 1.0 and tables.paper_inside(65.6, 66.0, 70.0) == 0.0
    assert tables.paper_inside(70.0, 60.0, 70.0) == 1.0  # the bounds belong to the interval
    assert math.isnan(tables.paper_inside(None, 60.0, 70.0)) and math.isnan(
        tables.paper_inside(65.6, math.nan, 1)
    )


def test_a_cell_of_several_seeds_pools_every_model_and_leaves_out_a_seed_with_a_missing_fold(
    tmp_path, capsys
):
    # seed 1: the hand-made folds 50/60/70 %; seed 2: 6/10, 12/20, 21/30 (60/60/70 %); seed 3: 5/10, 13/20,
    # 21/30 (50/65/70 %); seed 4 only on folds 0 and 1 (left out).
    paths = multiclass_cell(tmp_path)
    for seed, correct in ((2, [(6, 10), (12, 20), (21, 30)]), (3, [(5, 10), (13, 20), (21, 30)])):
        paths += [
            write_fold(tmp_path, "lms", "multiclass", "all", k, multiclass_matrix(c, n), c / n, seed=seed)
            for k, (c, n) in enumerate(correct)
        ]
    paths += [
        write_fold(tmp_path, "lms", "multiclass", "all", k, multiclass_matrix(5, 10), 0.5, seed=4)
        for k in (0, 1)
    ]
    out = build(tmp_path, paths)
    assert (
        "warning: lms multiclass all: seed(s) [4] left out, not run on all 3 folds" in capsys.readouterr().out
    )
    cell = pd.read_csv(out / "table2.csv").query("configuration == 'lms'").iloc[0]
    # fold means 53.33, 61.67, 70 -> std 8.333; seed means 60, 63.33, 61.67 (mean 61.67) -> std 1.667;
    # interval 61.67 +- T2 x 1.667 / sqrt(3) = [57.53, 65.81]: the paper's 65.6 inside
    assert cell["n_seeds"] == 3 and cell["n_folds"] == 3 and cell["interval"] == "seeds"
    assert cell["mean"] == pytest.approx(185 / 3, abs=1e-3) and cell["std_folds"] == pytest.approx(
        25 / 3, abs=1e-3
    )
    assert cell["std_seeds"] == pytest.approx(5 / 3, abs=1e-3)
    half = T2 * (5 / 3) / math.sqrt(3)
    assert cell["ci_low"] == pytest.approx(185 / 3 - half, abs=1e-3)
    assert cell["ci_high"] == pytest.approx(185 / 3 + half, abs=1e-3)
    assert cell["paper_inside"] == 1.0
    # pooled over the 3 seeds' 9 matrices: (38 + 39 + 39) / 180 correct
    assert cell["pooled"] == pytest.approx(100 * 116 / 180, abs=1e-3)
    md2 = (out / "table2.md").read_text()
    assert (
        "| None | — | 61.67 [57.53, 65.81] ±8.33 folds ±1.67 seeds, pooled 64.44 (paper 65.60 inside, -3.93)"
        in md2
    )


def test_long_form_csvs_keep_their_columns_and_hold_mean_std_and_pooled(tmp_path):
    out = build(tmp_path, binary_cell(tmp_path) + multiclass_cell(tmp_path))
    t1 = pd.read_csv(out / "table1.csv")
    assert (out / "table1.csv").read_text().splitlines()[0] == (
        "modality,type,features,configuration,emotion,n_folds,n_seeds,mean,std_folds,std_seeds,ci_low,ci_high,"
        "interval,pooled,paper,paper_range,paper_inside,difference"
    )
    assert len(t1) == 9 * 8 and t1["mean"].notna().sum() == 1 and t1["pooled"].notna().sum() == 1
    cell = t1[(t1.configuration == "lms") & (t1.emotion == "angry")].iloc[0]
    assert cell["n_folds"] == 3 and cell["paper"] == 0.83
    assert cell["mean"] == pytest.approx(0.75, abs=1e-4) and cell["std_folds"] == pytest.approx(
        0.25, abs=1e-4
    )
    assert cell["n_seeds"] == 1 and math.isnan(cell["std_seeds"]) and cell["interval"] == "folds"
    half = T2 * 0.25 / math.sqrt(3)  # one seed: t over the 3 folds
    assert cell["ci_low"] == pytest.approx(0.75 - half, abs=1e-4)
    assert (
        cell["ci_high"] == 1.0 and 0.75 + half > 1 and cell["paper_inside"] == 1
    )  # clipped to macro-F1's range
    assert cell["pooled"] == pytest.approx(BINARY_POOLED, abs=1e-4)  # 0.7396, not the accuracy 0.76
    assert cell["difference"] == pytest.approx(0.75 - 0.83, abs=1e-4)
    t2 = pd.read_csv(out / "table2.csv")
    assert (out / "table2.csv").read_text().splitlines()[0] == (
        "visual,speech,configuration,n_folds,n_seeds,mean,std_folds,std_seeds,ci_low,ci_high,interval,pooled,"
        "paper,paper_inside,difference"
    )
    assert len(t2) == 23 and t2["mean"].notna().sum() == 1
    cell = t2[t2.configuration == "lms"].iloc[0]
    assert cell["mean"] == pytest.approx(60.0, abs=1e-3) and cell["std_folds"] == pytest.approx(
        10.0, abs=1e-3
    )
    assert cell["pooled"] == pytest.approx(MULTICLASS_POOLED, abs=1e-3)
    assert cell["difference"] == pytest.approx(60.0 - 65.6, abs=1e-3)


def test_markdown_cells_show_mean_interval_spreads_pooled_paper_and_difference(tmp_path):
    out = build(tmp_path, binary_cell(tmp_path) + multiclass_cell(tmp_path))
    md1 = (out / "table1.md").read_text()
    # 0.75 +- T2 x 0.25 / sqrt(3) = [0.13, 1.37], clipped to macro-F1's 1; 60 +- T2 x 10 / sqrt(3) = [35.16, 84.84]
    assert (
        "| audio | speech | LMS | 0.75 [0.13, 1.00] ±0.25 folds, pooled 0.74 (paper 0.83 inside, -0.08) | not run |"
        in md1
    )
    assert md1.count("not run") == 9 * 8 - 1
    md2 = (out / "table2.md").read_text()
    assert (
        "| None | — | 60.00 [35.16, 84.84] ±10.00 folds, pooled 63.33 (paper 65.60 inside, -5.60) | not run |"
        in md2
    )
    assert "| Face AU | not run | not run | not run |" in md2


def test_an_incomplete_cell_is_not_run_and_has_no_pooled_value(tmp_path):
    out = build(tmp_path, binary_cell(tmp_path)[:2])  # 2 of 3 folds
    cell = pd.read_csv(out / "table1.csv").query("configuration == 'lms' and emotion == 'angry'").iloc[0]
    assert cell["n_folds"] == 2 and math.isnan(cell["mean"]) and math.isnan(cell["pooled"])
    assert "0.75" not in (out / "table1.md").read_text()


def unescaped(char: str, line: str) -> int:
    return len(re.findall(rf"(?<!\\){re.escape(char)}", line))


def check_tabular(text: str, n_columns: int) -> list[str]:
    """The body rows of a plain tabular, after checking its structure line by line."""
    lines = [line for line in text.splitlines() if not line.startswith("%")]
    assert lines[0] == "\\begin{tabular}{" + "l" * n_columns + "}" and lines[-1] == "\\end{tabular}"
    rows = [line for line in lines[1:-1] if line != "\\hline"]
    for row in rows:
        assert row.endswith(" \\\\") and unescaped("&", row) == n_columns - 1, row
        assert unescaped("$", row) % 2 == 0 and unescaped("{", row) == unescaped("}", row), row
        assert not set("±—−_%#") & set(row.replace("\\%", "").replace("\\_", "").replace("\\#", "")), row
    return rows


def test_latex_tables_are_plain_tabulars_with_escaped_text(tmp_path):
    out = build(tmp_path, binary_cell(tmp_path) + multiclass_cell(tmp_path))
    rows = check_tabular((out / "table1.tex").read_text(), 3 + 8)
    assert rows[0] == "modality & type & features & " + " & ".join(paper.CLASSES) + " \\\\"
    assert rows[1].startswith(
        "audio & speech & LMS & $0.75$ [$0.13$, $1.00$] $\\pm$$0.25$ folds, pooled $0.74$ (paper $0.83$ inside, "
        "$-0.08$) & not run & "
    )
    assert "head pose & RPY-3D &" in rows[-1] and len(rows) == 1 + 9
    rows = check_tabular((out / "table2.tex").read_text(), 4)
    assert rows[0] == "visual \\textbackslash{} speech & None & LMS & Wav2Vec2-L \\\\"
    assert rows[1] == (
        "None & --- & $60.00$ [$35.16$, $84.84$] $\\pm$$10.00$ folds, pooled $63.33$ (paper $65.60$ inside, "
        "$-5.60$) & not run \\\\"
    )
    assert len(rows) == 1 + 8


def test_latex_escape():
    assert tables.latex_escape("a_b & 10% #1 {x} ~ ^ \\ $ — ±") == (
        r"a\_b \& 10\% \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{} \$ --- $\pm$"
    )


def test_uncertain_published_value_is_shown_as_a_range(tmp_path):
    paths = [
        write_fold(tmp_path, "lms", "binary", "disgust", k, np.array([[4, 1], [1, 4]]), 0.8) for k in range(3)
    ]
    out = build(tmp_path, paths)
    assert (
        "0.80 [0.80, 0.80] ±0.00 folds, pooled 0.80 (paper 0.8?, 0.80-0.89)"
        in (out / "table1.md").read_text()
    )
    assert "(paper 0.8?, 0.80--0.89)" in (out / "table1.tex").read_text()


def test_read_long_keeps_the_none_labels(tmp_path):
    out = build(tmp_path, multiclass_cell(tmp_path))
    t2 = tables.read_long(out / "table2.csv")
    assert t2.iloc[0][["visual", "speech", "configuration"]].tolist() == ["None", "LMS", "lms"]
    assert t2["mean"].notna().sum() == 1 and t2["paper"].isna().sum() == 1  # wav2vec2_large: not published


def test_metrics_without_a_seed_are_an_error_naming_the_file(tmp_path, capsys):
    (path,) = binary_cell(tmp_path)[:1]
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "seed"}))
    assert tables.main(["--metrics", str(path), "--folds", "3", "--out-dir", str(tmp_path / "t")]) == 1
    assert f"{path} has no seed: it was written by an older version" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_duplicate_fold_metrics_are_an_error(tmp_path, capsys):
    paths = binary_cell(tmp_path)
    assert (
        tables.main(["--metrics", str(paths[0]), str(paths[0]), "--folds", "3", "--out-dir", str(tmp_path)])
        == 1
    )
    assert "duplicate fold metrics" in capsys.readouterr().err
    assert not (tmp_path / "table1.csv").exists()


def test_missing_or_mislabelled_confusion_is_an_error_naming_the_file(tmp_path, capsys):
    paths = binary_cell(tmp_path)
    confusion = paths[1].parent / "confusion.csv"
    pd.DataFrame(BINARY_FOLDS[1], index=["rest", "calm"], columns=["rest", "calm"]).to_csv(confusion)
    args = ["--metrics", *map(str, paths), "--folds", "3", "--out-dir", str(tmp_path / "t")]
    assert tables.main(args) == 1
    assert f"{confusion}: classes ['rest', 'calm']" in capsys.readouterr().err
    confusion.unlink()
    assert tables.main(args) == 1
    assert f"{confusion} is missing" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_no_metrics_gives_an_all_not_run_grid(tmp_path):
    assert tables.main(["--folds", "5", "--out-dir", str(tmp_path)]) == 0
    t1 = pd.read_csv(tmp_path / "table1.csv")
    assert t1["mean"].isna().all() and t1["pooled"].isna().all()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"table{n}.{e}" for n in (1, 2) for e in ("csv", "md", "tex")
    ]
