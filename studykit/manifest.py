"""The run manifest (``manifest.json``): hashes, versions, seeds and command of a run.

The manifest records what is needed to re-run an analysis and to check that nothing changed:
SHA-256 of the data dictionary, the protocol and every input and output file, the package
versions, Python and platform, the seeds, the git commit of the studykit source (when it is
a git checkout) and the exact command.

:mod:`studykit.verify` re-runs the analysis a manifest names and compares the results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import studykit
from studykit.errors import InputError

__all__ = [
    "MANIFEST_NAME",
    "RTOL",
    "ATOL",
    "PACKAGES",
    "sha256_file",
    "hash_tree",
    "package_versions",
    "git_commit",
    "environment",
    "build_manifest",
    "write_manifest",
    "load_manifest",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
#: Default relative tolerance of numbers in :func:`studykit.verify.verify`.
RTOL = 1e-6
#: Default absolute tolerance of numbers in :func:`studykit.verify.verify`.
ATOL = 1e-9
#: Distributions whose versions the manifest records.
PACKAGES: tuple[str, ...] = (
    "studykit",
    "numpy",
    "scipy",
    "pandas",
    "statsmodels",
    "pingouin",
    "matplotlib",
    "seaborn",
    "PyYAML",
    "edfio",
    "openpyxl",
    "pyarrow",
    "tabulate",
    "Jinja2",
    "joblib",
)


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as 64 hex digits.

    Examples
    --------
    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile(delete=False) as f:
    ...     _ = f.write(b"abc")
    >>> sha256_file(f.name)[:16]
    'ba7816bf8f01cfea'
    >>> os.unlink(f.name)
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_tree(directory: str | Path, *, exclude: Iterable[str] = ()) -> dict[str, str]:
    """SHA-256 of every file under ``directory``, keyed by POSIX path relative to it.

    Parameters
    ----------
    directory : str or Path
        Root directory.
    exclude : iterable of str
        Relative paths (files or directories) to leave out.

    Returns
    -------
    dict
        Sorted ``{relative path: sha256}``.
    """
    root = Path(directory)
    skip = {e.strip("/") for e in exclude}
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        out[rel] = sha256_file(p)
    return out


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` when not installed).

    Examples
    --------
    >>> package_versions(["numpy"])["numpy"].count(".") >= 1
    True
    """
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = studykit.__version__ if name == "studykit" else None
    return out


def git_commit(path: str | Path | None = None) -> dict[str, object] | None:
    """Git commit (and whether the tree has uncommitted changes) of the studykit source.

    Parameters
    ----------
    path : str or Path, optional
        A directory inside the repository; default the directory of this package.

    Returns
    -------
    dict or None
        ``{"commit": sha, "dirty": bool}``, or ``None`` when not a git checkout or git is
        not installed.
    """
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}


def environment() -> dict[str, Any]:
    """Python, platform and package versions of this process."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "executable": sys.executable,
        "packages": package_versions(),
    }


def build_manifest(
    *,
    out_dir: str | Path,
    command: Sequence[str],
    arguments: Mapping[str, object],
    protocol_path: str | Path,
    protocol_id: str | None,
    protocol_copy: str | None,
    dictionary_path: str | Path | None,
    data_dir: str | Path,
    simulated: bool,
    seeds: Mapping[str, int | None],
    timings: Mapping[str, float] | None = None,
    tolerance: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Assemble the manifest of a run (hashes are computed here, from the files on disk).

    Parameters
    ----------
    out_dir : str or Path
        Results directory; every file under it except ``manifest.json`` and the input data
        is an output.
    command : sequence of str
        The exact command that re-runs the analysis (``studykit run ...``).
    arguments : mapping
        Resolved arguments (``protocol``, ``data``, ``out``, ``seed``).
    protocol_path, dictionary_path : str or Path
        Files whose SHA-256 is recorded (``dictionary_path`` None: not recorded).
    protocol_id : str, optional
        The protocol's id.
    protocol_copy : str, optional
        Path (relative to ``out_dir``) of the copy of the protocol stored with the results.
    data_dir : str or Path
        Input data directory: every file under it is hashed.
    simulated : bool
        Whether the data are simulated (generated by this run, or labelled so by their
        README). Whether this run generated them is ``arguments["data"] is None``.
    seeds : mapping
        Seeds used (e.g. ``{"simulate": 20261125}``).
    timings : mapping, optional
        Seconds per stage (informative, not compared by :func:`verify`).
    tolerance : mapping, optional
        Tolerances :func:`verify` uses (default ``RTOL``, ``ATOL``).

    Returns
    -------
    dict
        JSON-serializable manifest.
    """
    out = Path(out_dir).resolve()
    data = Path(data_dir).resolve()
    exclude = [MANIFEST_NAME]
    if data == out or out in data.parents:
        exclude.append(data.relative_to(out).as_posix())
    manifest: dict[str, Any] = {
        "manifest_version": 1,
        "studykit_version": package_versions(["studykit"])["studykit"],
        "command": list(command),
        "arguments": dict(arguments),
        "simulated": bool(simulated),
        "seeds": dict(seeds),
        "protocol": {
            "path": str(Path(protocol_path).resolve()),
            "id": protocol_id,
            "sha256": sha256_file(protocol_path),
            "copy": protocol_copy,
        },
        "dictionary": (
            {"path": str(dictionary_path), "sha256": sha256_file(dictionary_path)}
            if dictionary_path is not None
            else None
        ),
        "inputs": {"data_dir": str(data), "files": hash_tree(data)},
        "outputs": hash_tree(out, exclude=exclude),
        "environment": environment(),
        "git": {
            "studykit_source": git_commit(),
            "protocol_repository": git_commit(Path(protocol_path).resolve().parent),
        },
        "tolerance": dict(tolerance or {"rtol": RTOL, "atol": ATOL}),
        "timings_s": {k: round(float(v), 3) for k, v in (timings or {}).items()},
    }
    return manifest


def write_manifest(manifest: Mapping[str, object], directory: str | Path) -> Path:
    """Write ``manifest.json`` (sorted keys, 2-space indent, ``\\n`` line ends)."""
    path = Path(directory) / MANIFEST_NAME
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text + "\n")
    return path


def load_manifest(results_dir: str | Path) -> dict:
    """Read ``results_dir/manifest.json``.

    Raises
    ------
    InputError
        When the directory or the manifest is missing or not valid JSON.
    """
    path = Path(results_dir) / MANIFEST_NAME
    if not path.is_file():
        raise InputError(
            f"No {MANIFEST_NAME} in {str(results_dir)!r}. Give the output directory of "
            "'studykit run' (its --out), e.g. 'studykit verify results'."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"Cannot read {path}: {exc}. Re-create it with 'studykit run'.") from exc
    if not isinstance(data, dict) or "arguments" not in data:
        raise InputError(
            f"{path} is not a studykit run manifest (no 'arguments'). Re-create it with "
            "'studykit run'."
        )
    return data
