"""Tests for avemotion.io: outputs appear whole or not at all, and a failed write leaves the old file alone.

Faults are injected the way they happen in a killed or crashing job: ``np.save`` raising after it has
written part of the array, and an exception raised inside ``atomic_path`` after the temp file was filled.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avemotion import io


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    """Every entry in ``folder`` other than ``keep`` (temp files are hidden dot-files, so list all)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_atomic_write_text_creates_parents_and_writes_exact_text(tmp_path):
    out = tmp_path / "a" / "b" / "table.csv"
    io.atomic_write_text(out, "clip,row\nx,0\n")
    assert out.read_text() == "clip,row\nx,0\n"
    assert _leftovers(out.parent, {"table.csv"}) == []


def test_atomic_write_text_replaces_previous_content(tmp_path):
    out = tmp_path / "t.txt"
    out.write_text("old, longer content")
    io.atomic_write_text(out, "new")
    assert out.read_text() == "new"  # replaced, not overwritten in place (no stale tail)
    assert _leftovers(tmp_path, {"t.txt"}) == []


def test_atomic_write_text_keeps_old_file_when_the_write_raises(tmp_path, monkeypatch):
    out = tmp_path / "t.txt"
    out.write_text("previous")

    def half_write(self: Path, text: str) -> int:
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])  # a partial file exists on disk when the failure hits
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_write)
    with pytest.raises(OSError, match="disk full"):
        io.atomic_write_text(out, "new content that never lands")
    monkeypatch.undo()
    assert out.read_text() == "previous"
    assert _leftovers(tmp_path, {"t.txt"}) == []


def test_atomic_save_npy_round_trips_dtype_shape_and_values(tmp_path):
    a = np.arange(2 * 88 * 24, dtype=np.float32).reshape(2, 88, 24) / 7
    out = tmp_path / "features.npy"
    io.atomic_save_npy(out, a)
    b = np.load(out)
    assert b.dtype == np.float32 and b.shape == (2, 88, 24)
    np.testing.assert_array_equal(b, a)
    assert _leftovers(tmp_path, {"features.npy"}) == []


def test_atomic_save_npy_keeps_old_file_when_np_save_raises_midway(tmp_path, monkeypatch):
    out = tmp_path / "features.npy"
    old = np.array([1.5, 2.5, 3.5])
    np.save(out, old)
    real_save = np.save
    written: list[int] = []

    def crashing_save(f, array):
        f.write(b"\x93NUMPY partial header")  # bytes reach the temp file before the crash
        written.append(f.tell())
        raise RuntimeError("killed while saving")

    monkeypatch.setattr(np, "save", crashing_save)
    with pytest.raises(RuntimeError, match="killed while saving"):
        io.atomic_save_npy(out, np.zeros((1000, 1000)))
    monkeypatch.setattr(np, "save", real_save)
    assert written == [21]  # the fault really fired after a partial write
    np.testing.assert_array_equal(np.load(out), old)
    assert _leftovers(tmp_path, {"features.npy"}) == []


def test_atomic_save_npy_leaves_nothing_when_there_was_no_previous_file(tmp_path, monkeypatch):
    def crashing_save(f, array):
        f.write(b"partial")
        raise RuntimeError("boom")

    monkeypatch.setattr(np, "save", crashing_save)
    with pytest.raises(RuntimeError):
        io.atomic_save_npy(tmp_path / "new.npy", np.ones(3))
    assert _leftovers(tmp_path, set()) == []


def test_atomic_save_npz_round_trips_named_arrays(tmp_path):
    out = tmp_path / "Actor_01.npz"
    clips = np.array(["01-01-01-01-01-01-01", "01-01-05-02-01-02-01"])
    audio = np.linspace(-1, 1, 2 * 10, dtype=np.float32).reshape(2, 10)
    io.atomic_save_npz(out, clips=clips, audio=audio)
    with np.load(out) as data:
        assert sorted(data.files) == ["audio", "clips"]
        assert data["clips"].tolist() == clips.tolist()
        np.testing.assert_array_equal(data["audio"], audio)
    assert _leftovers(tmp_path, {"Actor_01.npz"}) == []


def test_atomic_path_yields_a_temp_beside_the_target_and_replaces_on_success(tmp_path):
    out = tmp_path / "x.bin"
    with io.atomic_path(out) as tmp:
        assert tmp.parent == tmp_path and tmp != out
        assert tmp.exists() and not out.exists()  # nothing visible under the final name while writing
        tmp.write_bytes(b"\x00\x01\x02")
    assert out.read_bytes() == b"\x00\x01\x02"
    assert not tmp.exists()


def test_atomic_path_removes_the_temp_and_keeps_old_file_on_error(tmp_path):
    out = tmp_path / "x.bin"
    out.write_bytes(b"old")
    with pytest.raises(KeyError), io.atomic_path(out) as tmp:
        tmp.write_bytes(b"new, complete, but the job failed after writing")
        raise KeyError("later failure")
    assert out.read_bytes() == b"old"
    assert not tmp.exists()
    assert _leftovers(tmp_path, {"x.bin"}) == []


