"""Tests for avemotion.download: resumable fetch from a local HTTP server, local archives, records, extract.

The HTTP server runs on 127.0.0.1 (port 0) in a background thread and serves in-memory bytes with Range
support; knobs inject faults (cut connections, ignored ranges, stalls, error statuses). Every check compares
real bytes and md5s computed independently with hashlib.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import avemotion
from avemotion import download as dl
from avemotion.download import ArchiveRecord, DownloadError

PAYLOAD = random.Random(0).randbytes(300_000)
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
FAST = {"backoff": 0.0, "timeout": 5.0, "chunk_size": 16 * 1024, "progress": False}


# ------------------------------------------------------------------------------------------- test server


@dataclass
class ServerState:
    payload: bytes = PAYLOAD
    cut_after: int | None = None  # body bytes sent before the connection is dropped
    cut_requests: int = 0  # how many of the first requests are cut (-1: every one)
    stall: float = 0.0  # seconds to hang (silently) after the cut bytes, before dropping
    ignore_range: bool = False  # answer 200 with the whole file even when a Range is asked
    status: int | None = None  # answer every request with this error status
    ranges: list[str | None] = field(default_factory=list)  # Range header of each request (None: absent)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        st = self.server.state
        with st.lock:
            st.ranges.append(self.headers.get("Range"))
            n = len(st.ranges)
        if st.status is not None:
            self.send_error(st.status)
            return
        data, rng = st.payload, self.headers.get("Range")
        if rng and not st.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng)
            assert m, rng
            start = int(m[1])
            end = int(m[2]) if m[2] else len(data) - 1
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if st.cut_after is not None and (st.cut_requests < 0 or n <= st.cut_requests):
            self.wfile.write(body[: st.cut_after])
            self.wfile.flush()
            time.sleep(st.stall)
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    state: ServerState


@dataclass
class Served:
    state: ServerState
    base: str

    def url(self, name: str = "Video_Speech_Actor_01.zip") -> str:
        return f"{self.base}/{name}?download=1"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep urllib from sending 127.0.0.1 requests to a proxy configured in the environment."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server() -> Iterator[Served]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.state = ServerState()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Served(srv.state, f"http://127.0.0.1:{srv.server_address[1]}")
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the backoff waits instead of sleeping."""
    calls: list[float] = []
    monkeypatch.setattr(dl, "_sleep", calls.append)
    return calls


# ------------------------------------------------------------------------------------------------- fetch


