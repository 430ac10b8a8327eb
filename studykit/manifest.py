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
import math
import platform
import re
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
    "DIGEST_NAME",
    "read_digest",
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
#: The manifest's digest file (``sha256sum`` format), written beside it.
DIGEST_NAME = "manifest.json.sha256"
#: Largest manifest :func:`load_manifest` reads (a real one is a few hundred kB).
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: Default relative tolerance of numbers in :func:`studykit.verify.verify`.
RTOL = 1e-6
#: Default absolute tolerance of numbers in :func:`studykit.verify.verify`.
ATOL = 1e-9
#: Distributions whose versions the manifest records: studykit and every runtime dependency
#: that ``studykit run`` imports (statsmodels through seaborn; pandas imports pyarrow,
#: tabulate and Jinja2 for strings, Markdown and LaTeX/HTML tables). Not joblib or tqdm
#: (power and derive only) nor test-only packages such as pingouin;
#: tests/test_manifest.py checks the list against the imports of a run.
PACKAGES: tuple[str, ...] = (
    "studykit",
    "numpy",
    "scipy",
    "pandas",
    "statsmodels",
    "matplotlib",
    "seaborn",
    "PyYAML",
    "edfio",
    "openpyxl",
    "pyarrow",
    "tabulate",
    "Jinja2",
    "threadpoolctl",
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
    exclude = [MANIFEST_NAME, DIGEST_NAME]
    if data == out or out in data.parents:
        exclude.append(data.relative_to(out).as_posix())
    manifest: dict[str, Any] = {
        "manifest_version": 1,
        "studykit_version": package_versions(["studykit"])["studykit"],
        "command": list(command),
        "arguments": dict(arguments),
        "simulated": bool(simulated),
        "data_label": "SIMULATED DATA: not evidence about any real participant"
        if simulated
        else "real data",
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
    """Write ``manifest.json`` (sorted keys, 2-space indent, ``\\n`` line ends) and its digest.

    The digest file ``manifest.json.sha256`` beside it holds the manifest's SHA-256 in the
    format of ``sha256sum`` (``<hex>  manifest.json``; ``sha256sum -c manifest.json.sha256``
    checks it), so that an edit of the manifest is detected by :func:`studykit.verify.verify`.
    """
    path = Path(directory) / MANIFEST_NAME
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text + "\n")
    with open(Path(directory) / DIGEST_NAME, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(f"{sha256_file(path)}  {MANIFEST_NAME}\n")
    return path


def read_digest(results_dir: str | Path) -> str | None:
    """The SHA-256 recorded in ``manifest.json.sha256`` (None: missing or unreadable).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / DIGEST_NAME).write_text("ab" * 32 + "  manifest.json\\n")
    >>> read_digest(d) == "ab" * 32
    True
    """
    try:
        text = (Path(results_dir) / DIGEST_NAME).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    first = text.split()[0] if text.split() else ""
    return first.lower() if _HEX64.fullmatch(first) else None


def _manifest_problems(data: object) -> list[str]:
    """What is wrong with the structure of a loaded manifest (empty: usable)."""
    if not isinstance(data, dict):
        return [f"the top level is a {type(data).__name__}, not an object"]
    problems = []

    def need(obj: object, key: str, types: type | tuple[type, ...], where: str) -> object:
        if not isinstance(obj, dict) or key not in obj:
            problems.append(f"'{where}{key}' is missing")
            return None
        value = obj[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
            names = " or ".join(t.__name__ for t in _tuple(types))
            problems.append(f"'{where}{key}' is a {type(value).__name__}, expected {names}")
            return None
        return value

    args = need(data, "arguments", dict, "")
    if isinstance(args, dict):
        need(args, "protocol", str, "arguments.")
        need(args, "data", (str, type(None)), "arguments.")
        need(args, "seed", (int, type(None)), "arguments.")
        if "allow_errors" in args:
            need(args, "allow_errors", bool, "arguments.")
        if "outcomes" in args:
            need(args, "outcomes", str, "arguments.")
    cmd = need(data, "command", list, "")
    if isinstance(cmd, list) and not all(isinstance(c, str) for c in cmd):
        problems.append("'command' must be a list of strings")
    need(data, "simulated", bool, "")
    proto = need(data, "protocol", dict, "")
    if isinstance(proto, dict):
        sha = need(proto, "sha256", str, "protocol.")
        if isinstance(sha, str) and not _HEX64.fullmatch(sha):
            problems.append("'protocol.sha256' is not 64 hex digits")
        copy = need(proto, "copy", (str, type(None)), "protocol.")
        if isinstance(copy, str) and not _safe_relative(copy):
            problems.append(f"'protocol.copy' {copy!r} is not a path inside the results folder")
    inputs = need(data, "inputs", dict, "")
    if isinstance(inputs, dict):
        need(inputs, "data_dir", (str, type(None)), "inputs.")
        files = need(inputs, "files", dict, "inputs.")
        if isinstance(files, dict):
            problems += _hash_map_problems(files, "inputs.files")
    outputs = need(data, "outputs", dict, "")
    if isinstance(outputs, dict):
        problems += _hash_map_problems(outputs, "outputs")
        bad = [k for k in outputs if not _safe_relative(k)]
        if bad:
            problems.append(f"'outputs' names paths outside the results folder: {bad[:3]}")
    if "tolerance" in data:
        tol = need(data, "tolerance", dict, "")
        if isinstance(tol, dict):
            for k in ("rtol", "atol"):
                if k in tol:
                    v = need(tol, k, (int, float), "tolerance.")
                    if isinstance(v, int | float) and not (math.isfinite(v) and v >= 0):
                        problems.append(f"'tolerance.{k}' must be a finite number >= 0")
    return problems


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _hash_map_problems(files: dict, where: str) -> list[str]:
    bad = [k for k, v in files.items() if not isinstance(v, str) or not _HEX64.fullmatch(v)]
    return [f"'{where}' has values that are not SHA-256 hex digests: {bad[:3]}"] if bad else []


def _safe_relative(path: str) -> bool:
    p = Path(path)
    return bool(path) and not p.is_absolute() and ".." not in p.parts and "\x00" not in path


def load_manifest(results_dir: str | Path) -> dict[str, Any]:
    """Read and check ``results_dir/manifest.json``.

    Raises
    ------
    InputError
        When the folder or the manifest is missing, unreadable, too large, not JSON, or not
        shaped like a studykit run manifest (every field of the wrong type is named).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / MANIFEST_NAME).write_text('{"arguments": [], "outputs": {"a": 1}}')
    >>> load_manifest(d)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    studykit.errors.InputError: ... is not a usable studykit run manifest: 'arguments' is a list, expected dict; ...
    """
    results = Path(results_dir)
    path = results / MANIFEST_NAME
    if not results.is_dir():
        raise InputError(
            f"{str(results_dir)!r} is not a folder. Give the results folder of 'studykit run' "
            "(its --out), e.g. 'studykit verify results'."
        )
    if not path.is_file():
        raise InputError(
            f"No {MANIFEST_NAME} in {str(results_dir)!r}. Give the results folder of "
            "'studykit run' (its --out), e.g. 'studykit verify results'."
        )
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise InputError(
                f"{path} is {path.stat().st_size} bytes, more than a manifest can be "
                f"({MAX_MANIFEST_BYTES} bytes). Re-create it with 'studykit run'."
            )
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        what = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InputError(f"Cannot read {path}: {what}. Re-create it with 'studykit run'.") from exc
    problems = _manifest_problems(data)
    if problems:
        raise InputError(
            f"{path} is not a usable studykit run manifest: {'; '.join(problems[:8])}"
            f"{' ...' if len(problems) > 8 else ''}. Re-create it with 'studykit run'."
        )
    assert isinstance(data, dict)
    return data