# tempfile.mkstemp creates the temp file with mode 0o600 and os.replace keeps it: atomic outputs must still get
# a plain write's 0o666 & ~umask, or results cannot be read by a group on a shared cluster.
def test_atomic_write_text_gives_the_same_permissions_as_a_plain_write(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = tmp_path / "atomic.txt"
    io.atomic_write_text(atomic, "x")
    expected = stat.S_IMODE(os.stat(plain).st_mode)
    assert stat.S_IMODE(os.stat(atomic).st_mode) == expected


def test_rgb_frames_equal_pyav_per_frame_conversion(tmp_path):
    av = pytest.importorskip("av")
    rng = np.random.default_rng(0)
    path = tmp_path / "v.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), "rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:
        expected = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        got = list(io.rgb_frames(container.decode(video=0)))
    assert len(got) == 5 and all(g.shape == (48, 64, 3) and g.dtype == np.uint8 for g in got)
    assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))


def test_a_killed_writers_temp_file_is_removed_by_the_next_write_of_that_file(tmp_path):
    """SIGKILL mid-write leaves ``.name.XXXX.tmp``; the next write of ``name`` removes it, not others'."""
    code = (
        "import os, sys\n"
        "from avemotion.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('half')\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    target = tmp_path / "features.npy"
    died = subprocess.run([sys.executable, "-c", code, str(target)])
    assert died.returncode == -9
    (stale,) = tmp_path.glob(".features.npy.*.tmp")
    assert not target.exists()
    other = tmp_path / ".index.csv.abc.tmp"  # another output's writer: not ours to remove
    other.write_text("x")
    io.atomic_save_npy(target, np.arange(3))
    assert not stale.exists() and other.exists()
    assert np.load(target).tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".index.csv.abc.tmp", "features.npy"]


def test_build_dir_is_fresh_and_removes_dead_writers_builds(tmp_path):
    out = tmp_path / "results" / "Actor_02"
    dead = out.parent / ".Actor_02.tmp-999999"
    (dead / "clip").mkdir(parents=True)
    (dead / "clip" / "part.csv").write_text("x")
    (out.parent / ".Actor_02.tmp-999998").write_text("a dead writer's file")
    other = out.parent / ".Actor_03.tmp-999999"  # another actor's build: not ours to remove
    other.mkdir()
    build = io.build_dir(out)
    assert build == out.parent / f".Actor_02.tmp-{os.getpid()}"
    assert build.is_dir() and list(build.iterdir()) == []
    assert sorted(p.name for p in out.parent.iterdir()) == [
        ".Actor_02.tmp-" + str(os.getpid()),
        ".Actor_03.tmp-999999",
    ]


def test_built_dir_replaces_the_folder_whole_or_keeps_the_old_one(tmp_path):
    out = tmp_path / "Actor_02"
    (out / "old").mkdir(parents=True)
    (out / "old" / "a.csv").write_text("old")
    with io.built_dir(out) as build:
        assert build == tmp_path / f".Actor_02.tmp-{os.getpid()}"
        (build / "b.csv").write_text("new")
        assert (out / "old" / "a.csv").read_text() == "old"  # untouched until the block ends
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Actor_02"]
    assert [p.name for p in out.iterdir()] == ["b.csv"]
    with pytest.raises(ValueError, match="clip 3"), io.built_dir(out) as build:
        (build / "c.csv").write_text("partial")
        raise ValueError("clip 3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Actor_02"]
    assert [p.name for p in out.iterdir()] == ["b.csv"] and (out / "b.csv").read_text() == "new"


def test_stale_temporaries_of_every_writer_are_removed_and_nothing_else(tmp_path):
    results = tmp_path / "results"
    with io.atomic_path(results / "features" / "lms" / "features.npy") as tmp:
        atomic_name = tmp.name  # a real temporary's name: a writer killed here would leave it
    dead = [
        results / "features" / "lms" / atomic_name,
        results / "tracking" / ".Actor_02.tmp-4242",
        results / "clips" / ".tmp-Actor_03",
        results / "download" / ".Video_Speech_Actor_01.zip.tmp-17",
    ]
    dead[0].write_bytes(b"partial")
    for folder in dead[1:3]:
        (folder / "inner").mkdir(parents=True)
        (folder / "inner" / ".x.abcdefgh.tmp").write_text("")
    dead[3].parent.mkdir(parents=True)
    dead[3].write_bytes(b"link")
    kept = [
        results / "download" / "Video_Speech_Actor_01.zip.part",  # a resumable download
        results / "tracking" / "Actor_02" / "01-01-01-01-01-01-02.csv",
        results / "mlflow" / ".trash" / "x",
        results / "features" / "lms" / "features.npy",
    ]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"k")
    assert io.remove_stale_temporaries(results) == sorted(dead)
    assert not any(p.exists() for p in dead)
    assert all(p.read_bytes() == b"k" for p in kept)
    assert io.remove_stale_temporaries(results) == []