def test_fetch_plain_download_verifies_and_records(server: Served, tmp_path: Path) -> None:
    dest = tmp_path / "a" / "Video_Speech_Actor_01.zip"
    rec = dl.fetch(server.url(), dest, expected_md5=PAYLOAD_MD5.upper(), expected_size=len(PAYLOAD), **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert rec == ArchiveRecord("Video_Speech_Actor_01.zip", len(PAYLOAD), PAYLOAD_MD5, server.url())
    assert not dl.part_path(dest).exists()
    assert server.state.ranges == [None]


def test_fetch_resumes_interrupted_transfer_with_range(server: Served, tmp_path: Path, sleeps: list) -> None:
    server.state.cut_after, server.state.cut_requests = 100_000, 1
    dest = tmp_path / "x.zip"
    rec = dl.fetch(server.url(), dest, expected_md5=PAYLOAD_MD5, **(FAST | {"backoff": 0.25}))
    assert server.state.ranges == [None, "bytes=100000-"]
    assert dest.read_bytes() == PAYLOAD
    assert rec.md5 == PAYLOAD_MD5 == hashlib.md5(dest.read_bytes()).hexdigest()
    assert sleeps == [0.25]


def test_fetch_server_ignoring_range_restarts_from_zero(server: Served, tmp_path: Path, sleeps: list) -> None:
    server.state.cut_after, server.state.cut_requests, server.state.ignore_range = 123_457, 1, True
    dest = tmp_path / "x.zip"
    rec = dl.fetch(server.url(), dest, expected_md5=PAYLOAD_MD5, expected_size=len(PAYLOAD), **FAST)
    assert server.state.ranges == [None, "bytes=123457-"]  # asked to resume, got 200 + the whole file
    assert dest.read_bytes() == PAYLOAD  # not the first 123457 bytes twice
    assert rec.size == len(PAYLOAD)


def test_fetch_resumes_part_left_by_earlier_run(server: Served, tmp_path: Path) -> None:
    dest = tmp_path / "x.zip"
    dl.part_path(dest).write_bytes(PAYLOAD[:77_777])
    rec = dl.fetch(server.url(), dest, expected_md5=PAYLOAD_MD5, **FAST)
    assert server.state.ranges == ["bytes=77777-"]
    assert dest.read_bytes() == PAYLOAD and rec.md5 == PAYLOAD_MD5
    assert not dl.part_path(dest).exists()


def test_fetch_complete_part_answered_416_is_accepted(server: Served, tmp_path: Path) -> None:
    dest = tmp_path / "x.zip"
    dl.part_path(dest).write_bytes(PAYLOAD)
    rec = dl.fetch(server.url(), dest, expected_md5=PAYLOAD_MD5, **FAST)
    assert server.state.ranges == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD and rec.size == len(PAYLOAD)


def test_fetch_oversized_part_answered_416_starts_over(server: Served, tmp_path: Path, sleeps: list) -> None:
    dest = tmp_path / "x.zip"
    dl.part_path(dest).write_bytes(PAYLOAD + b"junk")
    rec = dl.fetch(server.url(), dest, expected_md5=PAYLOAD_MD5, **FAST)
    assert server.state.ranges == [f"bytes={len(PAYLOAD) + 4}-", None]
    assert sleeps == []  # starting over is not a failed attempt
    assert dest.read_bytes() == PAYLOAD and rec.md5 == PAYLOAD_MD5


def test_fetch_timeout_is_retried_and_resumed(server: Served, tmp_path: Path, sleeps: list) -> None:
    server.state.cut_after, server.state.cut_requests, server.state.stall = 50_000, 1, 1.0
    dest = tmp_path / "x.zip"
    rec = dl.fetch(server.url(), dest, expected_md5=PAYLOAD_MD5, **(FAST | {"timeout": 0.3}))
    # Bytes of the chunk read that timed out are dropped, so the resume starts at or before byte 50000.
    first, resume = server.state.ranges
    m = re.fullmatch(r"bytes=(\d+)-", resume or "")
    assert first is None and m and 0 < int(m[1]) <= 50_000
    assert dest.read_bytes() == PAYLOAD and rec.md5 == PAYLOAD_MD5


def test_fetch_progressing_transfer_is_not_given_up(server: Served, tmp_path: Path, sleeps: list) -> None:
    # Every response is cut after 60 kB, but each attempt brings new bytes, so retries=1 still suffices.
    server.state.cut_after, server.state.cut_requests = 60_000, -1
    dest = tmp_path / "x.zip"
    dl.fetch(server.url(), dest, expected_md5=PAYLOAD_MD5, retries=1, **FAST)
    assert server.state.ranges == [None] + [f"bytes={k}-" for k in range(60_000, 300_000, 60_000)]
    assert dest.read_bytes() == PAYLOAD


def test_fetch_checksum_mismatch_leaves_nothing(server: Served, tmp_path: Path) -> None:
    dest = tmp_path / "x.zip"
    wrong = "0" * 32
    with pytest.raises(DownloadError) as err:
        dl.fetch(server.url(), dest, expected_md5=wrong, **FAST)
    msg = str(err.value)
    assert server.url() in msg and f"expected md5 {wrong}, got {PAYLOAD_MD5}" in msg and "rerun" in msg
    assert not dest.exists() and not dl.part_path(dest).exists()
    assert list(tmp_path.iterdir()) == []


def test_fetch_size_mismatch_reported_by_server_stops_early(server: Served, tmp_path: Path) -> None:
    dest = tmp_path / "x.zip"
    with pytest.raises(
        DownloadError, match=f"server reports {len(PAYLOAD)} bytes, expected {len(PAYLOAD) + 1}"
    ):
        dl.fetch(server.url(), dest, expected_size=len(PAYLOAD) + 1, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_fetch_retries_exhausted(server: Served, tmp_path: Path, sleeps: list) -> None:
    server.state.cut_after, server.state.cut_requests = 0, -1  # headers, then the connection drops
    dest = tmp_path / "x.zip"
    with pytest.raises(DownloadError) as err:
        dl.fetch(server.url(), dest, retries=3, **(FAST | {"backoff": 0.5}))
    msg = str(err.value)
    assert server.url() in msg and "after 4 attempts" in msg and f"0 of {len(PAYLOAD)} bytes" in msg
    assert "check your connection" in msg.lower() and "data.archives_dir" in msg
    assert len(server.state.ranges) == 4
    assert sleeps == [0.5, 1.0, 2.0]  # exponential backoff
    assert list(tmp_path.iterdir()) == []  # an empty part is not kept


def test_fetch_retries_exhausted_keeps_part_for_next_run(
    server: Served, tmp_path: Path, sleeps: list
) -> None:
    server.state.cut_after, server.state.cut_requests, server.state.ignore_range = 40_000, -1, True
    dest = tmp_path / "x.zip"
    with pytest.raises(DownloadError, match="is kept: rerun to resume"):
        dl.fetch(server.url(), dest, retries=2, **FAST)
    assert dl.part_path(dest).read_bytes() == PAYLOAD[:40_000] and not dest.exists()
    server.state.cut_after, server.state.ignore_range = None, False
    dl.fetch(server.url(), dest, expected_md5=PAYLOAD_MD5, **FAST)
    assert server.state.ranges[-1] == "bytes=40000-"
    assert dest.read_bytes() == PAYLOAD


def test_fetch_404_names_url(server: Served, tmp_path: Path, sleeps: list) -> None:
    server.state.status = 404
    with pytest.raises(DownloadError, match=re.escape(server.url()) + ".*HTTP 404"):
        dl.fetch(server.url(), tmp_path / "x.zip", **FAST)
    assert len(server.state.ranges) == 1 and sleeps == []  # a 404 is final, not retried
    assert list(tmp_path.iterdir()) == []


def test_fetch_503_is_retried(server: Served, tmp_path: Path, sleeps: list) -> None:
    server.state.status = 503
    with pytest.raises(DownloadError, match="HTTP 503"):
        dl.fetch(server.url(), tmp_path / "x.zip", retries=2, **FAST)
    assert len(server.state.ranges) == 3


def test_fetch_connection_refused(tmp_path: Path, sleeps: list) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/x.zip"
    with pytest.raises(DownloadError, match=re.escape(url) + ".*after 2 attempts.*cannot connect"):
        dl.fetch(url, tmp_path / "x.zip", retries=1, **FAST)


def test_fetch_file_url(tmp_path: Path) -> None:
    src = tmp_path / "src" / "Video_Speech_Actor_02.zip"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / src.name
    dl.part_path(dest).parent.mkdir()
    dl.part_path(dest).write_bytes(b"stale bytes from elsewhere")  # no Range for file://: read it whole
    rec = dl.fetch(src.as_uri(), dest, expected_md5=PAYLOAD_MD5, expected_size=len(PAYLOAD), **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert rec == ArchiveRecord(src.name, len(PAYLOAD), PAYLOAD_MD5, src.as_uri())
    with pytest.raises(DownloadError, match=re.escape("missing.zip")):
        dl.fetch((tmp_path / "missing.zip").as_uri(), tmp_path / "m.zip", **FAST)


def test_fetch_progress_lines(server: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dl.fetch(server.url(), tmp_path / "x.zip", **(FAST | {"progress": True}))
    err = capsys.readouterr().err.strip().splitlines()
    assert 1 <= len(err) <= 3  # throttled: not one line per 16 kB chunk
    assert re.fullmatch(r"x\.zip: 0\.3/0\.3 MB \(100\.0 %\), [\d.]+ MB/s", err[-1])


def test_fetch_rejects_malformed_md5(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="not 32 hex digits"):
        dl.fetch("http://127.0.0.1:9/x", tmp_path / "x", expected_md5="abc", **FAST)


# ------------------------------------------------------------------------------------------- local files


def test_use_local_hardlinks_verified_archive(tmp_path: Path) -> None:
    src = tmp_path / "disk" / "Video_Speech_Actor_03.zip"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "resources" / "archives" / src.name
    rec = dl.use_local(src, dest, expected_md5=PAYLOAD_MD5, expected_size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert os.path.samefile(src, dest) and src.stat().st_nlink == 2  # a hardlink, not a copy
    assert rec == ArchiveRecord(src.name, len(PAYLOAD), PAYLOAD_MD5, src.absolute().as_uri())
    assert [p.name for p in dest.parent.iterdir()] == [src.name]  # no temp file left
    assert dl.use_local(src, dest) == rec  # idempotent when dest already is src


def test_use_local_copies_when_link_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_link(*args: object, **kwargs: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(dl.os, "link", no_link)
    src = tmp_path / "a.zip"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "a.zip"
    dl.use_local(src, dest, expected_md5=PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD and not os.path.samefile(src, dest)


def test_use_local_missing_src(tmp_path: Path) -> None:
    src = tmp_path / "Video_Speech_Actor_04.zip"
    with pytest.raises(DownloadError, match=re.escape(str(src)) + " not found.*data.archives_dir"):
        dl.use_local(src, tmp_path / "out" / src.name)
    assert not (tmp_path / "out").exists()


def test_use_local_wrong_md5(tmp_path: Path) -> None:
    src = tmp_path / "a.zip"
    src.write_bytes(PAYLOAD)
    wrong = "f" * 32
    with pytest.raises(DownloadError) as err:
        dl.use_local(src, tmp_path / "out" / "a.zip", expected_md5=wrong)
    assert str(src) in str(err.value) and f"expected md5 {wrong}, got {PAYLOAD_MD5}" in str(err.value)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ records


def test_record_round_trip_is_deterministic(tmp_path: Path) -> None:
    rec = ArchiveRecord("a.zip", 12, "0123456789abcdef0123456789abcdef", "https://x/a.zip")
    p1, p2 = tmp_path / "r1.json", tmp_path / "sub" / "r2.json"
    dl.write_record(p1, rec)
    dl.write_record(p2, rec)
    assert p1.read_bytes() == p2.read_bytes()
    assert list(json.loads(p1.read_text())) == ["md5", "name", "size", "source"]  # sorted keys
    assert dl.read_record(p1) == rec
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["r1.json", "r2.json", "sub"]  # no temp files


def test_read_record_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "a.zip"}')
    with pytest.raises(DownloadError, match=re.escape("bad.json: expected keys")):
        dl.read_record(bad)
    bad.write_text("{not json")
    with pytest.raises(DownloadError, match=re.escape("bad.json is not readable JSON")):
        dl.read_record(bad)
    with pytest.raises(DownloadError, match=re.escape("missing.json not found")):
        dl.read_record(tmp_path / "missing.json")


def test_verify_record_detects_modified_file(tmp_path: Path) -> None:
    f = tmp_path / "a.zip"
    f.write_bytes(PAYLOAD)
    rec = ArchiveRecord("a.zip", len(PAYLOAD), dl.md5sum(f), "file:///a.zip")
    assert rec.md5 == PAYLOAD_MD5
    dl.verify_record(f, rec)  # unchanged: passes
    f.write_bytes(PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 1]))  # same size, one bit flipped
    with pytest.raises(DownloadError, match=f"expected md5 {PAYLOAD_MD5}, got .*delete .*a.zip"):
        dl.verify_record(f, rec)
    f.write_bytes(PAYLOAD[:-10])
    with pytest.raises(DownloadError, match=f"expected {len(PAYLOAD)} bytes, got {len(PAYLOAD) - 10}"):
        dl.verify_record(f, rec)
    f.unlink()
    with pytest.raises(DownloadError, match="archive missing"):
        dl.verify_record(f, rec)


# ------------------------------------------------------------------------------------------------ extract

CLIPS = {
    "Actor_01/01-01-03-01-01-01-01.mp4": b"av clip A" * 1000,
    "Actor_01/01-01-05-02-02-01-01.mp4": random.Random(1).randbytes(5000),
    "Actor_01/02-01-03-01-01-01-01.mp4": b"video-only copy",
    "Actor_01/readme.txt": b"not a clip",
}


def _zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        zf.writestr("Actor_01/", b"")  # directory entry, as in the real archives
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    path.write_bytes(_zip_bytes(members))
    return path


def _entries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_extract_keeps_only_av_speech_clips_flat(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "Video_Speech_Actor_01.zip", CLIPS)
    out = tmp_path / "clips" / "Actor_01"
    paths = dl.extract_members(archive, out)
    assert paths == [out / "01-01-03-01-01-01-01.mp4", out / "01-01-05-02-02-01-01.mp4"]
    for p in paths:
        assert p.read_bytes() == CLIPS[f"Actor_01/{p.name}"]
    assert _entries(tmp_path / "clips") == ["Actor_01", *(f"Actor_01/{p.name}" for p in paths)]  # no temp dir


def test_extract_custom_pattern(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", CLIPS)
    paths = dl.extract_members(archive, tmp_path / "out", pattern="02-01-*.mp4")
    assert [p.read_bytes() for p in paths] == [b"video-only copy"]


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../01-01-evil.mp4", "'..' path component"),
        ("Actor_01/../../01-01-evil.mp4", "'..' path component"),
        ("/tmp/01-01-evil.mp4", "absolute path"),
        ("C:/x/01-01-evil.mp4", "drive letter"),
        ("..\\01-01-evil.mp4", "'..' path component"),
        ("symlink", "symbolic link"),
    ],
)
def test_extract_rejects_unsafe_members(tmp_path: Path, member: str, reason: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Actor_01/01-01-03-01-01-01-01.mp4", b"fine")  # a good member first
        if member == "symlink":
            info = zipfile.ZipInfo("Actor_01/01-01-link.mp4")
            info.create_system = 3  # Unix: the high 16 bits of external_attr are st_mode
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
        else:
            zf.writestr(member, b"evil")
    before = _entries(tmp_path)
    with pytest.raises(DownloadError) as err:
        dl.extract_members(archive, tmp_path / "out")
    msg = str(err.value)
    assert str(archive) in msg and "unsafe member" in msg and reason in msg
    assert _entries(tmp_path) == before  # nothing extracted, no temp dir
    assert not (tmp_path.parent / "01-01-evil.mp4").exists()


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]


@pytest.mark.parametrize("damage", ["truncated", "crc", "deflate", "not a zip"])
def test_extract_corrupt_archive_leaves_nothing(tmp_path: Path, damage: str) -> None:
    good_first = {"Actor_01/01-01-01-01-01-01-01.mp4": b"first clip, intact " * 50}
    second = random.Random(2).randbytes(4000)
    members = good_first | {"Actor_01/01-01-02-01-01-01-01.mp4": second}
    method = zipfile.ZIP_DEFLATED if damage == "deflate" else zipfile.ZIP_STORED
    data = _zip_bytes(members, method)
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "crc":
        data = _flip(data, data.index(second) + 100)  # stored: the bytes read fine, the CRC-32 does not match
    elif damage == "deflate":
        # local header name of the second member, then its compressed bytes: damage the stream inside
        data = _flip(data, data.index(b"Actor_01/01-01-02") + len("Actor_01/01-01-02-01-01-01-01.mp4") + 40)
    else:
        data = b"<html>Zenodo maintenance page</html>"
    archive = tmp_path / "Video_Speech_Actor_01.zip"
    archive.write_bytes(data)
    with pytest.raises(DownloadError) as err:
        dl.extract_members(archive, tmp_path / "clips")
    msg = str(err.value)
    assert msg.startswith(f"{archive}: corrupt or truncated zip (")
    assert f"delete {archive} (and its record) and rerun to download it again" in msg
    assert _entries(tmp_path) == [archive.name]  # the intact first clip was not left behind either


def test_extract_no_matching_member(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"Actor_01/02-01-03-01-01-01-01.mp4": b"x"})
    with pytest.raises(DownloadError, match=r"a\.zip: no member matches '01-01-\*\.mp4'"):
        dl.extract_members(archive, tmp_path / "out")
    assert _entries(tmp_path) == ["a.zip"]


def test_extract_refuses_non_empty_out_dir(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", CLIPS)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DownloadError, match="already exists and is not empty"):
        dl.extract_members(archive, out)
    assert _entries(out) == ["keep.txt"]
    (out / "keep.txt").unlink()  # an empty directory is fine
    assert len(dl.extract_members(archive, out)) == 2


def test_extract_rejects_duplicate_basenames(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"A/01-01-x.mp4": b"1", "B/01-01-x.mp4": b"2"})
    with pytest.raises(DownloadError, match=re.escape("would both be extracted to 01-01-x.mp4")):
        dl.extract_members(archive, tmp_path / "out")
    assert _entries(tmp_path) == ["a.zip"]


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_fetch_writes_archive_and_record(server: Served, tmp_path: Path) -> None:
    out, record = tmp_path / "a.zip", tmp_path / "a.json"
    argv = ["fetch", "--url", server.url(), "--out", str(out), "--record", str(record), "--md5", PAYLOAD_MD5]
    assert dl.main([*argv, "--size", str(len(PAYLOAD)), "--quiet"]) == 0
    assert out.read_bytes() == PAYLOAD
    assert dl.read_record(record) == ArchiveRecord("a.zip", len(PAYLOAD), PAYLOAD_MD5, server.url())


def test_cli_fetch_error_exits_1_with_message(
    server: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.state.status = 404
    out, record = tmp_path / "a.zip", tmp_path / "a.json"
    assert dl.main(["fetch", "--url", server.url(), "--out", str(out), "--record", str(record)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and server.url() in err and "HTTP 404" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_cli_local_and_extract(tmp_path: Path) -> None:
    src = _zip(tmp_path / "Video_Speech_Actor_01.zip", CLIPS)
    out, record = tmp_path / "archives" / src.name, tmp_path / "archives" / "Actor_01.json"
    assert dl.main(["local", "--src", str(src), "--out", str(out), "--record", str(record)]) == 0
    assert dl.read_record(record).md5 == hashlib.md5(src.read_bytes()).hexdigest()
    assert dl.main(["extract", "--archive", str(out), "--out", str(tmp_path / "clips")]) == 0
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == [
        "01-01-03-01-01-01-01.mp4",
        "01-01-05-02-02-01-01.mp4",
    ]


def test_cli_module_entry_point_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    env = os.environ | {"PYTHONPATH": str(Path(avemotion.__file__).parents[1])}
    cmd = [
        sys.executable,
        "-m",
        "avemotion.download",
        "extract",
        "--archive",
        str(bad),
        "--out",
        str(tmp_path / "o"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 1
    assert (
        proc.stderr.startswith(f"error: {bad}: corrupt or truncated zip") and "Traceback" not in proc.stderr
    )
    assert _entries(tmp_path) == ["broken.zip"]


def test_known_md5_and_urls() -> None:
    assert dl.KNOWN_MD5["Audio_Speech_Actors_01-24.zip"] == "bc696df654c87fed845eb13823edef8a"
    assert (
        dl.video_speech_url(7)
        == "https://zenodo.org/records/1188976/files/Video_Speech_Actor_07.zip?download=1"
    )
    with pytest.raises(ValueError):
        dl.video_speech_url(25)
