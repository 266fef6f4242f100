"""Figures of the aggregated results, drawn with matplotlib (Agg) by one process:

- ``table1_heatmap.png``: Table 1 (binary macro-F1) as heat maps, ours (mean over folds and seeds, its 95 %
  interval under it) | the paper's (marked "in" or "out" of our interval) | ours - paper; ours and the
  paper's share one colour scale; every cell annotated; cells not run or not published are hatched.
- ``table2_grid.png``: Table 2 (8-class accuracy %) as the same three grids (visual rows x speech columns).
- ``table1_intervals.png``, ``table2_intervals.png``: every cell's mean with its 95 % interval as a bar, the
  paper's value as a marker, filled where it lies inside the interval and hollow where outside (Table 1: one
  panel per feature row).
- ``confusion/<table1|table2>_<configuration>.png``: the confusion matrix pooled over the folds (the sum of
  the fold matrices: every clip once), colours normalised per true class (row), counts annotated; a Table 1
  configuration gets its 8 one-vs-rest 2x2 matrices as panels of one figure.
- ``curves/<table1|table2>_<configuration>.png``: training loss per epoch, every fold (and, for Table 1,
  every emotion) a thin line, their mean per epoch a thick one.

The tables come from their long-form CSVs (``avemotion.tables``), the rest from the fold folders: the
confusion.csv and history.csv beside each metrics.json.

CLI (the ``draw_figures`` rule)::

    python -m avemotion.figures --metrics results/train/**/metrics.json \\
        --table1 results/tables/table1.csv --table2 results/tables/table2.csv --out-dir results/figures
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from avemotion import paper, tables
from avemotion.io import DiskFullError, atomic_path

matplotlib.use("Agg")  # files only, no display; figures are Figure objects (no pyplot state to close)

TABLE_OF_TASK = {"binary": "table1", "multiclass": "table2"}
TARGET_ORDER = (*paper.CLASSES, "all")
DPI = 100
HATCH = {"hatch": "///", "fill": False, "edgecolor": "0.75", "linewidth": 0}


def figure_name(task: str, configuration: str) -> str:
    """``table1_face_kpd.png``, ``table2_eyes_resnet+lms.png``: the file of a configuration's figure."""
    return f"{TABLE_OF_TASK[task]}_{configuration}.png"


def _configurations(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted(set(zip(frame["task"], frame["configuration"], strict=True)))


def save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


# -------------------------------------------------------------------------------------- table grids


def _text_color(cmap: Colormap, norm: Normalize, value: float) -> str:
    r, g, b, _ = cmap(norm(value))
    return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"


def grid_panel(
    ax: Axes,
    values: np.ndarray,
    texts: list[list[str]],
    norm: Normalize,
    cmap: str,
    rows: list[str],
    columns: list[str],
    title: str,
):
    """One annotated heat map; NaN cells blank and hatched (their text, if any, in grey)."""
    colormap = matplotlib.colormaps[cmap].with_extremes(bad="white")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=colormap, norm=norm, aspect="auto")
    for i, j in np.ndindex(values.shape):
        blank = math.isnan(values[i, j])
        if blank:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, **HATCH))
        color = "0.35" if blank else _text_color(colormap, norm, values[i, j])
        ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=7, color=color, in_layout=False)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(title)
    return image


def shared_norm(arrays: list[np.ndarray], top: float) -> Normalize:
    """One colour scale for ours and the paper's: from the lowest finite value (down to a tenth of ``top``)
    to ``top`` (1 for macro-F1, 100 for accuracy %)."""
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays])
    step = top / 10
    low = math.floor(finite.min() / step) * step if finite.size else 0.0
    return Normalize(min(low, top - step), top)


def difference_norm(difference: np.ndarray, top: float) -> Normalize:
    """A colour scale symmetric around 0 (ours = paper)."""
    finite = np.abs(difference[np.isfinite(difference)])
    limit = float(finite.max()) if finite.size and finite.max() > 0 else top / 10
    return Normalize(-limit, limit)


