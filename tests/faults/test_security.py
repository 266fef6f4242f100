"""Security (issue: fault injection, point 4): what reads data from disk or the network never runs code from
it, archives stay inside their target folder, the MLflow UI the project starts listens on loopback only, and
no credential sits in config or reaches a job's command line.

The code checks read the package's syntax trees (every call, wherever it is), and each check is shown to
catch the pattern it forbids on a snippet, so none of them can pass by finding nothing to look at.
"""

from __future__ import annotations

import ast
import re
import zipfile
from pathlib import Path

import pytest
import yaml

from avemotion import download, runs

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "src" / "avemotion").rglob("*.py"))
# Modules that deserialise by running code (pickle and its kin).
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}


def _name(node: ast.AST) -> str:
    """The dotted name a call is made through (``torch.load``, ``np.load``, ``eval``), or ""."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


def _keyword(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else k.value
    return None


def unsafe_uses(source: str) -> list[str]:
    """Every construct of ``source`` that could run code from data: ``torch.load`` without
    ``weights_only=True`` (and any call passing ``weights_only=False``: transformers' ``from_pretrained``
    reads a ``pytorch_model.bin`` with ``weights_only=True`` unless told otherwise), pickle-like modules, ``eval``/``exec``, ``allow_pickle=True``, ``pd.read_pickle``,
    ``yaml.load`` without a safe loader, ``shell=True`` and whole-archive ``extractall``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            found += [f"imports {n}" for n in names if n and n.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        name, line = _name(node.func), node.lineno
        if name.endswith("torch.load") and _keyword(node, "weights_only") is not True:
            found.append(f"line {line}: {name} without weights_only=True")
        elif _keyword(node, "weights_only") is False:  # transformers' from_pretrained and the like
            found.append(f"line {line}: {name}(weights_only=False)")
        if name in ("eval", "exec", "compile", "__import__"):
            found.append(f"line {line}: {name}()")
        if _keyword(node, "allow_pickle") is True:
            found.append(f"line {line}: {name}(allow_pickle=True)")
        if name.endswith("read_pickle") or name.endswith("to_pickle"):
            found.append(f"line {line}: {name}")
        if name.endswith("yaml.load") or name.endswith("yaml.unsafe_load"):
            loader = _name(_keyword(node, "Loader") or ast.Name(""))
            if "Safe" not in loader:
                found.append(f"line {line}: {name} without SafeLoader")
        if _keyword(node, "shell") is True:
            found.append(f"line {line}: {name}(shell=True)")
        if name.endswith("extractall"):
            found.append(f"line {line}: {name} (every member, unchecked)")
    return found


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\nstate = torch.load(path)",
        "import torch\nstate = torch.load(path, weights_only=False)",
        "model = Wav2Vec2Model.from_pretrained(path, weights_only=False)",
        "import pickle",
        "from joblib import load",
        "value = eval(text)",
        "import numpy as np\nx = np.load(path, allow_pickle=True)",
        "import pandas as pd\nframe = pd.read_pickle(path)",
        "import yaml\nconfig = yaml.load(text, Loader=yaml.Loader)",
        "import subprocess\nsubprocess.run(command, shell=True)",
        "import zipfile\nzipfile.ZipFile(path).extractall(out)",
    ],
)
def test_the_scan_catches_what_it_forbids(snippet):
    assert unsafe_uses(snippet), snippet


def test_the_scan_passes_the_safe_forms():
    safe = (
        "import torch, numpy as np, yaml\n"
        "state = torch.load(path, map_location='cpu', weights_only=True)\n"
        "x = np.load(path)\n"
        "config = yaml.safe_load(text)\n"
        "model.eval()\n"
    )
    assert unsafe_uses(safe) == []


def test_no_code_path_runs_code_from_data():
    assert len(SOURCES) > 20  # the package itself, not an empty glob
    found = {str(p.relative_to(ROOT)): unsafe_uses(p.read_text()) for p in SOURCES}
    assert {path: uses for path, uses in found.items() if uses} == {}
    # and the checkpoints are read at all (the check above has something to check)
    assert sum("weights_only=True" in p.read_text() for p in SOURCES) >= 2


def _zip_with(tmp_path: Path, member: str) -> Path:
    path = tmp_path / "Video_Speech_Actor_01.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("Actor_01/01-01-01-01-01-01-01.mp4", b"clip")
        z.writestr(member, b"payload")
    return path


@pytest.mark.parametrize(
    "member",
    [
        "../01-01-02-01-01-01-01.mp4",
        "/tmp/01-01-02-01-01-01-01.mp4",
        "Actor_01/../../01-01-02-01-01-01-01.mp4",
    ],
)
def test_an_archive_member_outside_the_target_is_refused_and_nothing_is_written(tmp_path, member):
    archive = _zip_with(tmp_path, member)
    out = tmp_path / "out" / "Actor_01"
    with pytest.raises(download.DownloadError, match="unsafe member"):
        download.extract_members(archive, out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.rglob("*.mp4")) == []  # nothing landed anywhere


def test_the_mlflow_ui_the_project_starts_listens_on_loopback_only():
    commands = [
        line
        for line in (ROOT / "Makefile").read_text().splitlines()
        if re.search(r"mlflow (ui|server)", line)
    ]
    assert commands, "the Makefile starts no MLflow UI: this check has nothing to check"
    for line in commands:
        assert re.search(r"--host 127\.0\.0\.1(\s|$)", line), line


def _values(tree, path=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _values(v, (*path, str(k)))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _values(v, (*path, str(i)))
    else:
        yield ".".join(path), tree


CREDENTIAL_KEY = re.compile(r"pass(word)?|secret|token|api_?key|credential", re.IGNORECASE)
USERINFO = re.compile(r"://[^/@\s]+:[^/@\s]+@")


def credentials_in(tree: dict) -> list[str]:
    """Keys that look like credentials with a value, and URLs with user:password@, of a parsed YAML file."""
    return [
        key
        for key, value in _values(tree)
        if (CREDENTIAL_KEY.search(key.split(".")[-1]) and value not in (None, ""))
        or (isinstance(value, str) and USERINFO.search(value))
    ]


def test_the_credential_check_catches_a_password():
    assert credentials_in({"mlflow": {"tracking_uri": "https://me:pw@host"}}) == ["mlflow.tracking_uri"]
    assert credentials_in({"hub": {"token": "hf_abc"}}) == ["hub.token"]
    assert credentials_in({"mlflow": {"tracking_uri": "https://host"}, "md5": {}}) == []


def test_no_credentials_in_config_or_profiles():
    files = [ROOT / "config.yaml", *sorted((ROOT / "workflow" / "profiles").rglob("*.yaml"))]
    assert len(files) >= 4
    found = {str(f.relative_to(ROOT)): credentials_in(yaml.safe_load(f.read_text()) or {}) for f in files}
    assert {f: keys for f, keys in found.items() if keys} == {}


def test_a_password_in_the_tracking_uri_never_reaches_a_command_line(monkeypatch, tmp_path):
    """The URI is resolved once and written into every training job's command (and so its log): one with
    a password is refused there, before any job, and the message does not repeat the password."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://user:hunter2@mlflow.example.org")
    with pytest.raises(runs.TrackingError) as error:
        runs.tracking_uri(None, tmp_path)
    assert "MLFLOW_TRACKING_PASSWORD" in str(error.value) and "hunter2" not in str(error.value)
