"""``verify``: check a results folder against its manifest and a fresh re-run.

:func:`verify` checks, and names each difference it finds:

1. the manifest itself: its SHA-256 against ``manifest.json.sha256`` (kind ``manifest``);
2. every output the manifest lists (tables in every format, figures, report, protocol
   copy): present (``deleted``) and with the recorded SHA-256 (``hash``); a file in the
   results' own folders that the manifest does not list (``unlisted``);
3. the inputs: the protocol (``protocol``) and every data file (``input``) against their
   recorded SHA-256;
4. a re-run of the recorded analysis in a temporary folder (simulated data re-simulated with
   the recorded seed: ``simulation``): every CSV table cell by cell, numbers within
   ``|a - b| <= atol + rtol * |b|`` (defaults ``rtol = 1e-6``, ``atol = 1e-9``; kinds
   ``number``, ``text``, ``rows``, ``columns``), every other output byte for byte
   (``content``), outputs only one side has (``missing``: not re-made / ``extra``: not
   stored).

A manifest that cannot be used (missing, unreadable, wrong-typed fields) or a protocol or
data folder that is gone raises :class:`~studykit.errors.InputError`: "could not verify"
(the command line exits 2). Differences found: the command line exits 1.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from studykit import pipeline
from studykit.errors import InputError
from studykit.manifest import (
    ATOL,
    DIGEST_NAME,
    MANIFEST_NAME,
    RTOL,
    hash_tree,
    load_manifest,
    read_digest,
    sha256_file,
)
from studykit.outdir import MARKER
from studykit.tables.write import read_table_csv

__all__ = [
    "RTOL",
    "ATOL",
    "KINDS",
    "Difference",
    "compare_csv",
    "compare_results",
    "stored_output_differences",
    "verify",
]

#: Kinds of :class:`Difference`, with what each means.
KINDS: dict[str, str] = {
    "manifest": "manifest.json differs from its digest manifest.json.sha256 (or that is gone)",
    "deleted": "an output listed in the manifest is not in the results folder",
    "missing": "a stored output that the re-run does not make",
    "extra": "an output the re-run makes that the stored results do not have",
    "hash": "a stored output's SHA-256 differs from the manifest's",
    "unlisted": "a file in the results' folders that the manifest does not list",
    "columns": "a CSV table's columns differ from the re-run's",
    "rows": "a CSV table's row count differs from the re-run's",
    "number": "a number differs from the re-run's beyond the tolerance",
    "text": "a text cell differs from the re-run's",
    "content": "a non-CSV output (Markdown, HTML, LaTeX, figure, report) differs from the re-run's",
    "protocol": "the protocol file differs from the one the results were computed from",
    "input": "a data file differs from the one the results were computed from",
    "simulation": "the re-simulated demo data differ from the recorded ones",
}
#: Folders of a results folder whose every file the manifest must list.
_OWN_FOLDERS = ("tables", "figures", "protocol")
_OWN_FILES = ("report.html", MARKER)


@dataclass(frozen=True)
class Difference:
    """One difference between stored and re-computed results.

    Attributes
    ----------
    file : str
        Path relative to the results directory.
    kind : str
        One of :data:`KINDS`.
    row : int or None
        1-based data row (header excluded).
    column : str or None
        Column name.
    stored, recomputed : str
        The two values as written.
    """

    file: str
    kind: str
    row: int | None = None
    column: str | None = None
    stored: str = ""
    recomputed: str = ""

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f" row {self.row}"
        if self.column is not None:
            where += f" column {self.column!r}"
        return f"{where}: {self.kind}: stored {self.stored!r}, re-computed {self.recomputed!r}"


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _cells_equal(a: str, b: str, rtol: float, atol: float) -> tuple[bool, str]:
    if a == b:
        return True, ""
    fa, fb = _as_float(a), _as_float(b)
    if fa is None or fb is None or a == "" or b == "":
        return False, "text"
    if math.isnan(fa) and math.isnan(fb):
        return True, ""
    if math.isinf(fa) or math.isinf(fb):
        return fa == fb, "number"
    return abs(fa - fb) <= atol + rtol * abs(fb), "number"


def compare_csv(
    stored: str | Path,
    recomputed: str | Path,
    *,
    name: str | None = None,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> list[Difference]:
    """Compare two CSV tables cell by cell: numbers within tolerance, text exactly.

    Parameters
    ----------
    stored, recomputed : str or Path
        The two files. ``recomputed`` is the reference of the relative tolerance.
    name : str, optional
        Name used in the differences (default the stored file's name).
    rtol, atol : float
        Tolerances: numbers agree when ``|a - b| <= atol + rtol * |b|``; empty cells and
        text must match exactly.

    Returns
    -------
    list of Difference

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.csv").write_text("x,y\\nP01,1.0000000001\\n")
    >>> _ = (d / "b.csv").write_text("x,y\\nP01,1\\n")
    >>> compare_csv(d / "a.csv", d / "b.csv")
    []
    >>> _ = (d / "b.csv").write_text("x,y\\nP02,2\\n")
    >>> [str(x) for x in compare_csv(d / "a.csv", d / "b.csv")]  # doctest: +NORMALIZE_WHITESPACE
    ["a.csv row 1 column 'x': text: stored 'P01', re-computed 'P02'",
     "a.csv row 1 column 'y': number: stored '1.0000000001', re-computed '2'"]
    """
    label = name or Path(stored).name

    a, b = read_table_csv(stored), read_table_csv(recomputed)
    if list(a.columns) != list(b.columns):
        return [
            Difference(
                label,
                "columns",
                stored=",".join(map(str, a.columns)),
                recomputed=",".join(map(str, b.columns)),
            )
        ]
    diffs: list[Difference] = []
    if len(a) != len(b):
        diffs.append(Difference(label, "rows", stored=str(len(a)), recomputed=str(len(b))))
    av, bv = a.to_numpy(), b.to_numpy()
    for i in range(min(len(a), len(b))):
        for j, col in enumerate(a.columns):
            ok, kind = _cells_equal(str(av[i, j]), str(bv[i, j]), rtol, atol)
            if not ok:
                diffs.append(Difference(label, kind, i + 1, str(col), str(av[i, j]), str(bv[i, j])))
    return diffs


def _same_bytes(stored: Path, recomputed: Path, replace: Mapping[str, str]) -> bool:
    a, b = stored.read_bytes(), recomputed.read_bytes()
    if a == b:
        return True
    for old, new in replace.items():
        b = b.replace(old.encode(), new.encode())
    return a == b


def compare_results(
    stored_dir: str | Path,
    recomputed_dir: str | Path,
    *,
    stored_outputs: Iterable[str] | None = None,
    recomputed_outputs: Iterable[str] | None = None,
    rtol: float = RTOL,
    atol: float = ATOL,
    replace: Mapping[str, str] | None = None,
) -> list[Difference]:
    """Compare the outputs of two results folders: CSV tables by cell, the rest by bytes.

    Parameters
    ----------
    stored_dir, recomputed_dir : str or Path
        The stored results and a re-run's.
    stored_outputs, recomputed_outputs : iterable of str, optional
        Relative paths of the outputs (the manifests' ``outputs``); default every file
        under the folder except ``data/`` and the manifest files.
    rtol, atol : float
        Tolerances of numbers in CSV tables (see :func:`compare_csv`).
    replace : mapping, optional
        Text replaced in the re-run's non-CSV files before comparing (e.g. its temporary
        path by the stored one).

    Returns
    -------
    list of Difference
        ``missing`` (stored, not re-made) / ``extra`` (re-made, not stored) outputs, CSV
        cell differences and ``content`` differences.
    """
    a_dir, b_dir = Path(stored_dir), Path(recomputed_dir)
    skip = ["data", MANIFEST_NAME, DIGEST_NAME]
    a = set(stored_outputs) if stored_outputs is not None else set(hash_tree(a_dir, exclude=skip))
    b = (
        set(recomputed_outputs)
        if recomputed_outputs is not None
        else set(hash_tree(b_dir, exclude=skip))
    )
    diffs: list[Difference] = []
    for rel in sorted(a | b):
        if rel not in b:
            diffs.append(Difference(rel, "missing", stored="present", recomputed="absent"))
        elif rel not in a:
            diffs.append(Difference(rel, "extra", stored="absent", recomputed="present"))
        elif not (a_dir / rel).is_file():
            continue  # listed but gone: reported by stored_output_differences
        elif rel.endswith(".csv"):
            diffs.extend(compare_csv(a_dir / rel, b_dir / rel, name=rel, rtol=rtol, atol=atol))
        elif not _same_bytes(a_dir / rel, b_dir / rel, replace or {}):
            diffs.append(
                Difference(
                    rel,
                    "content",
                    stored=sha256_file(a_dir / rel),
                    recomputed=sha256_file(b_dir / rel),
                )
            )
    return diffs


def stored_output_differences(results_dir: str | Path, manifest: Mapping) -> list[Difference]:
    """The stored outputs against the manifest: deleted, changed (SHA-256), unlisted files.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "report.html").write_text("edited")
    >>> [str(x) for x in stored_output_differences(d, {"outputs": {"report.html": "0" * 64}})]
    ["report.html: hash: stored '0000000000000000000000000000000000000000000000000000000000000000', re-computed '1fb9f4097256db2d7b1e13aff79cee44339891a31c556b9cf6093885773b3618'"]
    """
    results = Path(results_dir)
    listed: Mapping[str, str] = manifest["outputs"]
    diffs: list[Difference] = []
    for rel, sha in sorted(listed.items()):
        p = results / rel
        if not p.is_file():
            diffs.append(Difference(rel, "deleted", stored=sha, recomputed="absent"))
            continue
        now = sha256_file(p)
        if now != sha:
            diffs.append(Difference(rel, "hash", stored=sha, recomputed=now))
    present = hash_tree(results, exclude=[]) if results.is_dir() else {}
    for rel in sorted(present):
        top = rel.split("/", 1)[0]
        own = top in _OWN_FOLDERS or rel in _OWN_FILES
        if own and rel not in listed:
            diffs.append(Difference(rel, "unlisted", stored="absent", recomputed=present[rel]))
    return diffs


def _input_differences(
    stored: Mapping[str, str], current: Mapping[str, str], prefix: str, kind: str
) -> list[Difference]:
    out = []
    for rel in sorted(set(stored) | set(current)):
        if stored.get(rel) != current.get(rel):
            out.append(
                Difference(
                    prefix + rel,
                    kind,
                    stored=stored.get(rel, "absent"),
                    recomputed=current.get(rel, "absent"),
                )
            )
    return out


def _recorded_out(manifest: Mapping) -> str:
    """OUT as the user gave it (the value after ``--out`` in the recorded command)."""
    cmd = list(manifest.get("command") or [])
    for flag in ("--out", "-o"):
        if flag in cmd[:-1]:
            return str(cmd[cmd.index(flag) + 1])
    return str(manifest["arguments"].get("out", ""))


def verify(
    results_dir: str | Path,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    progress: bool = False,
) -> list[Difference]:
    """Check a results folder against its manifest and a fresh re-run; list the differences.

    Parameters
    ----------
    results_dir : str or Path
        Output folder of ``studykit run``.
    rtol, atol : float, optional
        Tolerances of numbers (see :func:`compare_csv`); default the manifest's
        ``tolerance`` (:data:`RTOL`, :data:`ATOL`).
    progress : bool, default False
        Print the re-run's stage progress.

    Returns
    -------
    list of Difference
        Empty when everything agrees; otherwise each difference, kinds in :data:`KINDS`.

    Raises
    ------
    InputError
        Could not verify: no usable manifest, or the protocol or data folder it names is
        gone (the message says which and how to fix it).

    Notes
    -----
    The protocol is read from the recorded path; when that file is gone, from the copy
    stored with the results (``protocol/<name>``). Simulated data are re-simulated with the
    recorded seed into the temporary folder (so the simulation's reproducibility is checked
    too); real data are read from the recorded folder. The manifest digest guards against an
    edited manifest; an edit of both the manifest and its digest is still caught by the
    re-run, which recomputes every output from the inputs.
    """
    results = Path(results_dir)
    diffs: list[Difference] = []
    manifest_path = results / MANIFEST_NAME
    if manifest_path.is_file():
        actual = sha256_file(manifest_path)
        recorded_digest = read_digest(results)
        if recorded_digest != actual:
            diffs.append(
                Difference(
                    MANIFEST_NAME,
                    "manifest",
                    stored=recorded_digest or f"{DIGEST_NAME} missing or unreadable",
                    recomputed=actual,
                )
            )
    try:
        manifest = load_manifest(results)
    except InputError as exc:
        if diffs:
            exc.args = (
                f"{exc.args[0]} (Its SHA-256 also differs from {DIGEST_NAME}: it was changed "
                "after the run.)",
                *exc.args[1:],
            )
        raise
    tol = manifest.get("tolerance") or {}
    rtol = float(tol.get("rtol", RTOL)) if rtol is None else rtol
    atol = float(tol.get("atol", ATOL)) if atol is None else atol
    args = manifest["arguments"]
    diffs.extend(stored_output_differences(results, manifest))

    proto = manifest["protocol"]
    recorded = Path(args["protocol"])
    copy = results / str(proto.get("copy") or "protocol")
    path = recorded if recorded.is_file() else copy
    if not path.is_file():
        raise InputError(
            f"Cannot verify: the protocol {str(recorded)!r} is gone and the results have no "
            f"copy ({copy}). Restore the protocol file."
        )
    if sha256_file(path) != proto["sha256"]:
        diffs.append(
            Difference(str(path), "protocol", stored=proto["sha256"], recomputed=sha256_file(path))
        )

    simulated = args["data"] is None  # the data were generated by the run
    stored_inputs: dict[str, str] = manifest["inputs"]["files"]
    recorded_data = manifest["inputs"].get("data_dir")
    data_dir = None if simulated else args["data"]
    if data_dir is not None and not Path(data_dir).is_dir():
        raise InputError(
            f"Cannot verify: the data folder {data_dir!r} recorded in the manifest is gone. "
            "Restore it (same files) and re-run 'studykit verify'."
        )
    # the input files on disk must be those the results were computed from
    on_disk_dir = (results / "data") if simulated else Path(str(data_dir))
    if simulated and not on_disk_dir.is_dir() and recorded_data:
        on_disk_dir = Path(recorded_data)
    on_disk = hash_tree(on_disk_dir) if on_disk_dir.is_dir() else {}
    prefix = "data/" if simulated else f"{on_disk_dir}/"
    diffs.extend(_input_differences(stored_inputs, on_disk, prefix, "input"))
    with tempfile.TemporaryDirectory(prefix="studykit-verify-") as tmp:
        out = Path(tmp) / "results"
        pipeline.run(
            path,
            data=data_dir,
            out=out,
            seed=args.get("seed"),
            command=manifest["command"],
            progress=progress,
            allow_errors=bool(args.get("allow_errors", False)),
            outcomes=str(args.get("outcomes", "hypnograms")),
        )
        rerun = load_manifest(out)
        if simulated:  # the simulation itself must reproduce the same data files
            rerun_inputs = rerun["inputs"]["files"]
            diffs.extend(_input_differences(stored_inputs, rerun_inputs, "data/", "simulation"))
        diffs.extend(
            compare_results(
                results,
                out,
                stored_outputs=manifest["outputs"],
                recomputed_outputs=rerun["outputs"],
                rtol=rtol,
                atol=atol,
                replace={str(out): _recorded_out(manifest)},
            )
        )
    return diffs
