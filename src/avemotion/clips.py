"""The clip table: RAVDESS file names parsed, the clip set checked, folds and class labels attached.

CLI (the ``build_clip_table`` rule)::

    python -m avemotion.clips --clips-dir results/clips/Actor_01 ... --records results/download/*.json \
        --folds '{"0": [2, 5, ...], ...}' --expected 1440 --out results/clips/clips.csv \
        --manifest results/clips/data_manifest.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from avemotion import paper
from avemotion.config import ConfigError, fold_of_actor
from avemotion.io import atomic_write_text

NAME_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")


class ClipSetError(ValueError):
    """The extracted clips are not the set the config expects."""


@dataclass(frozen=True)
class ClipName:
    modality: int
    vocal_channel: int
    emotion_code: int
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def emotion(self) -> str:
        return paper.EMOTION_CODES[self.emotion_code]

    @property
    def label(self) -> int:
        """Class index in the tables' alphabetical order."""
        return paper.CLASSES.index(self.emotion)


def parse_clip_name(name: str) -> ClipName:
    """Parse ``MM-VV-EE-II-SS-RR-AA`` (with or without ``.mp4``); a ValueError names the bad part."""
    stem = Path(name).name.removesuffix(".mp4")
    match = NAME_RE.fullmatch(stem)
    if not match:
        raise ValueError(f"{name!r} is not a RAVDESS clip name MM-VV-EE-II-SS-RR-AA")
    clip = ClipName(*(int(g) for g in match.groups()))
    checks = {
        "modality": clip.modality in (1, 2, 3),
        "vocal channel": clip.vocal_channel in (1, 2),
        "emotion": clip.emotion_code in paper.EMOTION_CODES,
        "intensity": clip.intensity in (1, 2) and not (clip.emotion_code == 1 and clip.intensity == 2),
        "statement": clip.statement in (1, 2),
        "repetition": clip.repetition in (1, 2),
        "actor": clip.actor in paper.ACTORS,
    }
    bad = [part for part, ok in checks.items() if not ok]
    if bad:
        raise ValueError(f"{name!r}: invalid {', '.join(bad)}")
    return clip


def clip_table(paths: list[Path], folds: dict[int, tuple[int, ...]]) -> pd.DataFrame:
    """One row per audio-video speech clip (``01-01-*``), sorted by name, with label and test fold."""
    owner = fold_of_actor(folds)
    rows = []
    for path in paths:
        clip = parse_clip_name(path.name)
        if (clip.modality, clip.vocal_channel) != (paper.MODALITY_AV, paper.VOCAL_SPEECH):
            continue
        if clip.actor not in owner:
            raise ConfigError(f"config key 'folds': actor {clip.actor} (clip {path}) is in no fold")
        rows.append(
            {
                "clip": path.stem,
                "path": str(path),
                "actor": clip.actor,
                "emotion": clip.emotion,
                "label": clip.label,
                "intensity": clip.intensity,
                "statement": clip.statement,
                "repetition": clip.repetition,
                "fold": owner[clip.actor],
            }
        )
    columns = ["clip", "path", "actor", "emotion", "label", "intensity", "statement", "repetition", "fold"]
    return pd.DataFrame(rows, columns=columns).sort_values("clip", ignore_index=True)


def check_clip_set(table: pd.DataFrame, expected: int, actors: list[int]) -> None:
    """The set check: the expected count, no duplicate, every configured actor present, every fold holding
    every class (otherwise a fold's test metrics are undefined)."""
    if table["clip"].duplicated().any():
        dup = table.loc[table["clip"].duplicated(), "path"].tolist()
        raise ClipSetError(f"duplicate clips: {dup[:5]}")
    if len(table) != expected:
        raise ClipSetError(
            f"found {len(table)} audio-video speech clips (01-01-*), expected {expected} "
            "(config key data.expected_clips); re-extract the archives or fix the key"
        )
    absent = sorted(set(actors) - set(table["actor"]))
    if absent:
        raise ClipSetError(f"no clips for actors {absent} listed in data.actors")
    for fold, group in table.groupby("fold"):
        missing = sorted(set(paper.CLASSES) - set(group["emotion"]))
        if missing:
            raise ClipSetError(f"fold {fold}'s test actors have no clip of {missing}")


def actor_clips(table: Path, actor: int) -> pd.DataFrame:
    """One actor's rows of the clip table file; a ClipSetError naming the file when it lists none."""
    clips = pd.read_csv(table)
    clips = clips[clips["actor"] == actor]
    if clips.empty:
        raise ClipSetError(f"{table} lists no clip of actor {actor}")
    return clips


def data_manifest(records: list[Path]) -> dict:
    """The archives' records in one document, with a checksum identifying the data: sha256 over the archives'
    names, sizes and md5s (not their sources, so the same archives downloaded or on disk give the same id)."""
    entries = sorted((json.loads(p.read_text()) for p in records), key=lambda r: r["name"])
    identity = [{k: r[k] for k in ("name", "size", "md5")} for r in entries]
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return {"archives": entries, "sha256": digest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips-dir", type=Path, nargs="+", required=True)
    parser.add_argument("--records", type=Path, nargs="+", required=True)
    parser.add_argument("--folds", required=True, help="JSON object fold -> test actors")
    parser.add_argument("--actors", type=int, nargs="+", required=True)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args(argv)
    folds = {int(k): tuple(v) for k, v in json.loads(args.folds).items()}
    paths = sorted(p for d in args.clips_dir for p in d.glob("*.mp4"))
    try:
        table = clip_table(paths, folds)
        check_clip_set(table, args.expected, args.actors)
    except (ValueError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    atomic_write_text(args.out, table.to_csv(index=False))
    atomic_write_text(args.manifest, json.dumps(data_manifest(args.records), indent=2, sort_keys=True) + "\n")
    counts = table.groupby("emotion").size().to_dict()
    print(f"{len(table)} clips, {table['actor'].nunique()} actors, per class {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