def compare_figure(
    ours: np.ndarray,
    ours_text: list[list[str]],
    published: np.ndarray,
    published_text: list[list[str]],
    rows: list[str],
    columns: list[str],
    top: float,
    metric: str,
    title: str,
    figsize: tuple[float, float],
) -> Figure:
    """Three panels: ours | the paper's (one colour scale) | ours - paper (diverging scale)."""
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    norm = shared_norm([ours, published], top)
    digits = 2 if top == 1 else 1
    difference = ours - published
    diff_text = [[f"{d:+.{digits}f}" if np.isfinite(d) else "" for d in row] for row in difference]
    image = grid_panel(
        axes[0], ours, ours_text, norm, "viridis", rows, columns, "ours (mean [95 % interval])"
    )
    grid_panel(axes[1], published, published_text, norm, "viridis", rows, columns, "paper")
    diff_image = grid_panel(
        axes[2],
        difference,
        diff_text,
        difference_norm(difference, top),
        "RdBu",
        rows,
        columns,
        "ours − paper",
    )
    fig.colorbar(image, ax=axes[:2].tolist(), label=metric, shrink=0.9)
    fig.colorbar(diff_image, ax=axes[2], label=f"{metric}, ours − paper", shrink=0.9)
    fig.suptitle(title)
    return fig


def _ours_text(r, digits: int) -> str:
    """The mean over folds and seeds, and under it the 95 % interval."""
    if math.isnan(r["mean"]):
        return "not run"
    if math.isnan(r["ci_low"]):
        return f"{r['mean']:.{digits}f}"
    return f"{r['mean']:.{digits}f}\n[{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]"


def _paper_text(r, digits: int) -> str:
    """The paper's value, and whether it lies in our 95 % interval ("in", "out")."""
    inside = r["paper_inside"]
    mark = "" if math.isnan(inside) else ("\nin" if inside else "\nout")
    return f"{r['paper']:.{digits}f}{mark}"


def table1_heatmap(t1: pd.DataFrame) -> Figure:
    """Table 1 (long-form CSV of ``avemotion.tables``): feature rows x emotions, ours beside the paper's."""
    cells = t1.set_index(["configuration", "emotion"])
    keys = [key for key, *_ in paper.TABLE1_ROWS]
    shape = (len(keys), len(paper.CLASSES))
    ours, published = np.full(shape, math.nan), np.full(shape, math.nan)
    ours_text = [["not run"] * shape[1] for _ in keys]
    published_text = [[""] * shape[1] for _ in keys]
    for i, key in enumerate(keys):
        for j, emotion in enumerate(paper.CLASSES):
            if (key, emotion) not in cells.index:
                continue
            r = cells.loc[(key, emotion)]
            ours[i, j], published[i, j] = r["mean"], r["paper"]
            ours_text[i][j] = _ours_text(r, 2)
            if not math.isnan(r["paper"]):
                published_text[i][j] = _paper_text(r, 2)
            else:  # the two values extracted as "08": only their range is known
                has_range = isinstance(r.get("paper_range"), str | list)  # a list in memory, text in the CSV
                published_text[i][j] = "0.8?" if has_range else "not published"
    rows = [f"{label} ({kind})" for _, _, kind, label in paper.TABLE1_ROWS]
    return compare_figure(
        ours,
        ours_text,
        published,
        published_text,
        rows,
        list(paper.CLASSES),
        top=1.0,
        metric="macro-F1",
        title="Table 1: binary (one emotion vs rest) macro-F1",
        figsize=(19, 5.2),
    )


