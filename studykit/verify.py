"""``verify``: re-run the analysis a manifest names and compare every result.

:func:`verify` re-runs the analysis the manifest names into a temporary directory and
compares every result CSV with the stored one: numbers within a stated tolerance
(``|a - b| <= atol + rtol * |b|``, numpy's ``isclose``; defaults ``rtol = 1e-6``,
``atol = 1e-9``), text exactly. It returns the list of differences (empty: identical).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from studykit import pipeline
from studykit.errors import InputError
from studykit.manifest import ATOL, RTOL, hash_tree, load_manifest, sha256_file

__all__ = ["RTOL", "ATOL", "Difference", "compare_csv", "compare_results", "verify"]


@dataclass(frozen=True)
class Difference:
    """One difference between stored and re-computed results.

    Attributes
    ----------
    file : str
        Path relative to the results directory.
    kind : str
        ``"missing"`` (stored, not re-computed), ``"extra"`` (re-computed, not stored),
        ``"columns"``, ``"rows"``, ``"number"``, ``"text"``, ``"input"`` (an input file
        differs from the one the results were computed from), ``"simulation"`` (the
        re-simulated demo data differ from the recorded ones) or ``"protocol"``.
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

    def read(p: str | Path) -> pd.DataFrame:
        try:
            return pd.read_csv(p, dtype=str, keep_default_na=False, na_filter=False)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()

    a, b = read(stored), read(recomputed)
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


def _result_csvs(directory: Path, exclude: Iterable[str]) -> dict[str, Path]:
    skip = {e.strip("/") for e in exclude}
    out = {}
    for p in sorted(directory.rglob("*.csv")):
        rel = p.relative_to(directory).as_posix()
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        out[rel] = p
    return out


def compare_results(
    stored_dir: str | Path,
    recomputed_dir: str | Path,
    *,
    exclude: Iterable[str] = ("data",),
    rtol: float = RTOL,
    atol: float = ATOL,
) -> list[Difference]:
    """Compare every result CSV of two results directories (inputs under ``data/`` excluded).

    Returns
    -------
    list of Difference
        Files present in only one directory (``missing`` / ``extra``) and cell differences.
    """
    exclude = list(exclude)
    a = _result_csvs(Path(stored_dir), exclude)
    b = _result_csvs(Path(recomputed_dir), exclude)
    diffs: list[Difference] = []
    for rel in sorted(set(a) | set(b)):
        if rel not in b:
            diffs.append(Difference(rel, "missing", stored="present", recomputed="absent"))
        elif rel not in a:
            diffs.append(Difference(rel, "extra", stored="absent", recomputed="present"))
        else:
            diffs.extend(compare_csv(a[rel], b[rel], name=rel, rtol=rtol, atol=atol))
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


def verify(
    results_dir: str | Path,
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    progress: bool = False,
) -> list[Difference]:
    """Re-run the analysis named in ``results_dir/manifest.json`` and compare the results.

    Parameters
    ----------
    results_dir : str or Path
        Output directory of ``studykit run``.
    rtol, atol : float
        Tolerances of numbers (see :func:`compare_csv`).
    progress : bool, default False
        Print the re-run's stage progress.

    Returns
    -------
    list of Difference
        Empty when every result table agrees. Also reports a protocol or input data file
        whose SHA-256 differs from the manifest's (``kind`` ``"protocol"`` / ``"input"``).

    Notes
    -----
    The protocol is read from the recorded path; when that file is gone, from the copy
    stored with the results (``protocol/<name>``). Input files on disk are checked against
    the manifest's hashes. Simulated data are re-simulated with the recorded seed into the
    temporary directory (so the simulation's reproducibility is checked too); real data are
    read from the recorded directory.
    """
    results = Path(results_dir)
    manifest = load_manifest(results)
    args = manifest["arguments"]
    diffs: list[Difference] = []

    proto = manifest.get("protocol", {})
    recorded = Path(str(args.get("protocol", "")))
    copy = results / str(proto.get("copy") or "protocol")
    path = recorded if recorded.is_file() else copy
    if not path.is_file():
        raise InputError(
            f"Cannot verify: the protocol {str(recorded)!r} is gone and the results have no "
            f"copy ({copy}). Restore the protocol file."
        )
    if proto.get("sha256") and sha256_file(path) != proto["sha256"]:
        diffs.append(
            Difference(str(path), "protocol", stored=proto["sha256"], recomputed=sha256_file(path))
        )

    simulated = args.get("data") is None  # the data were generated by the run
    stored_inputs: dict[str, str] = manifest.get("inputs", {}).get("files", {})
    recorded_data = manifest.get("inputs", {}).get("data_dir")
    data_dir = None if simulated else args.get("data")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise InputError(
            f"Cannot verify: the data directory {data_dir!r} recorded in the manifest is gone. "
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
            command=manifest.get("command"),
            progress=progress,
            allow_errors=bool(args.get("allow_errors", False)),
            outcomes=str(args.get("outcomes", "hypnograms")),
        )
        if simulated:  # the simulation itself must reproduce the same data files
            rerun_inputs = load_manifest(out).get("inputs", {}).get("files", {})
            diffs.extend(_input_differences(stored_inputs, rerun_inputs, "data/", "simulation"))
        diffs.extend(compare_results(results, out, rtol=rtol, atol=atol))
    return diffs
