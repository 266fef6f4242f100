import struct

import numpy as np
import pytest
from matplotlib.image import imread
from test_tables import (
    BINARY_FOLDS,
    BINARY_VALUES,
    MULTICLASS_CORRECT,
    multiclass_cell,
    multiclass_matrix,
    write_fold,
)

from avemotion import figures, paper, tables

# Per-fold training losses of the fused configuration; their mean per epoch is (2, 1, 5/6).
FUSED_LOSSES = [(3.0, 2.0, 1.0), (1.0, 1.0, 1.0), (2.0, 0.0, 0.5)]


@pytest.fixture
def results(tmp_path):
    """Fold folders of Table 1's LMS row (3 folds x 8 emotions) and of Table 2's lms and face_kpd+lms
    cells (3 folds each), and the tables built from them."""
    paths = [
        write_fold(tmp_path / "train", "lms", "binary", emotion, k, cm, v)
        for emotion in paper.CLASSES
        for k, (cm, v) in enumerate(zip(BINARY_FOLDS, BINARY_VALUES, strict=True))
    ]
    paths += multiclass_cell(tmp_path / "train")
    for k, ((correct, total), losses) in enumerate(zip(MULTICLASS_CORRECT, FUSED_LOSSES, strict=True)):
        cm = multiclass_matrix(correct, total)
        paths.append(
            write_fold(
                tmp_path / "train", "face_kpd+lms", "multiclass", "all", k, cm, correct / total, losses
            )
        )
    table_dir = tmp_path / "tables"
    assert tables.main(["--metrics", *map(str, paths), "--folds", "3", "--out-dir", str(table_dir)]) == 0
    return paths, table_dir


def draw(paths, table_dir, out):
    args = ["--metrics", *map(str, paths), "--table1", str(table_dir / "table1.csv")]
    return figures.main([*args, "--table2", str(table_dir / "table2.csv"), "--out-dir", str(out)])


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def test_one_confusion_and_one_curves_figure_per_configuration(results, tmp_path):
    paths, table_dir = results
    out = tmp_path / "figures"
    assert draw(paths, table_dir, out) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    per_configuration = ["table1_lms.png", "table2_face_kpd+lms.png", "table2_lms.png"]
    assert written == sorted(
        ["table1_heatmap.png", "table2_grid.png", "table1_intervals.png", "table2_intervals.png"]
        + [f"{kind}/{name}" for kind in ("confusion", "curves") for name in per_configuration]
    )
    for path in out.rglob("*.png"):
        width, height = png_size(path)
        assert width >= 400 and height >= 300 and path.stat().st_size > 10_000, path
        assert imread(path)[..., :3].std() > 0.05, path  # not a blank canvas
    assert png_size(out / "table1_heatmap.png")[0] > 2 * png_size(out / "table1_heatmap.png")[1]


def test_only_the_configurations_that_ran_get_figures(results, tmp_path):
    paths, table_dir = results
    binary = [p for p in paths if "/binary/" in str(p)]
    out = tmp_path / "figures"
    assert draw(binary, table_dir, out) == 0
    assert sorted(p.name for p in (out / "confusion").iterdir()) == ["table1_lms.png"]
    assert sorted(p.name for p in (out / "curves").iterdir()) == ["table1_lms.png"]
    assert draw([], table_dir, tmp_path / "empty") == 0  # the folders exist even with nothing to draw
    assert not any((tmp_path / "empty" / "confusion").iterdir())


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_table1_heatmap_shows_ours_the_papers_and_the_difference(results):
    _, table_dir = results
    fig = figures.table1_heatmap(tables.read_long(table_dir / "table1.csv"))
    ours, published, difference = fig.axes[:3]
    # 0.75 +- t(2) x 0.25 / sqrt(3): the interval over the 3 folds (one seed), clipped to macro-F1's 1
    assert texts(ours)[0] == "0.75\n[0.13, 1.00]" and texts(ours).count("not run") == 64
    assert texts(published)[0] == "0.83\nin"  # inside our interval
    # LMS row: every emotion ran (3 folds, same matrices), so the whole row is 0.75; the rest is masked
    values = ours.images[0].get_array()
    assert np.allclose(values[0], 0.75) and values.mask[1:].all() and not values.mask[0].any()
    assert sum(1 for p in ours.patches if p.get_hatch()) == 8 * 8  # not run: hatched
    assert np.allclose(published.images[0].get_array()[1], [0.91, 0.88, 0.93, 0.87, 0.85, 0.82, 0.75, 0.88])
    assert texts(published)[2] == "0.8?"  # LMS / disgust: published only as 0.80-0.89
    assert sum(1 for p in published.patches if p.get_hatch()) == 2
    # one colour scale, from the lowest of ours and the paper's (head pose 0.53) down to a tenth, up to 1
    assert ours.images[0].norm is published.images[0].norm
    assert (ours.images[0].norm.vmin, ours.images[0].norm.vmax) == pytest.approx((0.5, 1.0))
    assert texts(difference)[:2] == ["-0.08", "-0.08"]  # 0.75 - 0.83 (angry, calm)
    assert texts(difference)[2] == ""  # no published value: no difference