def table2_grid(t2: pd.DataFrame) -> Figure:
    """Table 2 (long-form CSV): visual rows x speech columns, ours beside the paper's; the corner is empty."""
    cells = {(r.visual, r.speech): r for r in t2.itertuples(index=False)}
    rows = [label for label, _ in paper.TABLE2_ROWS]
    columns = [label for label, _ in paper.TABLE2_COLUMNS]
    ours, published = (
        np.full((len(rows), len(columns)), math.nan),
        np.full((len(rows), len(columns)), math.nan),
    )
    ours_text = [[""] * len(columns) for _ in rows]
    published_text = [[""] * len(columns) for _ in rows]
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            r = cells.get((row, column))
            if r is None:  # the None/None corner has no configuration
                continue
            ours[i, j], published[i, j] = r.mean, r.paper
            ours_text[i][j] = _ours_text(r._asdict(), 1)
            published_text[i][j] = "not published" if math.isnan(r.paper) else _paper_text(r._asdict(), 1)
    return compare_figure(
        ours,
        ours_text,
        published,
        published_text,
        rows,
        columns,
        top=100.0,
        metric="accuracy %",
        title="Table 2: 8-class accuracy % (rows: visual features, columns: speech features)",
        figsize=(13, 5.5),
    )


def interval_panel(ax: Axes, rows: pd.DataFrame, labels: list[str], metric: str, title: str) -> None:
    """Per row (top to bottom): the mean as a dot, its 95 % interval as a bar, the paper's value as a
    diamond, filled when inside the interval, hollow when outside; rows not run are labelled so."""
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows.to_dict("records"), strict=True):
        if math.isnan(r["mean"]):
            ax.text(0.5, yi, "not run", transform=ax.get_yaxis_transform(), ha="center", va="center",
                    fontsize=7, color="0.5")  # fmt: skip
            continue
        if not math.isnan(r["ci_low"]):
            ax.plot([r["ci_low"], r["ci_high"]], [yi, yi], color="tab:blue", lw=2.5, solid_capstyle="butt")
        ax.plot(r["mean"], yi, "o", color="tab:blue", ms=4)
        published = r["paper"]
        if published is not None and not math.isnan(published):
            inside = r["paper_inside"] == 1
            ax.plot(published, yi, "D", ms=5, color="tab:red", mfc="tab:red" if inside else "white")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(metric)
    ax.grid(axis="x", color="0.9")
    ax.set_title(title, fontsize=9)


INTERVAL_LEGEND = [
    Line2D([], [], color="tab:blue", marker="o", lw=2.5, ms=4, label="ours: mean, 95 % interval"),
    Line2D([], [], color="tab:red", marker="D", lw=0, ms=5, label="paper, inside the interval"),
    Line2D([], [], color="tab:red", marker="D", lw=0, ms=5, mfc="white", label="paper, outside"),
]


def table1_intervals(t1: pd.DataFrame) -> Figure:
    """Table 1's cells as intervals: one panel per feature row, its 8 emotions."""
    fig = Figure(figsize=(15, 9), layout="constrained")
    axes = fig.subplots(3, 3, sharex=True).ravel()
    for ax, (key, _, kind, label) in zip(axes, paper.TABLE1_ROWS, strict=True):
        rows = t1[t1["configuration"] == key].set_index("emotion").reindex(list(paper.CLASSES)).reset_index()
        interval_panel(ax, rows, list(paper.CLASSES), "macro-F1", f"{label} ({kind})")
    fig.legend(handles=INTERVAL_LEGEND, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(
        "Table 1: binary macro-F1, mean over folds and seeds with its 95 % interval, and the paper's"
    )
    return fig


def table2_intervals(t2: pd.DataFrame) -> Figure:
    """Table 2's cells as intervals, row-major as in the table."""
    fig = Figure(figsize=(8, 8), layout="constrained")
    ax = fig.subplots()
    labels = [f"{r.visual} | {r.speech}" for r in t2.itertuples(index=False)]
    interval_panel(ax, t2, labels, "accuracy %", "visual | speech")
    fig.legend(handles=INTERVAL_LEGEND, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle("Table 2: 8-class accuracy %, mean over folds and seeds with its 95 % interval")
    return fig


# -------------------------------------------------------------------------- per configuration


def confusion_panel(ax: Axes, cm: np.ndarray, classes: list[str], title: str):
    """Counts annotated; colour = share of the true class (row-normalised), so rare classes read alike."""
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape), where=totals > 0)
    colormap, norm = matplotlib.colormaps["Blues"], Normalize(0, 1)
    image = ax.imshow(share, cmap=colormap, norm=norm)
    for i, j in np.ndindex(cm.shape):
        ax.text(
            j,
            i,
            str(cm[i, j]),
            ha="center",
            va="center",
            fontsize=8,
            color=_text_color(colormap, norm, share[i, j]),
            in_layout=False,
        )
    ax.set_xticks(
        range(len(classes)),
        classes,
        rotation=30 if len(classes) > 2 else 0,
        ha="right" if len(classes) > 2 else "center",
    )
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return image


