"""Aggregation: the metrics of every fold and seed -> the paper's Table 1 and Table 2 grids, beside the
published values.

Every cell of the paper's grid is present. A cell holds one model per fold and seed (config
``training.seeds``); one whose configuration ran on all folds with at least one seed shows (:func:`seed_summary`)

- the mean over folds and seeds,
- a 95 % interval for that mean (Student t over the seed means; with one seed, over the folds),
- the spread across folds (std of the seed-averaged fold values) and across seeds (std of the seed means),
  apart,
- the pooled value: the metric of the sum of the confusion matrices of every fold and seed. Every clip is
  tested exactly once per seed over the subject-wise folds, so this is the metric of one confusion matrix
  over the whole dataset (each seed once), which weighs the folds by their number of clips (the mean weighs
  them equally),
- the paper's value, whether it lies inside the interval, and the difference (ours - paper, from the mean).

Seeds count when every fold ran with them (a seed with a fold missing is left out and named in the log). A
cell with no complete seed says "not run" (NaN in the CSV). Table 1 is binary macro-F1 (0-1),
Table 2 8-class accuracy in % (as published). Each table is written as a long-form CSV (one row per cell,
the contract other code reads), Markdown and a LaTeX ``tabular``.

CLI (the ``build_tables`` rule); each fold's confusion.csv is read from the folder of its metrics.json::

    python -m avemotion.tables --metrics results/train/**/metrics.json --folds 5 --out-dir results/tables
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from avemotion import paper
from avemotion.io import DiskFullError, atomic_group
from avemotion.metrics import accuracy, macro_f1

NOT_RUN = "not run"
# The long-form CSV contract (other code reads these columns; read the files back with read_long).
STAT_COLUMNS = [
    "n_folds",
    "n_seeds",
    "mean",
    "std_folds",
    "std_seeds",
    "ci_low",
    "ci_high",
    "interval",
    "pooled",
]
TABLE1_COLUMNS = [
    "modality",
    "type",
    "features",
    "configuration",
    "emotion",
    *STAT_COLUMNS,
    "paper",
    "paper_range",
    "paper_inside",
    "difference",
]
TABLE2_COLUMNS = [
    "visual",
    "speech",
    "configuration",
    *STAT_COLUMNS,
    "paper",
    "paper_inside",
    "difference",
]
# The metric of each task's cells, from a confusion matrix (rows true class, columns predicted).
TASK_METRIC = {"binary": macro_f1, "multiclass": accuracy}


def read_metrics(paths: list[Path]) -> pd.DataFrame:
    """One row per model: configuration, task, target, fold, seed, value (the task's metric) and folder
    (where its metrics.json, confusion.csv and history.csv are)."""
    columns = ["configuration", "task", "target", "fold", "seed", "value", "folder"]
    rows = []
    for path in paths:
        m = json.loads(Path(path).read_text())
        missing = [k for k in columns[:-1] if k not in m]
        if missing:
            raise ValueError(
                f"{path} has no {', '.join(missing)}: it was written by an older version (before seeds); "
                "rerun its job"
            )
        rows.append({**{k: m[k] for k in columns[:-1]}, "folder": Path(path).parent})
    frame = pd.DataFrame(rows, columns=columns)
    dup = frame.duplicated(["configuration", "task", "target", "fold", "seed"])
    if dup.any():
        raise ValueError(
            f"duplicate fold metrics: {frame[dup].drop(columns='folder').to_dict('records')[:3]}"
        )
    return frame


def class_names(task: str, target: str) -> list[str]:
    """The confusion matrix labels of a fold job: ["rest", emotion] (binary) or the 8 classes (multiclass)."""
    return ["rest", target] if task == "binary" else list(paper.CLASSES)


def read_confusion(folder: Path, classes: list[str]) -> np.ndarray:
    """A fold job's confusion.csv (rows true, columns predicted; first column the class names) as counts."""
    path = Path(folder) / "confusion.csv"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: every fold folder with a metrics.json needs its confusion.csv"
        )
    frame = pd.read_csv(path, index_col=0)
    if list(frame.index) != classes or list(frame.columns) != classes:
        raise ValueError(
            f"{path}: classes {list(frame.index)} x {list(frame.columns)}, expected {classes} in both; "
            "rerun the fold job"
        )
    return frame.to_numpy(dtype=np.int64)


def pooled_confusion(folders: list[Path], task: str, target: str) -> np.ndarray:
    """The sum of the fold confusion matrices: every clip counted once, in its fold's test set."""
    classes = class_names(task, target)
    return sum(
        (read_confusion(folder, classes) for folder in folders), np.zeros((len(classes),) * 2, np.int64)
    )