def test_table2_grid_keeps_the_speech_only_row(results):
    _, table_dir = results
    fig = figures.table2_grid(tables.read_long(table_dir / "table2.csv"))
    ours, published, _ = fig.axes[:3]
    # row "None" (speech only): lms in column LMS; the None/None corner has no configuration
    assert texts(ours)[:3] == ["", "60.0\n[35.2, 84.8]", "not run"]
    assert texts(published)[:3] == ["", "65.6\nin", "not published"]
    assert texts(ours)[3 * 6 + 1] == "60.0\n[35.2, 84.8]"  # Face KPD + LMS
    assert ours.images[0].get_array().mask[0, 0]


def test_confusion_figures_sum_the_folds(results):
    paths, _ = results
    frame = tables.read_metrics(paths)
    binary, fused, lms = figures.load_fold_results(frame)  # sorted by (task, configuration)
    assert (binary.configuration, fused.configuration, lms.configuration) == ("lms", "face_kpd+lms", "lms")
    fig = figures.confusion_figure(binary)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 8 and [ax.get_title().split(":")[0] for ax in panels] == list(paper.CLASSES)
    # pooled [[13, 3], [3, 6]]: counts annotated, colours the share of the true class
    assert texts(panels[0]) == ["13", "3", "3", "6"]
    assert np.allclose(panels[0].images[0].get_array(), [[13 / 16, 3 / 16], [3 / 9, 6 / 9]])
    assert panels[0].get_title() == "angry: macro-F1 0.74 (pooled)"
    del binary.confusions["sad"]
    fig = figures.confusion_figure(binary)
    assert "sad: not run" in [t for ax in fig.axes for t in texts(ax)]
    fig = figures.confusion_figure(lms)
    counts = np.array([int(t) for t in texts(fig.axes[0])]).reshape(8, 8)
    assert counts.sum() == 60 and np.trace(counts) == 38
    assert fig.axes[0].get_title() == "accuracy 63.3 % (pooled)"
    assert np.allclose(fig.axes[0].images[0].get_array().sum(axis=1), 1.0)


def test_training_curves_draw_every_fold_job_and_their_mean(results):
    paths, _ = results
    binary, fused, _ = figures.load_fold_results(tables.read_metrics(paths))
    lines = figures.curves_figure(fused).axes[0].lines
    thin, thick = (
        [ln for ln in lines if ln.get_linewidth() < 2],
        [ln for ln in lines if ln.get_linewidth() > 2],
    )
    assert len(thin) == 3 and len(thick) == 1
    assert np.allclose(thick[0].get_ydata(), [2.0, 1.0, 5 / 6]) and list(thick[0].get_xdata()) == [1, 2, 3]
    lines = figures.curves_figure(binary).axes[0].lines
    assert sum(ln.get_linewidth() < 2 for ln in lines) == 3 * 8


def test_a_missing_history_is_an_error_naming_the_file(results, tmp_path, capsys):
    paths, table_dir = results
    history = paths[-1].parent / "history.csv"
    history.unlink()
    assert draw(paths, table_dir, tmp_path / "figures") == 1
    assert f"{history} is missing" in capsys.readouterr().err
    assert not (tmp_path / "figures").exists()  # every file is read before the first figure is drawn


def test_interval_plots_show_each_cells_interval_and_the_paper_inside_or_outside(results):
    _, table_dir = results
    t2 = tables.read_long(table_dir / "table2.csv")
    fig = figures.table2_intervals(t2)
    ax = fig.axes[0]
    bars = [line for line in ax.lines if line.get_marker() in ("None", "")]
    # two cells ran (lms, face_kpd+lms): a bar each, from ci_low to ci_high
    assert sorted(tuple(np.round(line.get_xdata(), 2)) for line in bars) == [(35.16, 84.84)] * 2
    diamonds = {line.get_xdata()[0]: line for line in ax.lines if line.get_marker() == "D"}
    assert sorted(diamonds) == [65.6, 76.82]  # the paper's lms and face_kpd+lms
    assert all(d.get_markerfacecolor() != "white" for d in diamonds.values())  # inside: filled
    assert texts(ax).count("not run") == 21
    outside = t2.assign(ci_low=70.0, ci_high=80.0, paper_inside=0.0)
    diamonds = [line for line in figures.table2_intervals(outside).axes[0].lines if line.get_marker() == "D"]
    assert len(diamonds) == 2 and all(d.get_markerfacecolor() == "white" for d in diamonds)  # outside: hollow
    t1 = tables.read_long(table_dir / "table1.csv")
    assert len(figures.table1_intervals(t1).axes) == 9
