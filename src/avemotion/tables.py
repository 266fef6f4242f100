"""Aggregation: fold metrics -> the paper's Table 1 and Table 2 grids, beside the published values.

Every cell of the paper's grid is present. A cell whose configuration ran on all folds shows

- the mean and the standard deviation of the fold metrics (sample std, ddof = 1),
- the pooled value: the metric of the sum of the fold confusion matrices. Every clip is tested exactly once
  over the subject-wise folds, so this is the metric of one confusion matrix over the whole dataset, which
  weighs the folds by their number of clips (the mean weighs them equally),
- the paper's value and the difference (ours - paper, from the mean).

A cell that did not run on every fold says "not run" (NaN in the CSV). Table 1 is binary macro-F1 (0-1),
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
TABLE1_COLUMNS = [
    "modality",
    "type",
    "features",
    "configuration",
    "emotion",
    "n_folds",
    "mean",
    "std",
    "pooled",
    "paper",
    "paper_range",
    "difference",
]
TABLE2_COLUMNS = [
    "visual",
    "speech",
    "configuration",
    "n_folds",
    "mean",
    "std",
    "pooled",
    "paper",
    "difference",
]
# The metric of each task's cells, from a confusion matrix (rows true class, columns predicted).
TASK_METRIC = {"binary": macro_f1, "multiclass": accuracy}


def read_metrics(paths: list[Path]) -> pd.DataFrame:
    """One row per fold job: configuration, task, target, fold, value (the task's metric) and folder (where
    its metrics.json, confusion.csv and history.csv are)."""
    columns = ["configuration", "task", "target", "fold", "value", "folder"]
    rows = []
    for path in paths:
        m = json.loads(Path(path).read_text())
        rows.append({**{k: m[k] for k in columns[:-1]}, "folder": Path(path).parent})
    frame = pd.DataFrame(rows, columns=columns)
    dup = frame.duplicated(["configuration", "task", "target", "fold"])
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


def summarize(values: list[float], n_folds: int, scale: float = 1.0) -> dict:
    """Mean and sample std of a cell's fold values (scaled); NaN when not every fold ran."""
    if len(values) != n_folds:
        return {"n_folds": len(values), "mean": math.nan, "std": math.nan}
    arr = np.asarray(values, dtype=np.float64) * scale
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"n_folds": len(values), "mean": float(arr.mean()), "std": std}


def cell_stats(
    frame: pd.DataFrame, configuration: str, task: str, target: str, n_folds: int, scale=1.0
) -> dict:
    """n_folds, mean, std (over the folds) and pooled (metric of the summed confusion matrices), scaled; NaN
    unless every fold ran."""
    sel = frame[(frame.configuration == configuration) & (frame.task == task) & (frame.target == target)]
    sel = sel.sort_values("fold")
    stats = summarize(sel["value"].tolist(), n_folds, scale)
    stats["pooled"] = math.nan
    if not math.isnan(stats["mean"]):
        cm = pooled_confusion(sel["folder"].tolist(), task, target)
        stats["pooled"] = TASK_METRIC[task](cm) * scale
    return stats


def table1(frame: pd.DataFrame, n_folds: int) -> pd.DataFrame:
    """Long form of Table 1: one row per (feature row, emotion); macro-F1 0-1."""
    published = paper.published_values()["table1"]
    rows = []
    for key, modality, kind, label in paper.TABLE1_ROWS:
        for j, emotion in enumerate(paper.CLASSES):
            stats = cell_stats(frame, key, "binary", emotion, n_folds)
            value = published["rows"][key][j]
            rows.append(
                {
                    "modality": modality,
                    "type": kind,
                    "features": label,
                    "configuration": key,
                    "emotion": emotion,
                    **stats,
                    "paper": value,
                    "paper_range": published.get("ranges", {}).get(f"{key}/{emotion}"),
                    "difference": stats["mean"] - value if value is not None else math.nan,
                }
            )
    return pd.DataFrame(rows, columns=TABLE1_COLUMNS)


def table2(frame: pd.DataFrame, n_folds: int) -> pd.DataFrame:
    """Long form of Table 2: one row per (visual row, speech column) cell; accuracy in %."""
    published = paper.published_values()["table2"]["cells"]
    rows = []
    for row, column, configuration in paper.table2_cells():
        stats = cell_stats(frame, configuration, "multiclass", "all", n_folds, scale=100.0)
        value = published.get(configuration)
        rows.append(
            {
                "visual": row,
                "speech": column,
                "configuration": configuration,
                **stats,
                "paper": value,
                "difference": stats["mean"] - value if value is not None else math.nan,
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


def format_cell(
    mean: float, std: float, pooled: float, published, digits: int, paper_range=None, latex: bool = False
) -> str:
    """``0.71 ± 0.04, pooled 0.72 (paper 0.83, -0.12)``; "not run" for an empty cell. With ``latex`` the same
    text as LaTeX: numbers in math mode, ``$\\pm$``, a minus sign, an en dash in ranges."""
    if _isnan(mean):
        return NOT_RUN

    def num(x: float, signed: bool = False) -> str:
        text = f"{x:{'+' if signed else ''}.{digits}f}"
        return f"${text}$" if latex else text

    pm = "$\\pm$" if latex else "±"
    text = f"{num(mean)} {pm} {num(std)}, pooled {num(pooled)}"
    if not _isnan(published):
        return f"{text} (paper {num(published)}, {num(mean - published, signed=True)})"
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


TABLE1_TITLE = (
    "Table 1 — binary (one emotion vs rest), macro-F1, mean ± std over folds, pooled over folds; "
    "paper value and ours − paper"
)
TABLE2_TITLE = (
    "Table 2 — 8-class accuracy %, mean ± std over folds, pooled over folds; paper value and ours − paper"
)


def _table1_body(long: pd.DataFrame, latex: bool) -> list[list[str]]:
    body = []
    for (modality, kind, label), group in long.groupby(["modality", "type", "features"], sort=False):
        cells = [
            format_cell(r.mean, r.std, r.pooled, r.paper, 2, r.paper_range, latex)
            for r in group.itertuples(index=False)
        ]
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
            line.append(empty if r is None else format_cell(r.mean, r.std, r.pooled, r.paper, 2, latex=latex))
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
    filled = int(t1["mean"].notna().sum()), int(t2["mean"].notna().sum())
    print(f"Table 1: {filled[0]}/{len(t1)} cells filled; Table 2: {filled[1]}/{len(t2)} cells filled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