# The confidence of a cell's 95 % interval (two-sided Student t).
CONFIDENCE = 0.95
INTERVAL_METHODS = {"seeds": "t over seed means", "folds": "t over folds"}


def seed_summary(
    values: np.ndarray, confidence: float = CONFIDENCE, bounds: tuple[float, float] = (-math.inf, math.inf)
) -> dict:
    """The statistics of one cell from its (folds, seeds) grid of metric values (every fold run with every
    seed):

    - ``mean``: over all folds and seeds (= the mean of the seed means: the grid is complete);
    - ``std_folds``: the sample std (ddof 1) over the folds of each fold's value averaged over the seeds, the
      spread between speaker groups (with one seed, the classic std over folds);
    - ``std_seeds``: the sample std (ddof 1) over the seeds of each seed's mean over the folds, how much the
      cell's value moves with the seed alone (NaN with one seed);
    - ``ci_low``, ``ci_high``: a two-sided ``confidence`` Student-t interval for the cell's mean. With two
      or more seeds it is over the k seed means (``interval`` "seeds": mean +- t(k-1) std_seeds / sqrt(k)):
      the folds are the paper's fixed split, so what is random in a rerun is the seed. With one seed there
      is no seed spread to measure and it is over the n folds (``interval`` "folds": mean +- t(n-1)
      std_folds / sqrt(n)), which carries the seed's noise inside the fold spread. NaN with one fold and one
      seed. The interval is clipped to ``bounds``, the metric's range (a t interval of few values can reach
      past 0 % or 100 %).
    """
    grid = np.asarray(values, dtype=np.float64)
    if grid.ndim != 2 or grid.size == 0 or not np.isfinite(grid).all():
        raise ValueError(f"a cell's values must be a finite (folds, seeds) grid, got {grid.shape}")
    n_folds, n_seeds = grid.shape
    fold_means, seed_means = grid.mean(axis=1), grid.mean(axis=0)
    std_folds = float(fold_means.std(ddof=1)) if n_folds > 1 else math.nan
    std_seeds = float(seed_means.std(ddof=1)) if n_seeds > 1 else math.nan
    mean = float(grid.mean())
    if n_seeds > 1:
        method, spread, n = "seeds", std_seeds, n_seeds
    elif n_folds > 1:
        method, spread, n = "folds", std_folds, n_folds
    else:
        method, spread, n = "", math.nan, 1
    if n > 1:
        # Imported here: scipy.stats takes 1.0-1.4 s to import (measured), and every training job imports
        # this module (through avemotion.runs); only the aggregation needs it.
        from scipy import stats

        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * spread / math.sqrt(n)
        low, high = max(mean - half, bounds[0]), min(mean + half, bounds[1])
    else:
        low = high = math.nan
    return {
        "n_folds": n_folds,
        "n_seeds": n_seeds,
        "mean": mean,
        "std_folds": std_folds,
        "std_seeds": std_seeds,
        "ci_low": low,
        "ci_high": high,
        "interval": method,
    }


def paper_inside(published, low: float, high: float) -> float:
    """1.0 when the paper's value lies in [low, high], 0.0 when outside, NaN when either is missing."""
    if published is None or any(_isnan(x) for x in (published, low, high)):
        return math.nan
    return float(low <= float(published) <= high)


def complete_seeds(sel: pd.DataFrame, n_folds: int) -> list[int]:
    """The seeds of one cell's models that ran on all ``n_folds`` folds, in ascending order."""
    folds = sel.groupby("seed")["fold"].nunique()
    return sorted(int(seed) for seed, n in folds.items() if n == n_folds)


def cell_stats(
    frame: pd.DataFrame, configuration: str, task: str, target: str, n_folds: int, scale=1.0
) -> dict:
    """The cell's :func:`seed_summary` over its complete seeds and its pooled value (the metric of the
    confusion matrices summed over every fold and seed), scaled; NaN (``n_seeds`` 0) without a complete
    seed (:func:`partial_seed_notes` names the seeds left out)."""
    sel = frame[(frame.configuration == configuration) & (frame.task == task) & (frame.target == target)]
    seeds = complete_seeds(sel, n_folds)
    if not seeds:
        empty = dict.fromkeys(STAT_COLUMNS, math.nan)
        return {**empty, "n_folds": sel["fold"].nunique(), "n_seeds": 0, "interval": ""}
    sel = sel[sel["seed"].isin(seeds)]
    grid = sel.pivot(index="fold", columns="seed", values="value").sort_index()
    stats = seed_summary(grid.to_numpy() * scale, bounds=(0.0, scale))  # the metric's range
    cm = pooled_confusion(sel.sort_values(["seed", "fold"])["folder"].tolist(), task, target)
    return {**stats, "pooled": TASK_METRIC[task](cm) * scale}