@dataclass
class FoldResults:
    """What the figures of one configuration need, read from its fold folders."""

    task: str
    configuration: str
    n_folds: int
    n_seeds: int
    confusions: dict[str, np.ndarray]  # target -> confusion matrix summed over its folds and seeds
    histories: list[tuple[str, int, pd.DataFrame]]  # (target, fold, history with epoch and train_loss)

    @property
    def name(self) -> str:
        return figure_name(self.task, self.configuration)

    @property
    def pooled_over(self) -> str:
        """ "5 folds", "5 folds x 3 seeds": what its confusion matrices sum."""
        seeds = f" x {self.n_seeds} seeds" if self.n_seeds > 1 else ""
        return f"{self.n_folds} folds{seeds}"


def read_history(folder: Path) -> pd.DataFrame:
    path = Path(folder) / "history.csv"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: every fold folder with a metrics.json needs its history.csv"
        )
    history = pd.read_csv(path)
    missing = {"epoch", "train_loss"} - set(history.columns)
    if missing:
        raise ValueError(f"{path}: no column(s) {sorted(missing)}; rerun the fold job")
    return history[["epoch", "train_loss"]]


def load_fold_results(frame: pd.DataFrame) -> list[FoldResults]:
    """Every configuration's pooled confusion matrices and training histories (``frame``: the rows of
    ``tables.read_metrics``). All files are read before anything is drawn, so that a missing or malformed
    one stops the job before it writes a figure."""
    loaded = []
    for task, configuration in _configurations(frame):
        rows = frame[(frame["task"] == task) & (frame["configuration"] == configuration)]
        order = rows["target"].map(TARGET_ORDER.index)  # the tables' class order, then "all"
        rows = rows.assign(order=order).sort_values(["order", "seed", "fold"])
        confusions = {
            target: tables.pooled_confusion(group["folder"].tolist(), task, target)
            for target, group in rows.groupby("target", sort=False)
        }
        histories = [(r.target, r.fold, read_history(r.folder)) for r in rows.itertuples(index=False)]
        n_folds, n_seeds = rows["fold"].nunique(), rows["seed"].nunique()
        loaded.append(FoldResults(task, configuration, n_folds, n_seeds, confusions, histories))
    return loaded


