"""Aggregation: fold metrics -> the paper's Table 1 and Table 2 grids, beside the published values.

Every cell of the paper's grid is present. A cell whose configuration ran on all folds shows the mean and the
standard deviation over the folds (sample std, ddof = 1), the paper's value and the difference (ours - paper);
a cell that did not run says "not run". Table 1 is macro-F1 (0-1), Table 2 accuracy in % (as published).

CLI (the ``build_tables`` rule)::

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
from avemotion.io import atomic_write_text

NOT_RUN = "not run"


def read_metrics(paths: list[Path]) -> pd.DataFrame:
    """One row per fold job: configuration, task, target, fold, value (the task's metric)."""
    rows = []
    for path in paths:
        m = json.loads(Path(path).read_text())
        rows.append({k: m[k] for k in ("configuration", "task", "target", "fold", "value")})
    frame = pd.DataFrame(rows, columns=["configuration", "task", "target", "fold", "value"])
    dup = frame.duplicated(["configuration", "task", "target", "fold"])
    if dup.any():
        raise ValueError(f"duplicate fold metrics: {frame[dup].to_dict('records')[:3]}")
    return frame


def summarize(values: list[float], n_folds: int, scale: float = 1.0) -> dict:
    """Mean and sample std of a cell's fold values (scaled); NaN when not every fold ran."""
    if len(values) != n_folds:
        return {"n_folds": len(values), "mean": math.nan, "std": math.nan}
    arr = np.asarray(values, dtype=np.float64) * scale
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"n_folds": len(values), "mean": float(arr.mean()), "std": std}


def _cell(frame: pd.DataFrame, configuration: str, task: str, target: str) -> list[float]:
    sel = frame[(frame.configuration == configuration) & (frame.task == task) & (frame.target == target)]
    return sel.sort_values("fold")["value"].tolist()


def table1(frame: pd.DataFrame, n_folds: int) -> pd.DataFrame:
    """Long form of Table 1: one row per (feature row, emotion)."""
    published = paper.published_values()["table1"]
    rows = []
    for key, modality, kind, label in paper.TABLE1_ROWS:
        for j, emotion in enumerate(paper.CLASSES):
            stats = summarize(_cell(frame, key, "binary", emotion), n_folds)
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
    return pd.DataFrame(rows)


def table2(frame: pd.DataFrame, n_folds: int) -> pd.DataFrame:
    """Long form of Table 2: one row per (visual row, speech column) cell; accuracy in %."""
    published = paper.published_values()["table2"]["cells"]
    rows = []
    for row, column, configuration in paper.table2_cells():
        stats = summarize(_cell(frame, configuration, "multiclass", "all"), n_folds, scale=100.0)
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
    return pd.DataFrame(rows)


def format_cell(mean: float, std: float, published, digits: int, paper_range=None) -> str:
    """``0.71 ± 0.04 (paper 0.83, -0.12)``; "not run" for an empty cell."""
    if math.isnan(mean):
        return NOT_RUN
    text = f"{mean:.{digits}f} ± {std:.{digits}f}"
    if published is not None and not math.isnan(published):
        return f"{text} (paper {published:.{digits}f}, {mean - published:+.{digits}f})"
    if isinstance(paper_range, list):
        return f"{text} (paper 0.8?, {paper_range[0]:.2f}-{paper_range[1]:.2f})"
    return f"{text} (paper: not published)"


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def table1_markdown(long: pd.DataFrame) -> str:
    body = []
    for (modality, kind, label), group in long.groupby(["modality", "type", "features"], sort=False):
        cells = [format_cell(r.mean, r.std, r.paper, 2, r.paper_range) for r in group.itertuples(index=False)]
        body.append([modality, kind, label, *cells])
    title = "Table 1 — binary (one emotion vs rest), macro-F1, mean ± std over folds; paper value and ours − paper\n\n"
    return title + markdown_table(["modality", "type", "features", *paper.CLASSES], body)


def table2_markdown(long: pd.DataFrame) -> str:
    cells = {(r.visual, r.speech): r for r in long.itertuples(index=False)}
    columns = [column for column, _ in paper.TABLE2_COLUMNS]
    body = []
    for row, _ in paper.TABLE2_ROWS:
        line = [row]
        for column in columns:
            r = cells.get((row, column))  # None for the None/None corner, which has no configuration
            line.append("—" if r is None else format_cell(r.mean, r.std, r.paper, 2))
        body.append(line)
    title = "Table 2 — 8-class accuracy %, mean ± std over folds; paper value and ours − paper\n\n"
    return title + markdown_table(["visual \\ speech", *columns], body)


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
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    t1, t2 = table1(frame, args.folds), table2(frame, args.folds)
    atomic_write_text(args.out_dir / "table1.csv", t1.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(args.out_dir / "table1.md", table1_markdown(t1))
    atomic_write_text(args.out_dir / "table2.csv", t2.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(args.out_dir / "table2.md", table2_markdown(t2))
    filled = int(t1["mean"].notna().sum()), int(t2["mean"].notna().sum())
    print(f"Table 1: {filled[0]}/{len(t1)} cells filled; Table 2: {filled[1]}/{len(t2)} cells filled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