def _compared(stats: dict, published) -> dict:
    """The paper's value beside a cell's statistics: inside the interval or not, ours - paper."""
    return {
        "paper": published,
        "paper_inside": paper_inside(published, stats["ci_low"], stats["ci_high"]),
        "difference": stats["mean"] - published if published is not None else math.nan,
    }


def partial_seed_notes(frame: pd.DataFrame, n_folds: int) -> list[str]:
    """One line per cell with seeds left out because a fold of theirs is missing."""
    notes = []
    for (configuration, task, target), sel in frame.groupby(["configuration", "task", "target"]):
        partial = sorted(set(sel["seed"].astype(int)) - set(complete_seeds(sel, n_folds)))
        if partial:
            notes.append(
                f"{configuration} {task} {target}: seed(s) {partial} left out, not run on all {n_folds} folds"
            )
    return notes


def table1(frame: pd.DataFrame, n_folds: int) -> pd.DataFrame:
    """Long form of Table 1: one row per (feature row, emotion); macro-F1 0-1."""
    published = paper.published_values()["table1"]
    rows = []
    for key, modality, kind, label in paper.TABLE1_ROWS:
        for j, emotion in enumerate(paper.CLASSES):
            stats = cell_stats(frame, key, "binary", emotion, n_folds)
            rows.append(
                {
                    "modality": modality,
                    "type": kind,
                    "features": label,
                    "configuration": key,
                    "emotion": emotion,
                    **stats,
                    **_compared(stats, published["rows"][key][j]),
                    "paper_range": published.get("ranges", {}).get(f"{key}/{emotion}"),
                }
            )
    return pd.DataFrame(rows, columns=TABLE1_COLUMNS)


def table2(frame: pd.DataFrame, n_folds: int) -> pd.DataFrame:
    """Long form of Table 2: one row per (visual row, speech column) cell; accuracy in %."""
    published = paper.published_values()["table2"]["cells"]
    rows = []
    for row, column, configuration in paper.table2_cells():
        stats = cell_stats(frame, configuration, "multiclass", "all", n_folds, scale=100.0)
        rows.append(
            {
                "visual": row,
                "speech": column,
                "configuration": configuration,
                **stats,
                **_compared(stats, published.get(configuration)),
            }
        )
    return pd.DataFrame(rows, columns=TABLE2_COLUMNS)