def confusion_figure(results: FoldResults) -> Figure:
    """The pooled confusion matrix of a configuration; for Table 1 its 8 one-vs-rest matrices as panels."""
    metric = tables.TASK_METRIC[results.task]
    if results.task == "multiclass":
        fig = Figure(figsize=(7, 6), layout="constrained")
        cm = results.confusions["all"]
        title = f"accuracy {100 * metric(cm):.1f} % (pooled)"
        image = confusion_panel(fig.subplots(), cm, tables.class_names(results.task, "all"), title)
        fig.suptitle(f"Table 2 — {results.configuration}: confusion matrix pooled over {results.pooled_over}")
    else:
        fig = Figure(figsize=(13, 6.5), layout="constrained")
        image = None
        for ax, emotion in zip(fig.subplots(2, 4).ravel(), paper.CLASSES, strict=True):
            cm = results.confusions.get(emotion)
            if cm is None:
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"{emotion}: not run", ha="center", va="center", transform=ax.transAxes)
                continue
            title = f"{emotion}: macro-F1 {metric(cm):.2f} (pooled)"
            image = confusion_panel(ax, cm, tables.class_names(results.task, emotion), title)
        fig.suptitle(
            f"Table 1 — {results.configuration}: one vs rest, confusion matrices pooled over {results.pooled_over}"
        )
    if image is not None:
        fig.colorbar(image, ax=fig.axes, label="share of the true class", shrink=0.8)
    return fig


def curves_figure(results: FoldResults) -> Figure:
    """Training loss per epoch: one thin line per model (coloured by emotion for Table 1, by fold for
    Table 2; one line per seed), the mean over them per epoch thick."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    binary = results.task == "binary"
    keys = list(dict.fromkeys(target if binary else fold for target, fold, _ in results.histories))
    colors = dict(zip(keys, matplotlib.colormaps["tab10"].colors, strict=False))
    for target, fold, history in results.histories:
        color = colors[target if binary else fold]
        ax.plot(history["epoch"], history["train_loss"], lw=0.8, alpha=0.6, color=color)
    mean = pd.concat([h for *_, h in results.histories]).groupby("epoch")["train_loss"].mean()
    ax.plot(mean.index, mean.to_numpy(), lw=2.5, color="black")
    handles = [Line2D([], [], color=colors[k], lw=1.5, label=k if binary else f"fold {k}") for k in keys]
    handles.append(Line2D([], [], color="black", lw=2.5, label="mean"))
    ax.legend(handles=handles, fontsize=8, ncols=2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    what = f"{results.n_folds} folds" + (f" x {len(keys)} emotions" if binary else "")
    number = TABLE_OF_TASK[results.task][-1]
    ax.set_title(f"Table {number} — {results.configuration}: training loss per epoch ({what})")
    return fig


def draw_all(frame: pd.DataFrame, t1: pd.DataFrame, t2: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Every figure (see the module docstring) under ``out_dir``; returns their paths, sorted."""
    out_dir = Path(out_dir)
    loaded = load_fold_results(frame)
    for kind in ("confusion", "curves"):  # present even when nothing ran: they are declared outputs
        (out_dir / kind).mkdir(parents=True, exist_ok=True)
    paths = [save(table1_heatmap(t1), out_dir / "table1_heatmap.png")]
    paths.append(save(table2_grid(t2), out_dir / "table2_grid.png"))
    paths.append(save(table1_intervals(t1), out_dir / "table1_intervals.png"))
    paths.append(save(table2_intervals(t2), out_dir / "table2_intervals.png"))
    for results in loaded:
        paths.append(save(confusion_figure(results), out_dir / "confusion" / results.name))
        paths.append(save(curves_figure(results), out_dir / "curves" / results.name))
    return sorted(paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--metrics", type=Path, nargs="*", default=[], help="the fold jobs' metrics.json")
    parser.add_argument("--table1", type=Path, required=True, help="table1.csv of avemotion.tables")
    parser.add_argument("--table2", type=Path, required=True, help="table2.csv of avemotion.tables")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        frame = tables.read_metrics(args.metrics)
        t1, t2 = tables.read_long(args.table1), tables.read_long(args.table2)
        paths = draw_all(frame, t1, t2, args.out_dir)
    except (ValueError, KeyError, FileNotFoundError, json.JSONDecodeError, DiskFullError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = frame.groupby(["task", "configuration"]).ngroups
    print(
        f"{len(paths)} figures in {args.out_dir}: 2 table grids, 2 interval plots, 2 per configuration ({n})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