def read_long(path: Path) -> pd.DataFrame:
    """table1.csv or table2.csv back as written: NaN only for empty fields, so that the row and column
    label "None" (Table 2's speech-only row and visual-only column) stays a label, not a missing value."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


# ------------------------------------------------------------------------------------------ rendering


def _isnan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def format_cell(r, digits: int, latex: bool = False) -> str:
    """One cell of a long-form table row ``r`` as text: ``0.71 [0.66, 0.76] ±0.04 folds ±0.02 seeds, pooled
    0.72 (paper 0.83 outside, -0.12)``: the mean over folds and seeds, its 95 % interval, the spreads across
    folds and across seeds (the seeds' omitted with one seed), the pooled value, the paper's value with
    whether it lies inside the interval, and ours - paper. "not run" for an empty cell. With ``latex`` the
    same text as LaTeX: numbers in math mode, ``$\\pm$``, a minus sign, an en dash in ranges."""
    if _isnan(r.mean):
        return NOT_RUN

    def num(x: float, signed: bool = False) -> str:
        text = f"{x:{'+' if signed else ''}.{digits}f}"
        return f"${text}$" if latex else text

    pm = "$\\pm$" if latex else "±"
    text = num(r.mean)
    if not _isnan(r.ci_low):
        text += f" [{num(r.ci_low)}, {num(r.ci_high)}]"
    if not _isnan(r.std_folds):
        text += f" {pm}{num(r.std_folds)} folds"
    if not _isnan(r.std_seeds):
        text += f" {pm}{num(r.std_seeds)} seeds"
    text += f", pooled {num(r.pooled)}"
    if not _isnan(r.paper):
        where = "" if _isnan(r.paper_inside) else (" inside" if r.paper_inside else " outside")
        return f"{text} (paper {num(r.paper)}{where}, {num(r.mean - r.paper, signed=True)})"
    paper_range = getattr(r, "paper_range", None)
    if isinstance(paper_range, list):
        dash = "--" if latex else "-"
        return f"{text} (paper 0.8?, {paper_range[0]:.2f}{dash}{paper_range[1]:.2f})"
    return f"{text} (paper: not published)"


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "—": "---",
    "−": "$-$",
    "±": "$\\pm$",
}


def latex_escape(text: str) -> str:
    """Plain text as LaTeX text: the ten special characters escaped, dashes and ± spelled out."""
    return "".join(LATEX_SPECIALS.get(c, c) for c in str(text))


def latex_table(header: list[str], body: list[list[str]], caption: str) -> str:
    """A plain ``tabular`` (no package needed): ``header`` and ``caption`` are escaped here, the body cells
    are LaTeX already. The caption goes in a comment: the including document owns the float and its caption."""
    spec = "l" * len(header)
    lines = [
        f"% {latex_escape(caption)}",
        "% Generated by avemotion.tables; wide: wrap in \\resizebox{\\textwidth}{!}{...}.",
    ]
    lines += [f"\\begin{{tabular}}{{{spec}}}", "\\hline"]
    lines.append(" & ".join(latex_escape(h) for h in header) + " \\\\")
    lines.append("\\hline")
    lines += [" & ".join(row) + " \\\\" for row in body]
    lines += ["\\hline", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


CELL_LEGEND = (
    "mean over folds and seeds [95 % interval: t over the seed means, over the folds with one seed] ± std "
    "across folds ± std across seeds, pooled over folds and seeds; paper value inside or outside the "
    "interval, ours − paper"
)
TABLE1_TITLE = f"Table 1 — binary (one emotion vs rest), macro-F1: {CELL_LEGEND}"
TABLE2_TITLE = f"Table 2 — 8-class accuracy %: {CELL_LEGEND}"


def _table1_body(long: pd.DataFrame, latex: bool) -> list[list[str]]:
    body = []
    for (modality, kind, label), group in long.groupby(["modality", "type", "features"], sort=False):
        cells = [format_cell(r, 2, latex) for r in group.itertuples(index=False)]
        labels = [modality, kind, label]
        body.append([*(latex_escape(x) for x in labels), *cells] if latex else [*labels, *cells])
    return body


def _table2_body(long: pd.DataFrame, latex: bool) -> list[list[str]]:
    cells = {(r.visual, r.speech): r for r in long.itertuples(index=False)}
    body = []
    for row, _ in paper.TABLE2_ROWS:
        line = [latex_escape(row) if latex else row]
        for column, _ in paper.TABLE2_COLUMNS:
            r = cells.get((row, column))  # None for the None/None corner, which has no configuration
            empty = "---" if latex else "—"
            line.append(empty if r is None else format_cell(r, 2, latex=latex))
        body.append(line)
    return body


TABLE1_HEADER = ["modality", "type", "features", *paper.CLASSES]
TABLE2_HEADER = ["visual \\ speech", *(column for column, _ in paper.TABLE2_COLUMNS)]


def table1_markdown(long: pd.DataFrame) -> str:
    return f"{TABLE1_TITLE}\n\n" + markdown_table(TABLE1_HEADER, _table1_body(long, latex=False))


def table2_markdown(long: pd.DataFrame) -> str:
    return f"{TABLE2_TITLE}\n\n" + markdown_table(TABLE2_HEADER, _table2_body(long, latex=False))


def table1_latex(long: pd.DataFrame) -> str:
    return latex_table(TABLE1_HEADER, _table1_body(long, latex=True), TABLE1_TITLE)


def table2_latex(long: pd.DataFrame) -> str:
    return latex_table(TABLE2_HEADER, _table2_body(long, latex=True), TABLE2_TITLE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--metrics", type=Path, nargs="*", default=[])
    parser.add_argument("--folds", type=int, required=True, help="number of folds a complete cell has")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        frame = read_metrics(args.metrics)
        t1, t2 = table1(frame, args.folds), table2(frame, args.folds)
    except (ValueError, KeyError, FileNotFoundError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    outputs = {
        "table1.csv": t1.to_csv(index=False, float_format="%.4f"),
        "table1.md": table1_markdown(t1),
        "table1.tex": table1_latex(t1),
        "table2.csv": t2.to_csv(index=False, float_format="%.4f"),
        "table2.md": table2_markdown(t2),
        "table2.tex": table2_latex(t2),
    }
    try:
        with atomic_group() as tmp:  # the six files replace the earlier ones together or not at all
            for name, text in outputs.items():
                tmp(args.out_dir / name).write_text(text)
    except DiskFullError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for note in partial_seed_notes(frame, args.folds):
        print(f"warning: {note}")
    filled = int(t1["mean"].notna().sum()), int(t2["mean"].notna().sum())
    print(f"Table 1: {filled[0]}/{len(t1)} cells filled; Table 2: {filled[1]}/{len(t2)} cells filled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
