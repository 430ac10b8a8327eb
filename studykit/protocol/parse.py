"""Strict loading of a protocol YAML file into :class:`~studykit.protocol.model.Protocol`.

The file is read with a safe YAML loader that builds plain types only, refuses duplicate keys
and non-finite numbers, and reports nesting too deep to be a protocol as a
:class:`~studykit.errors.ProtocolError`. Every key is checked against a strict schema and
every name against the data dictionary; the SHA-256 of the file bytes is recorded so each
result row names the locked plan that produced it.

Nothing in a protocol is ever evaluated: model terms are variable names, or names joined by
``:``, checked with :func:`studykit.models.design.parse_term`; anything that looks like code
(``np.log(y)``, ``I(x**2)``, ``__import__('os')``) is refused.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from studykit.dictionary import DataDictionary, Variable, load_dictionary
from studykit.errors import FormulaError, ModelError, ProtocolError
from studykit.estimators import ESTIMATORS
from studykit.models.design import parse_term
from studykit.models.formula import parse_formula
from studykit.models.multiplicity import METHODS
from studykit.models.random_effects import RandomEffect
from studykit.protocol.model import (
    CONTRAST_TYPES,
    DF_METHODS,
    DIRECTIONS,
    EVENT_TIME_UNITS,
    EVIDENCE,
    FAMILIES,
    MISSING_DATA_METHODS,
    OUTCOME_TABLES,
    PARTICIPANT,
    ROLES,
    SCHEMA_VERSION,
    SENSITIVITY_STRATEGIES,
    STRATEGIES,
    Amendment,
    AnalysisSet,
    Contrast,
    Estimand,
    Hypothesis,
    IntercurrentEvent,
    MissingDataAnalysis,
    MultiplicityFamily,
    NotTested,
    Protocol,
    SensitivityAnalysis,
    Source,
)
from studykit.protocol.plan import compile_plans

__all__ = ["load_protocol", "parse_protocol"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- loading
def load_protocol(
    path: str | os.PathLike[str], *, dictionary: DataDictionary | None = None
) -> Protocol:
    """Load and validate a protocol YAML file.

    Parameters
    ----------
    path : str or path-like
        The protocol file (``protocols/ketamine_sleep.yaml``).
    dictionary : DataDictionary, optional
        The data dictionary to check names against; default the packaged one
        (:func:`studykit.dictionary.load_dictionary`).

    Returns
    -------
    Protocol
        With ``sha256`` the SHA-256 of the file bytes.

    Raises
    ------
    ProtocolError
        The file cannot be read or parsed, or breaks the schema: unknown or missing keys,
        outcomes / terms not in the dictionary, a family not allowed for the outcome's type,
        an invalid alpha, reference levels not among the dictionary's codes, anything that
        looks like code in a model term; an amendment log whose versions do not increase,
        whose newest version is not ``protocol.version``, or whose replaced file is missing
        or has another SHA-256 than the one stated. The message names the hypothesis (or
        amendment) and the field.

    Examples
    --------
    The shipped protocol (in a source checkout, ``protocols/ketamine_sleep.yaml``):

    >>> from pathlib import Path
    >>> p = Path(__file__).parents[2] / "protocols" / "ketamine_sleep.yaml"
    >>> proto = load_protocol(p)
    >>> proto.id, len(proto.sha256)
    ('ketamine_sleep', 64)
    >>> [h.id for h in proto.hypotheses]
    ['H1', 'H2', 'H3', 'E1', 'E2', 'E3', 'E4', 'E5', 'E6', 'E7']
    >>> h1 = proto.get("H1")
    >>> h1.outcome, h1.family, h1.direction, h1.multiplicity_family
    ('n3_min', 'gaussian', 'greater', 'confirmatory')
    >>> h1.terms
    ['treatment', 'night', 'treatment:night', 'period']

    Anything that is not a validated variable name is refused, never evaluated:

    >>> text = p.read_text(encoding="utf-8").replace(
    ...     '"treatment:night", period]', '"treatment:night", "np.log(n3_min)"]', 1)
    >>> try:
    ...     parse_protocol(text)
    ... except ProtocolError as exc:
    ...     print(str(exc).split(": ", 1)[1][:54])
    'np.log(n3_min)' looks like code, not a variable name.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError as exc:
        raise ProtocolError(f"Protocol file {str(p)!r} does not exist.") from exc
    except IsADirectoryError as exc:
        raise ProtocolError(f"Protocol path {str(p)!r} is a directory, not a YAML file.") from exc
    except OSError as exc:
        raise ProtocolError(f"Cannot read protocol file {str(p)!r}: {exc}.") from exc
    return parse_protocol(raw, dictionary=dictionary, source=str(p), base_dir=p.parent)


def parse_protocol(
    text: str | bytes,
    *,
    dictionary: DataDictionary | None = None,
    source: str = "<string>",
    base_dir: str | os.PathLike[str] | None = None,
) -> Protocol:
    """Parse and validate protocol YAML given as text or bytes (see :func:`load_protocol`).

    The SHA-256 is computed over the UTF-8 bytes (for ``str`` input) or the bytes as given.
    ``base_dir`` is the folder the amendment log's archived files are relative to (the
    protocol file's folder; :func:`load_protocol` passes it); a protocol with amendments
    cannot be checked without it.

    Examples
    --------
    A key given twice is refused (YAML itself would keep the last one silently):

    >>> try:
    ...     parse_protocol("protocol: {id: a}\\nprotocol: {id: b}\\n")
    ... except ProtocolError as exc:
    ...     print(str(exc).split(": ", 1)[1][:40])
    key 'protocol' is given twice (line 2, c
    """
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    sha = hashlib.sha256(raw).hexdigest()
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"Protocol {source}: not UTF-8 text.") from exc
    doc = read_yaml(decoded, source)
    dd = load_dictionary() if dictionary is None else dictionary
    base = None if base_dir is None else Path(base_dir)
    proto = _Builder(doc, _DictView(dd), source, sha, base).build()
    return dataclasses.replace(proto, plans=compile_plans(proto))


# --------------------------------------------------------------------------- strict YAML
class _Refused(yaml.YAMLError):
    """A YAML construct that is valid YAML but not accepted in a protocol."""


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader (plain types only) that also refuses duplicate keys and .inf / .nan."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *anchor' merges: explicit keys then override merged ones
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable key: SafeLoader reports it below
                continue
            if first is not None:
                raise _Refused(
                    f"key {key!r} is given twice (line {key_node.start_mark.line + 1}, "
                    f"column {key_node.start_mark.column + 1}; first on line "
                    f"{first.start_mark.line + 1}). Each key may appear once in a mapping: "
                    "remove one of them."
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise _Refused(
                f"{node.value!r} (line {node.start_mark.line + 1}) is not a finite number; "
                "a protocol states finite numbers only."
            )
        return value


_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)
_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_yaml_map)


def read_yaml(text: str, source: str = "<string>") -> Any:
    """Plain YAML (safe loader), refusing duplicate keys, non-finite numbers, deep nesting.

    Raises
    ------
    ProtocolError
        Invalid YAML, a tag that would build a Python object, a duplicate key, ``.inf`` /
        ``.nan``, or nesting deeper than a protocol can have (the parser's recursion limit).

    Examples
    --------
    >>> read_yaml("a: [1, 2.5]")
    {'a': [1, 2.5]}
    >>> try:
    ...     read_yaml("alpha: .inf")
    ... except ProtocolError as exc:
    ...     print(str(exc).split(": ", 1)[1][:24])
    '.inf' (line 1) is not a
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _Refused as exc:
        raise ProtocolError(f"Protocol {source}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ProtocolError(
            f"Protocol {source}: not valid YAML (only plain YAML is accepted; tags that build "
            f"Python objects are refused): {exc}"
        ) from exc
    except RecursionError as exc:
        raise ProtocolError(
            f"Protocol {source}: the YAML is nested too deeply to be a protocol (lists or "
            "mappings inside each other hundreds of levels deep). Check the file: a protocol "
            "nests a few levels only."
        ) from exc


# --------------------------------------------------------------------------- dictionary view
class _DictView:
    """What the loader needs from a DataDictionary (its public contract only)."""

    def __init__(self, dictionary: DataDictionary) -> None:
        self.d = dictionary
        self._names: dict[str, list[str]] = {
            table: [v.name for v in dictionary.variables(table)] for table in dictionary.tables
        }

    def has(self, table: str, name: str) -> bool:
        return name in self._names.get(table, [])

    def names(self, table: str) -> list[str]:
        return list(self._names.get(table, []))

    def var(self, table: str, name: str) -> Variable:
        return self.d.get(table, name)

    def type(self, table: str, name: str) -> str:
        return self.var(table, name).type

    def unit(self, table: str, name: str) -> str:
        return self.var(table, name).unit

    def role(self, table: str, name: str) -> str:
        return self.var(table, name).role

    def identifier(self, table: str, name: str) -> bool:
        return self.var(table, name).identifier

    def missing_codes(self, table: str, name: str) -> list[str]:
        return [c.strip() for c in self.var(table, name).missing_codes if c.strip()]

    def codes(self, table: str, name: str) -> list[str]:
        return [str(c) for c in self.d.levels(table, name)]

    def bounds(self, table: str, name: str) -> tuple[float | None, float | None]:
        v = self.var(table, name)

        def num(x: float | str | None) -> float | None:
            if x is None or x == "":
                return None
            try:
                f = float(x)
            except (TypeError, ValueError):
                return None
            return None if math.isnan(f) else f

        return num(v.minimum), num(v.maximum)


# --------------------------------------------------------------------------- the builder
_TOP_KEYS = {
    "schema_version": False,
    "protocol": True,
    "defaults": False,
    "analysis_sets": True,
    "multiplicity": True,
    "hypotheses": True,
    "not_tested": False,
    "sensitivity": False,
    "amendments": False,
    "_shared": False,  # free-form block holding YAML anchors; not read
}
_AMENDMENT_KEYS = {
    "version": True,
    "date": True,
    "changes": True,
    "rationale": True,
    "replaces": True,
}
_REPLACES_KEYS = {"version": True, "sha256": True, "file": True}
#: A protocol version in an amendment log: numbers separated by dots ("1.0", "2.1.3").
_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PROTOCOL_KEYS = {
    "id": True,
    "version": True,
    "title": True,
    "description": False,
    "locked_on": False,
    "design": False,
    "articles": False,
}
_DEFAULT_KEYS = {"df_method": False, "reference_levels": False}
_SET_KEYS = {
    "description": True,
    "exclude_status": False,
    "require_both_treatments": False,
    "require_reference_time": False,
    "exclude_flagged_nights": False,
}
_FAMILY_KEYS = {"method": True, "alpha": True, "order": False, "description": False}
_HYP_KEYS = {
    "id": True,
    "claim_id": True,
    "claim": True,
    "source": True,
    "role": True,
    "outcome": True,
    "analysis_set": True,
    "family": True,
    "model": False,
    "contrast": True,
    "direction": True,
    "multiplicity_family": True,
    "alpha": False,
    "effect_of_interest": True,
    "estimand": True,
    "df_method": False,
    "estimator": False,
}
_SOURCE_KEYS = {"articles": True, "primary_research": True, "evidence": True}
_OUTCOME_KEYS = {"table": True, "variable": True}
_MODEL_KEYS = {
    "formula": False,
    "fixed": False,
    "covariates": False,
    "random": False,
    "levels": False,
}
_RANDOM_KEYS = {"group": True, "slopes": False, "correlated": False}
_CONTRAST_KEYS = {
    "type": True,
    "description": True,
    "treatment": True,
    "time": True,
    "predictor": False,
    "outcome_reference": False,
}
_TREAT_KEYS = {"variable": True, "level": True, "reference": False}
_TIME_KEYS = {"variable": True, "levels": True, "reference": True, "window": False}
_PREDICTOR_KEYS = {"table": True, "variable": True}
_ESTIMAND_KEYS = {
    "population": True,
    "treatment": True,
    "variable": True,
    "intercurrent_events": True,
    "summary_measure": True,
}
_ICE_KEYS = {
    "event": True,
    "variable": False,
    "table": False,
    "level": False,
    "strategy": True,
    "handling": True,
    "timing": False,
    "rationale": False,
}
_SENSITIVITY_KEYS = {
    "name": True,
    "description": True,
    "analysis_set": False,
    "intercurrent_events": False,
    "hypotheses": False,
    "missing_data": False,
    # the listed hypotheses restated: keys of a hypothesis replacing the primary's
    "estimator": False,
    "family": False,
    "model": False,
    "effect_of_interest": False,
}
#: Sensitivity keys that restate the listed hypotheses (each replaces the hypothesis' own key).
_RESTATING_KEYS = ("estimator", "family", "model", "effect_of_interest")
_MISSING_DATA_KEYS = {"method": True, "deltas": True, "imputations": False, "seed": True}
_NOT_TESTED_KEYS = {"claim_id": True, "claim": True, "source": True, "reason": True}


def _cap(values: Iterable[Any], n: int = 8) -> str:
    vals = [str(v) for v in values]
    more = f" ... ({len(vals) - n} more)" if len(vals) > n else ""
    return ", ".join(vals[:n]) + more


class _Builder:
    def __init__(
        self, doc: Any, dd: _DictView, source: str, sha: str, base_dir: Path | None = None
    ) -> None:
        self.doc = doc
        self.dd = dd
        self.source = source
        self.sha = sha
        self.base_dir = base_dir

    # -- helpers
    def fail(self, where: str, msg: str) -> ProtocolError:
        return ProtocolError(f"Protocol {self.source}, {where}: {msg}")

    def mapping(self, value: Any, where: str, keys: Mapping[str, bool]) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected a mapping (key: value), got {type(value).__name__}.")
        unknown = [k for k in value if k not in keys]
        if unknown:
            raise self.fail(
                where,
                f"unknown key(s) {_cap(unknown)}. Allowed keys: {', '.join(keys)}. "
                "Check the spelling; the schema is strict so typos cannot go unnoticed.",
            )
        missing = [k for k, req in keys.items() if req and (k not in value or value[k] is None)]
        if missing:
            raise self.fail(where, f"missing required field(s) {', '.join(missing)}.")
        return dict(value)

    def text(self, value: Any, where: str) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(where, f"expected text, got {type(value).__name__} {value!r}.")
        s = str(value).strip()
        if not s:
            raise self.fail(where, "must not be empty.")
        return s

    def choice(self, value: Any, where: str, allowed: Sequence[str]) -> str:
        s = self.text(value, where)
        if s not in allowed:
            raise self.fail(where, f"invalid value {s!r}. Allowed: {', '.join(allowed)}.")
        return s

    def str_list(self, value: Any, where: str, *, allow_empty: bool = True) -> list[str]:
        if value is None:
            value = []
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {type(value).__name__} {value!r}.")
        out = [self.text(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if not out and not allow_empty:
            raise self.fail(where, "must list at least one value.")
        return out

    def boolean(self, value: Any, where: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {value!r}.")
        return value

    def alpha(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where, f"alpha must be a number, got {value!r}.")
        a = float(value)
        if not (0 < a <= 0.5) or math.isnan(a):
            raise self.fail(where, f"invalid alpha {value!r}: must be > 0 and <= 0.5 (e.g. 0.025).")
        return a

    def name(self, value: Any, where: str) -> str:
        """A single variable name: an identifier, never code."""
        s = self.text(value, where)
        self.not_code(s, where)
        if not s.isidentifier():
            raise self.fail(where, f"{s!r} is not a variable name (letters, digits, underscores).")
        return s

    def not_code(self, s: str, where: str) -> None:
        suspicious = any(ch in s for ch in "()[]{}'\"*+-/.,;=<>!@%&^~`$\\ ") or "__" in s
        if suspicious:
            raise self.fail(
                where,
                f"{s!r} looks like code, not a variable name. Protocol model terms are only "
                "variable names from the data dictionary, or names joined by ':' for an "
                "interaction (e.g. 'treatment:night'); nothing in a protocol is ever evaluated. "
                "Transformations (logs, powers) must be derived columns in the dictionary.",
            )

    def term(self, value: Any, where: str) -> tuple[str, ...]:
        s = self.text(value, where)
        for part in s.split(":"):
            self.not_code(part.strip(), where)
        try:
            parts = parse_term(s)
        except ModelError as exc:
            raise self.fail(where, str(exc)) from exc
        if not parts:
            raise self.fail(where, "the intercept is implicit; do not list '1' as a term.")
        return parts

    # -- sections
    def build(self) -> Protocol:
        doc = self.mapping(self.doc, "top level", _TOP_KEYS)
        sv = doc.get("schema_version", SCHEMA_VERSION)
        if sv != SCHEMA_VERSION:
            raise self.fail(
                "schema_version", f"{sv!r} is not supported; this studykit reads {SCHEMA_VERSION}."
            )
        meta = self.mapping(doc["protocol"], "protocol", _PROTOCOL_KEYS)
        pid = self.name(meta["id"], "protocol.id")
        articles_raw = meta.get("articles") or {}
        if not isinstance(articles_raw, Mapping):
            raise self.fail("protocol.articles", "expected a mapping article id -> description.")
        articles = {
            self.text(k, "protocol.articles"): self.text(v, f"protocol.articles.{k}")
            for k, v in articles_raw.items()
        }
        defaults = self.mapping(doc.get("defaults") or {}, "defaults", _DEFAULT_KEYS)
        self.default_df = self.choice(
            defaults.get("df_method", "satterthwaite"), "defaults.df_method", DF_METHODS
        )
        refs = defaults.get("reference_levels") or {}
        if not isinstance(refs, Mapping):
            raise self.fail("defaults.reference_levels", "expected a mapping variable -> level.")
        self.default_refs = {
            self.name(k, "defaults.reference_levels"): self.text(
                v, f"defaults.reference_levels.{k}"
            )
            for k, v in refs.items()
        }
        sets = self.analysis_sets(doc["analysis_sets"])
        families = self.families(doc["multiplicity"])
        hyps_raw = doc["hypotheses"]
        if not isinstance(hyps_raw, list) or not hyps_raw:
            raise self.fail("hypotheses", "expected a non-empty list of hypotheses.")
        hyps: list[Hypothesis] = []
        self.raw_hypotheses: dict[str, tuple[int, Mapping[str, Any]]] = {}
        for i, h in enumerate(hyps_raw):
            hyp = self.hypothesis(h, i, sets, families, articles)
            if hyp.id in self.raw_hypotheses:
                raise self.fail(f"hypotheses[{i}]", f"duplicate hypothesis id {hyp.id!r}.")
            self.raw_hypotheses[hyp.id] = (i, h)
            hyps.append(hyp)
        self.check_families(families, hyps)
        not_tested = [self.not_tested(x, i) for i, x in enumerate(doc.get("not_tested") or [])]
        sensitivity = self.sensitivity(doc.get("sensitivity"), sets, families, articles, hyps)
        version = self.text(meta["version"], "protocol.version")
        amendments = self.amendments(doc.get("amendments"), version)
        return Protocol(
            id=pid,
            version=version,
            title=self.text(meta["title"], "protocol.title"),
            sha256=self.sha,
            hypotheses=hyps,
            families=families,
            analysis_sets=sets,
            not_tested=not_tested,
            sensitivity=sensitivity,
            articles=articles,
            path=self.source,
            description=str(meta.get("description") or "").strip(),
            amendments=amendments,
        )

    # -- amendment log
    def version_key(self, value: str, where: str) -> tuple[int, ...]:
        if not _VERSION.fullmatch(value):
            raise self.fail(
                where,
                f"version {value!r} is not a version number (numbers separated by dots, e.g. "
                "'1.1'); an amendment log orders versions by these numbers.",
            )
        return tuple(int(x) for x in value.split("."))

    def amendments(self, raw: Any, version: str) -> tuple[Amendment, ...]:
        """The amendment log: versions increasing, each replaced file archived unchanged."""
        if raw is None:
            return ()
        if not isinstance(raw, list) or not raw:
            raise self.fail(
                "amendments",
                "expected a non-empty list of amendments (version, date, changes, rationale, "
                "replaces: {version, sha256, file}), oldest first.",
            )
        out: list[Amendment] = []
        for i, item in enumerate(raw):
            where = f"amendments[{i}]"
            a = self.mapping(item, where, _AMENDMENT_KEYS)
            r = self.mapping(a["replaces"], f"{where}.replaces", _REPLACES_KEYS)
            new = self.text(a["version"], f"{where}.version")
            old = self.text(r["version"], f"{where}.replaces.version")
            if self.version_key(new, f"{where}.version") <= self.version_key(
                old, f"{where}.replaces.version"
            ):
                raise self.fail(
                    f"{where}.version",
                    f"version {new!r} does not come after the version it replaces ({old!r}).",
                )
            if out and old != out[-1].version:
                raise self.fail(
                    f"{where}.replaces.version",
                    f"amendment {new!r} replaces version {old!r}, but the amendment before it "
                    f"produced version {out[-1].version!r}: list the amendments oldest first, "
                    "each replacing the version the one before it produced.",
                )
            date = self.date(a["date"], f"{where}.date")
            if out and date < out[-1].date:
                raise self.fail(
                    f"{where}.date",
                    f"{date} is before the date of the amendment before it ({out[-1].date}); "
                    "list the amendments oldest first.",
                )
            changes = self.str_list(a["changes"], f"{where}.changes", allow_empty=False)
            sha = self.text(r["sha256"], f"{where}.replaces.sha256").lower()
            if not _SHA256.fullmatch(sha):
                raise self.fail(
                    f"{where}.replaces.sha256",
                    f"{sha!r} is not a SHA-256 (64 hexadecimal characters); compute it with "
                    "`sha256sum` of the archived file of the replaced version.",
                )
            file = self.text(r["file"], f"{where}.replaces.file")
            self.check_archived(file, sha, old, f"{where}.replaces")
            out.append(
                Amendment(
                    version=new,
                    date=date,
                    changes=tuple(changes),
                    rationale=self.text(a["rationale"], f"{where}.rationale"),
                    replaces_version=old,
                    replaces_sha256=sha,
                    replaces_file=file,
                )
            )
        if out[-1].version != version:
            raise self.fail(
                "amendments",
                f"the newest amendment produced version {out[-1].version!r} but "
                f"protocol.version is {version!r}: log the amendment that made version "
                f"{version!r} (or correct protocol.version).",
            )
        return tuple(out)

    def date(self, value: Any, where: str) -> str:
        if isinstance(value, datetime.date):  # an unquoted YAML date
            return value.isoformat()
        s = self.text(value, where)
        try:
            return datetime.date.fromisoformat(s).isoformat()
        except ValueError as exc:
            raise self.fail(where, f"{s!r} is not an ISO date (YYYY-MM-DD).") from exc

    def check_archived(self, file: str, sha: str, version: str, where: str) -> None:
        """The archived file of a replaced version exists and has the stated SHA-256.

        ``file`` is relative to the protocol's folder; when it is not there but a file of the
        same name is beside the protocol, that one is checked: an archived version with its
        own amendment log, loaded from the archive folder, finds the older versions beside it.
        """
        if self.base_dir is None:
            raise self.fail(
                where,
                f"the archived file {file!r} of version {version!r} cannot be checked for a "
                "protocol given as text: load the protocol from its file (load_protocol) or "
                "pass base_dir, the folder the file is relative to.",
            )
        path = self.base_dir / file
        beside = self.base_dir / Path(file).name
        if not path.exists() and beside.is_file():
            path = beside  # an archived version read from the archive folder itself
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise self.fail(
                where,
                f"the archived file {file!r} of the replaced version {version!r} does not exist "
                f"(looked for {str(path)!r}; the path is relative to the protocol file). An "
                "amendment keeps the version it replaces: restore that file byte for byte.",
            ) from exc
        except OSError as exc:
            raise self.fail(
                where, f"cannot read the archived file {file!r} ({str(path)!r}): {exc}."
            ) from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            raise self.fail(
                where,
                f"the archived file {file!r} of version {version!r} has SHA-256 {actual}, but "
                f"the amendment states {sha}: the archive was changed after the amendment, or "
                "the stated hash is wrong. Restore the archived file byte for byte (or, if the "
                "hash is wrong, state the SHA-256 of the version that was replaced).",
            )
        try:
            archived = read_yaml(data.decode("utf-8"), file)
        except (UnicodeDecodeError, ProtocolError):
            archived = None  # not a readable protocol: the hash alone identifies it
        meta = archived.get("protocol") if isinstance(archived, Mapping) else None
        stated = meta.get("version") if isinstance(meta, Mapping) else None
        if stated is not None and str(stated) != version:
            raise self.fail(
                where,
                f"the archived file {file!r} is version {stated!r} of the protocol, not the "
                f"replaced version {version!r}.",
            )

    def analysis_sets(self, raw: Any) -> dict[str, AnalysisSet]:
        if not isinstance(raw, Mapping) or not raw:
            raise self.fail("analysis_sets", "expected a mapping name -> definition.")
        codes = self.dd.codes("roster", "status") if self.dd.has("roster", "status") else []
        out = {}
        for name, spec in raw.items():
            where = f"analysis_sets.{name}"
            n = self.name(name, where)
            s = self.mapping(spec, where, _SET_KEYS)
            excl = self.str_list(s.get("exclude_status"), f"{where}.exclude_status")
            bad = [x for x in excl if x not in codes]
            if bad:
                raise self.fail(
                    f"{where}.exclude_status",
                    f"{_cap(bad)} not among roster status codes ({_cap(codes)}).",
                )
            out[n] = AnalysisSet(
                name=n,
                description=self.text(s["description"], f"{where}.description"),
                exclude_status=tuple(excl),
                require_both_treatments=self.boolean(
                    s.get("require_both_treatments"), f"{where}.require_both_treatments", False
                ),
                require_reference_time=self.boolean(
                    s.get("require_reference_time"), f"{where}.require_reference_time", False
                ),
                exclude_flagged_nights=self.boolean(
                    s.get("exclude_flagged_nights"), f"{where}.exclude_flagged_nights", False
                ),
            )
        return out

    def families(self, raw: Any) -> dict[str, MultiplicityFamily]:
        if not isinstance(raw, Mapping) or not raw:
            raise self.fail("multiplicity", "expected a mapping family name -> method and alpha.")
        out = {}
        for name, spec in raw.items():
            where = f"multiplicity.{name}"
            n = self.name(name, where)
            s = self.mapping(spec, where, _FAMILY_KEYS)
            out[n] = MultiplicityFamily(
                name=n,
                method=self.choice(s["method"], f"{where}.method", METHODS),
                alpha=self.alpha(s["alpha"], f"{where}.alpha"),
                order=tuple(self.str_list(s.get("order"), f"{where}.order")),
                description=str(s.get("description") or "").strip(),
            )
        return out

    def check_families(
        self, families: dict[str, MultiplicityFamily], hyps: list[Hypothesis]
    ) -> None:
        for fam in families.values():
            members = [h.id for h in hyps if h.multiplicity_family == fam.name]
            where = f"multiplicity.{fam.name}"
            if fam.method == "fixed-sequence":
                if sorted(fam.order) != sorted(members) or len(set(fam.order)) != len(fam.order):
                    raise self.fail(
                        f"{where}.order",
                        f"a fixed-sequence family needs 'order' listing each of its hypotheses "
                        f"exactly once, in testing order; family members: {_cap(members)}, "
                        f"order given: {_cap(fam.order)}.",
                    )
            elif fam.order:
                raise self.fail(
                    f"{where}.order", "'order' is only used with method fixed-sequence."
                )
            confirm = [
                h for h in hyps if h.multiplicity_family == fam.name and h.role == "confirmatory"
            ]
            n_rows = sum(
                len(h.contrast.time_levels) for h in hyps if h.multiplicity_family == fam.name
            )
            if confirm and fam.method == "none" and n_rows > 1:
                raise self.fail(
                    f"{where}.method",
                    f"family {fam.name!r} holds confirmatory hypotheses "
                    f"({_cap([h.id for h in confirm])}) and more than one test, so it needs a "
                    "multiplicity method (holm, bonferroni, hochberg or fixed-sequence), not 'none'.",
                )

    def sensitivity(
        self,
        raw: Any,
        sets: dict[str, AnalysisSet],
        families: dict[str, MultiplicityFamily],
        articles: dict[str, str],
        hyps: list[Hypothesis],
    ) -> tuple[SensitivityAnalysis, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise self.fail("sensitivity", "expected a list of sensitivity analyses.")
        ids = [h.id for h in hyps]
        out: list[SensitivityAnalysis] = []
        for i, x in enumerate(raw):
            where = f"sensitivity[{i}]"
            s = self.mapping(x, where, _SENSITIVITY_KEYS)
            name = self.name(s["name"], f"{where}.name")
            if name == "primary" or name in {a.name for a in out}:
                raise self.fail(f"{where}.name", f"{name!r} is reserved or used twice.")
            description = self.text(s["description"], f"{where}.description")
            aset = None
            if s.get("analysis_set") is not None:
                aset = self.text(s["analysis_set"], f"{where}.analysis_set")
                if aset not in sets:
                    raise self.fail(
                        f"{where}.analysis_set",
                        f"{aset!r} is not defined in analysis_sets ({_cap(sets)}).",
                    )
            ice = None
            if s.get("intercurrent_events") is not None:
                ice = self.choice(
                    s["intercurrent_events"],
                    f"{where}.intercurrent_events",
                    SENSITIVITY_STRATEGIES,
                )
            restating = {k: s[k] for k in _RESTATING_KEYS if s.get(k) is not None}
            targets = self.str_list(s.get("hypotheses"), f"{where}.hypotheses")
            bad = [t for t in targets if t not in ids]
            if bad:
                raise self.fail(f"{where}.hypotheses", f"{_cap(bad)} are not hypotheses.")
            if len(set(targets)) != len(targets):
                raise self.fail(f"{where}.hypotheses", "a hypothesis is listed twice.")
            missing = None
            if s.get("missing_data") is not None:
                if aset is not None or ice is not None or restating:
                    raise self.fail(
                        where,
                        "a missing_data analysis keeps the primary analysis set and estimand "
                        "(and the primary analysis): give it without analysis_set, "
                        f"intercurrent_events and {', '.join(_RESTATING_KEYS)}.",
                    )
                missing = self.missing_data(s["missing_data"], f"{where}.missing_data")
                for h in hyps:
                    if h.id in targets and (
                        h.family != "gaussian" or h.contrast.type != "difference_in_differences"
                    ):
                        raise self.fail(
                            f"{where}.hypotheses",
                            f"{h.id} is a {h.family} {h.contrast.type.replace('_', ' ')}: the "
                            "delta-adjusted imputation is for Gaussian outcomes analysed by a "
                            "difference in differences (counts and ordinal ratings are not "
                            "imputed by a normal model); leave it out of this analysis.",
                        )
                    slopes = [r.label for r in h.random if tuple(r.terms) != ("1",)]
                    if h.id in targets and slopes:
                        raise self.fail(
                            f"{where}.hypotheses",
                            f"{h.id}'s model has random slopes ({', '.join(slopes)}): the "
                            "delta-adjusted imputation draws from random intercepts within "
                            "participant only; leave it out of this analysis.",
                        )
            elif aset is None and ice is None and not restating:
                raise self.fail(
                    where,
                    "a sensitivity analysis changes analysis_set or intercurrent_events, gives "
                    f"missing_data, or restates the listed hypotheses "
                    f"({', '.join(_RESTATING_KEYS)}).",
                )
            variants: list[Hypothesis] = []
            if restating:
                if not targets:
                    raise self.fail(
                        f"{where}.hypotheses",
                        f"{', '.join(restating)} restate(s) hypotheses: list the hypotheses it "
                        "applies to.",
                    )
                primary = {h.id: h for h in hyps}
                for t in targets:
                    variants.append(
                        self.restated(
                            t,
                            restating,
                            primary[t],
                            description,
                            f"{where} ({name!r})",
                            sets,
                            families,
                            articles,
                        )
                    )
            out.append(
                SensitivityAnalysis(
                    name=name,
                    description=description,
                    analysis_set=aset,
                    intercurrent_events=ice,
                    hypotheses=tuple(targets),
                    missing_data=missing,
                    estimator=variants[0].estimator if "estimator" in restating else None,
                    family=variants[0].family if "family" in restating else None,
                    variants=tuple(variants),
                )
            )
        return tuple(out)

    def restated(
        self,
        hid: str,
        restating: Mapping[str, Any],
        primary: Hypothesis,
        description: str,
        where: str,
        sets: dict[str, AnalysisSet],
        families: dict[str, MultiplicityFamily],
        articles: dict[str, str],
    ) -> Hypothesis:
        """Hypothesis ``hid`` with a sensitivity analysis' keys replacing its own, checked as
        a hypothesis is (the same schema, dictionary and model checks)."""
        i, raw = self.raw_hypotheses[hid]
        if "effect_of_interest" not in restating and "family" in restating:
            scale = dataclasses.replace(primary, family=str(restating["family"])).scale
            if scale != primary.scale:
                raise self.fail(
                    f"{where}.effect_of_interest",
                    f"family {restating['family']!r} reports {hid} on the {scale} scale, not "
                    f"the {primary.scale} scale of its primary analysis: state the smallest "
                    "effect of interest on that scale (effect_of_interest).",
                )
        try:
            h = self.hypothesis({**raw, **restating}, i, sets, families, articles)
        except ProtocolError as exc:
            raise self.fail(where, f"restating hypothesis {hid!r}: {exc}") from exc
        # the summary measure is the sensitivity analysis' (its description says which)
        return dataclasses.replace(
            h, estimand=dataclasses.replace(h.estimand, summary_measure=description)
        )

    def missing_data(self, raw: Any, where: str) -> MissingDataAnalysis:
        m = self.mapping(raw, where, _MISSING_DATA_KEYS)
        method = self.choice(m["method"], f"{where}.method", MISSING_DATA_METHODS)
        deltas = m["deltas"]
        if (
            not isinstance(deltas, list)
            or not deltas
            or any(isinstance(d, bool) or not isinstance(d, int | float) for d in deltas)
        ):
            raise self.fail(
                f"{where}.deltas", "expected a list of shift sizes (numbers), e.g. [0, 5, 10]."
            )
        values = [float(d) for d in deltas]
        if any(not math.isfinite(d) or d < 0 for d in values) or values != sorted(set(values)):
            raise self.fail(
                f"{where}.deltas",
                f"{deltas!r}: shift sizes must be finite, >= 0 and increasing (the shift is "
                "applied against the claim; its sign comes from the hypothesis' direction).",
            )
        reps = m.get("imputations", 20)
        if isinstance(reps, bool) or not isinstance(reps, int) or not 2 <= reps <= 1000:
            raise self.fail(f"{where}.imputations", f"{reps!r}: an integer from 2 to 1000.")
        seed = m["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise self.fail(f"{where}.seed", f"{seed!r}: a non-negative integer.")
        return MissingDataAnalysis(method=method, deltas=tuple(values), imputations=reps, seed=seed)

    def not_tested(self, raw: Any, i: int) -> NotTested:
        where = f"not_tested[{i}]"
        s = self.mapping(raw, where, _NOT_TESTED_KEYS)
        return NotTested(
            claim_id=self.text(s["claim_id"], f"{where}.claim_id"),
            claim=self.text(s["claim"], f"{where}.claim"),
            source=self.text(s["source"], f"{where}.source"),
            reason=self.text(s["reason"], f"{where}.reason"),
        )

    # -- hypothesis
    def hypothesis(
        self,
        raw: Any,
        i: int,
        sets: dict[str, AnalysisSet],
        families: dict[str, MultiplicityFamily],
        articles: dict[str, str],
    ) -> Hypothesis:
        where0 = f"hypotheses[{i}]"
        if isinstance(raw, Mapping) and "id" in raw:
            where0 = f"hypothesis {raw['id']!r}"
        h = self.mapping(raw, where0, _HYP_KEYS)
        hid = self.text(h["id"], f"{where0}.id")
        if not hid.replace("_", "").replace("-", "").isalnum():
            raise self.fail(f"{where0}.id", f"{hid!r}: use letters, digits, '-' and '_' only.")
        w = f"hypothesis {hid!r}"

        src = self.mapping(h["source"], f"{w}.source", _SOURCE_KEYS)
        arts = self.str_list(src["articles"], f"{w}.source.articles", allow_empty=False)
        if articles:
            bad = [a for a in arts if a not in articles]
            if bad:
                raise self.fail(
                    f"{w}.source.articles",
                    f"{_cap(bad)} not among the protocol's articles ({_cap(articles)}).",
                )
        source = Source(
            articles=tuple(arts),
            primary_research=self.text(src["primary_research"], f"{w}.source.primary_research"),
            evidence=self.choice(src["evidence"], f"{w}.source.evidence", tuple(EVIDENCE)),
        )
        role = self.choice(h["role"], f"{w}.role", ROLES)

        out = self.mapping(h["outcome"], f"{w}.outcome", _OUTCOME_KEYS)
        table = self.choice(out["table"], f"{w}.outcome.table", OUTCOME_TABLES)
        outcome = self.name(out["variable"], f"{w}.outcome.variable")
        if not self.dd.has(table, outcome):
            raise self.fail(
                f"{w}.outcome.variable",
                f"{outcome!r} is not a variable of table {table!r} in the data dictionary. "
                f"Variables of {table!r}: {_cap(self.dd.names(table), 40)}.",
            )
        family = self.choice(h["family"], f"{w}.family", FAMILIES)
        self.check_family(family, table, outcome, f"{w}.family")

        set_name = self.text(h["analysis_set"], f"{w}.analysis_set")
        if set_name not in sets:
            raise self.fail(
                f"{w}.analysis_set", f"{set_name!r} is not defined in analysis_sets ({_cap(sets)})."
            )
        fam_name = self.text(h["multiplicity_family"], f"{w}.multiplicity_family")
        if fam_name not in families:
            raise self.fail(
                f"{w}.multiplicity_family",
                f"{fam_name!r} is not defined in multiplicity ({_cap(families)}).",
            )
        fam = families[fam_name]
        alpha = fam.alpha
        if h.get("alpha") is not None:
            alpha = self.alpha(h["alpha"], f"{w}.alpha")
            if fam.method != "none" and alpha != fam.alpha:
                raise self.fail(
                    f"{w}.alpha",
                    f"{alpha:g} differs from the alpha {fam.alpha:g} of its multiplicity family "
                    f"{fam_name!r} ({fam.method}); within an adjusted family all tests share "
                    "the family's alpha. Remove the hypothesis' alpha or change the family's.",
                )
        direction = self.choice(h["direction"], f"{w}.direction", DIRECTIONS)
        df_method = self.choice(h.get("df_method", self.default_df), f"{w}.df_method", DF_METHODS)

        available = self.available_tables(table)
        contrast = self.contrast(h["contrast"], f"{w}.contrast", table, available)
        fixed, covariates, random, levels = self.model(
            h.get("model"), f"{w}.model", table, available, contrast, family, outcome
        )
        eoi = self.effect_of_interest(
            h["effect_of_interest"], f"{w}.effect_of_interest", family, direction, contrast
        )
        estimand = self.estimand(h["estimand"], f"{w}.estimand")
        estimator = self.choice(h.get("estimator", "did"), f"{w}.estimator", ESTIMATORS)
        if estimator != "did" and contrast.type != "difference_in_differences":
            raise self.fail(
                f"{w}.estimator", "an estimator is chosen for a difference_in_differences contrast."
            )
        return Hypothesis(
            id=hid,
            claim_id=self.text(h["claim_id"], f"{w}.claim_id"),
            claim=self.text(h["claim"], f"{w}.claim"),
            source=source,
            role=role,
            outcome_table=table,
            outcome=outcome,
            analysis_set=sets[set_name],
            family=family,
            fixed=tuple(fixed),
            covariates=tuple(covariates),
            random=tuple(random),
            levels=levels,
            contrast=contrast,
            direction=direction,
            multiplicity_family=fam_name,
            adjust_method=fam.method,
            alpha=alpha,
            effect_of_interest=eoi,
            estimand=estimand,
            df_method=df_method,
            estimator=estimator,
            outcome_missing_codes=tuple(self.dd.missing_codes(table, outcome)),
            outcome_range=self.dd.bounds(table, outcome),
        )

    def available_tables(self, table: str) -> list[str]:
        """Tables whose variables can enter a model of an outcome from ``table``."""
        return {
            "nights": ["nights", "periods", "roster"],
            "diary": ["diary", "periods", "roster"],
            "periods": ["periods", "roster"],
        }[table]

    def find(self, name: str, tables: Sequence[str], where: str) -> str:
        for t in tables:
            if self.dd.has(t, name):
                if self.dd.identifier(t, name):
                    raise self.fail(
                        where,
                        f"{name!r} is a direct identifier (PHI) in the dictionary and cannot be "
                        "used in a model.",
                    )
                return t
        raise self.fail(
            where,
            f"{name!r} is not a variable of the data dictionary's tables {', '.join(tables)} "
            "(the tables joined for this outcome). Use a dictionary variable name.",
        )

    def check_family(self, family: str, table: str, outcome: str, where: str) -> None:
        typ = self.dd.type(table, outcome)
        if typ not in ("integer", "number"):
            raise self.fail(
                where,
                f"outcome {outcome!r} has dictionary type {typ!r}; only numeric outcomes "
                "(integer, number) can be modelled.",
            )
        if family in ("poisson", "negbin"):
            unit = self.dd.unit(table, outcome)
            if typ != "integer" or unit != "count":
                raise self.fail(
                    where,
                    f"family {family!r} needs a count outcome (dictionary type integer, unit "
                    f"'count'); {outcome!r} is type {typ!r}, unit {unit!r}. Use 'gaussian'.",
                )
        lo, hi = self.dd.bounds(table, outcome)
        if family == "ordinal" and (typ != "integer" or lo is None or hi is None):
            raise self.fail(
                where,
                f"family 'ordinal' needs a rating with a bounded integer range (dictionary type "
                f"integer with minimum and maximum); {outcome!r} is type {typ!r}, range "
                f"{lo!r}..{hi!r}.",
            )
        if family in ("poisson", "negbin") and lo is not None and lo < 0:
            raise self.fail(
                where, f"count outcome {outcome!r} allows negative values (min {lo:g})."
            )

    def level_value(self, table: str, var: str, value: Any, where: str) -> str:
        """A level of ``var``, checked against the dictionary's codes or integer range."""
        s = self.text(value, where)
        typ = self.dd.type(table, var)
        if typ in ("categorical", "boolean"):
            codes = self.dd.codes(table, var)
            if s not in codes:
                raise self.fail(
                    where,
                    f"level {s!r} of {var!r} is not among its dictionary codes ({_cap(codes)}).",
                )
            return s
        if typ == "integer":
            try:
                iv = int(s)
            except ValueError as exc:
                raise self.fail(
                    where, f"level {s!r} of integer variable {var!r} is not an integer."
                ) from exc
            lo, hi = self.dd.bounds(table, var)
            if (lo is not None and iv < lo) or (hi is not None and iv > hi):
                raise self.fail(
                    where,
                    f"level {iv} of {var!r} is outside its dictionary range [{lo:g}, {hi:g}].",
                )
            return str(iv)
        raise self.fail(
            where,
            f"{var!r} has dictionary type {typ!r}; only categorical, boolean or integer "
            "variables can have levels.",
        )

    def contrast(self, raw: Any, where: str, table: str, available: list[str]) -> Contrast:
        c = self.mapping(raw, where, _CONTRAST_KEYS)
        ctype = self.choice(c["type"], f"{where}.type", CONTRAST_TYPES)
        tr = self.mapping(c["treatment"], f"{where}.treatment", _TREAT_KEYS)
        tvar = self.name(tr["variable"], f"{where}.treatment.variable")
        ttab = self.find(tvar, available, f"{where}.treatment.variable")
        tlev = self.level_value(ttab, tvar, tr["level"], f"{where}.treatment.level")
        tref_raw = tr.get("reference", self.default_refs.get(tvar))
        if tref_raw is None and ctype == "difference_in_differences":
            raise self.fail(
                f"{where}.treatment.reference",
                f"no reference level for {tvar!r}: give it here or in defaults.reference_levels.",
            )
        tref = (
            self.level_value(ttab, tvar, tref_raw, f"{where}.treatment.reference")
            if tref_raw is not None
            else ""
        )
        if tref == tlev:
            raise self.fail(f"{where}.treatment", f"level and reference are both {tlev!r}.")

        tm = self.mapping(c["time"], f"{where}.time", _TIME_KEYS)
        time_table = table if ctype == "difference_in_differences" else "nights"
        time_var = self.name(tm["variable"], f"{where}.time.variable")
        if not self.dd.has(time_table, time_var):
            raise self.fail(
                f"{where}.time.variable",
                f"{time_var!r} is not a variable of table {time_table!r} "
                f"({_cap(self.dd.names(time_table), 40)}).",
            )
        tref_time = self.level_value(
            time_table, time_var, tm["reference"], f"{where}.time.reference"
        )
        tlevels_raw = tm["levels"] if isinstance(tm["levels"], list) else [tm["levels"]]
        tlevels = [
            self.level_value(time_table, time_var, v, f"{where}.time.levels[{j}]")
            for j, v in enumerate(tlevels_raw)
        ]
        if not tlevels:
            raise self.fail(f"{where}.time.levels", "must list at least one time level.")
        if tref_time in tlevels or len(set(tlevels)) != len(tlevels):
            raise self.fail(
                f"{where}.time.levels",
                f"levels {tlevels} must be distinct and must not include the reference {tref_time!r}.",
            )
        if tm.get("window") is not None:
            window = [
                self.level_value(time_table, time_var, v, f"{where}.time.window[{j}]")
                for j, v in enumerate(self.str_list(tm["window"], f"{where}.time.window"))
            ]
        elif self.dd.type(time_table, time_var) in ("categorical", "boolean"):
            window = self.dd.codes(time_table, time_var)
        else:
            window = [tref_time, *tlevels]
        missing = [x for x in (tref_time, *tlevels) if x not in window]
        if missing or len(set(window)) != len(window):
            raise self.fail(
                f"{where}.time.window",
                f"the window {window} must be distinct levels including the reference and every "
                f"contrast level (missing: {missing}).",
            )
        window = [tref_time] + [x for x in window if x != tref_time]

        predictor_table = predictor = outcome_ref = None
        if ctype == "change_correlation":
            if len(tlevels) != 1:
                raise self.fail(
                    f"{where}.time.levels", "a change_correlation uses exactly one time level."
                )
            if table != "periods":
                raise self.fail(
                    f"{where}.type",
                    "change_correlation needs an outcome from the periods table (one value per "
                    "participant and period, e.g. madrs_day1).",
                )
            pr = self.mapping(c.get("predictor"), f"{where}.predictor", _PREDICTOR_KEYS)
            predictor_table = self.choice(pr["table"], f"{where}.predictor.table", ("nights",))
            predictor = self.name(pr["variable"], f"{where}.predictor.variable")
            if not self.dd.has(predictor_table, predictor):
                raise self.fail(
                    f"{where}.predictor.variable",
                    f"{predictor!r} is not a variable of table {predictor_table!r}.",
                )
            if self.dd.type(predictor_table, predictor) not in ("integer", "number"):
                raise self.fail(f"{where}.predictor.variable", f"{predictor!r} is not numeric.")
            if c.get("outcome_reference") is None:
                raise self.fail(
                    f"{where}.outcome_reference",
                    "change_correlation needs outcome_reference: the periods variable the "
                    "outcome's change is measured from (e.g. madrs_day0).",
                )
            outcome_ref = self.name(c["outcome_reference"], f"{where}.outcome_reference")
            if not self.dd.has("periods", outcome_ref):
                raise self.fail(
                    f"{where}.outcome_reference", f"{outcome_ref!r} is not a periods variable."
                )
        else:
            for k in ("predictor", "outcome_reference"):
                if c.get(k) is not None:
                    raise self.fail(f"{where}.{k}", "only used with type change_correlation.")
        return Contrast(
            type=ctype,
            description=self.text(c["description"], f"{where}.description"),
            treatment_variable=tvar,
            treatment_level=tlev,
            treatment_reference=tref,
            time_variable=time_var,
            time_levels=tuple(tlevels),
            time_reference=tref_time,
            window=tuple(window),
            predictor_table=predictor_table,
            predictor=predictor,
            outcome_reference_variable=outcome_ref,
        )

    def model(
        self,
        raw: Any,
        where: str,
        table: str,
        available: list[str],
        contrast: Contrast,
        family: str,
        outcome: str,
    ) -> tuple[list[str], list[str], list[RandomEffect], dict[str, tuple[str, ...]]]:
        if contrast.type == "change_correlation":
            if raw is not None:
                raise self.fail(
                    where, "a change_correlation has no model section (it is a correlation)."
                )
            return [], [], [], {}
        if raw is None:
            raise self.fail(where, "missing: a difference_in_differences needs a model section.")
        m = self.mapping(raw, where, _MODEL_KEYS)
        if m.get("formula") is not None:
            listed = [k for k in ("fixed", "covariates", "random") if m.get(k) is not None]
            if listed:
                raise self.fail(
                    where,
                    f"give the model either as a formula or as fixed/covariates/random lists, "
                    f"not both (found formula and {listed}).",
                )
            fixed_raw, random_raw = self.formula(m["formula"], f"{where}.formula", outcome)
            cov_raw: list[str] = []
        else:
            if m.get("fixed") is None:
                raise self.fail(
                    where,
                    "missing 'fixed' (the fixed-effect terms), or give the whole model as "
                    "'formula' (lme4 syntax, e.g. 'y ~ treatment * night + (1 | participant_id)').",
                )
            fixed_raw = self.str_list(m["fixed"], f"{where}.fixed", allow_empty=False)
            cov_raw = self.str_list(m.get("covariates"), f"{where}.covariates")
            random_raw = m.get("random") or []
        fixed: list[str] = []
        variables: dict[str, str] = {}  # variable -> its table
        for j, t in enumerate(fixed_raw):
            parts = self.term(t, f"{where}.fixed[{j}]")
            for p in parts:
                variables[p] = self.find(p, available, f"{where}.fixed[{j}]")
            fixed.append(":".join(parts))
        covariates: list[str] = []
        for j, t in enumerate(cov_raw):
            parts = self.term(t, f"{where}.covariates[{j}]")
            if len(parts) != 1:
                raise self.fail(
                    f"{where}.covariates[{j}]",
                    f"{t!r}: a covariate is one variable; put interactions in 'fixed'.",
                )
            variables[parts[0]] = self.find(parts[0], available, f"{where}.covariates[{j}]")
            covariates.append(parts[0])
        all_terms = fixed + covariates
        if len(set(all_terms)) != len(all_terms):
            raise self.fail(where, f"a term is listed twice in fixed/covariates: {all_terms}.")
        tv, time_var = contrast.treatment_variable, contrast.time_variable
        inter = {f"{tv}:{time_var}", f"{time_var}:{tv}"}
        if tv not in fixed or time_var not in fixed or not inter & set(fixed):
            raise self.fail(
                f"{where}.fixed",
                f"a difference_in_differences needs the terms {tv!r}, {time_var!r} and "
                f"'{tv}:{time_var}' in fixed; got {fixed}.",
            )
        for t in all_terms:
            pieces = t.split(":")
            if len(pieces) > 1:
                for p in pieces:
                    if p not in all_terms:
                        raise self.fail(
                            f"{where}.fixed", f"interaction {t!r} needs its main effect {p!r}."
                        )

        # random effects (the engine's one random-effects type, models.lmm.RandomEffect)
        random: list[RandomEffect] = []
        groups: list[tuple[str, ...]] = []
        for j, r in enumerate(random_raw):
            rw = f"{where}.random[{j}]"
            rs = self.mapping(r, rw, _RANDOM_KEYS)
            group = self.term(rs["group"], f"{rw}.group")
            if group[0] != PARTICIPANT or len(group) > 2:
                raise self.fail(
                    f"{rw}.group",
                    f"{':'.join(group)!r}: random effects group by {PARTICIPANT!r} or "
                    f"'{PARTICIPANT}:<variable>' (nested, e.g. participant_id:period).",
                )
            for g in group[1:]:
                self.find(g, available, f"{rw}.group")
            slopes = []
            for k, s in enumerate(self.str_list(rs.get("slopes"), f"{rw}.slopes")):
                sl = self.term(s, f"{rw}.slopes[{k}]")
                if len(sl) != 1:
                    raise self.fail(f"{rw}.slopes[{k}]", "a random slope is one variable.")
                st = self.find(sl[0], available, f"{rw}.slopes[{k}]")
                if self.dd.type(st, sl[0]) not in ("integer", "number"):
                    raise self.fail(f"{rw}.slopes[{k}]", f"random slope {sl[0]!r} must be numeric.")
                slopes.append(sl[0])
            correlated = self.boolean(rs.get("correlated"), f"{rw}.correlated", True)
            random.append(RandomEffect(":".join(group), ("1", *slopes), correlated=correlated))
            groups.append(group)
        if not random:
            raise self.fail(
                f"{where}.random",
                f"at least one random effect is needed (repeated measures): e.g. "
                f"- {{group: {PARTICIPANT}}}.",
            )
        if len(set(groups)) != len(groups):
            raise self.fail(f"{where}.random", "a grouping factor is listed twice.")
        if family != "gaussian":
            if len(random) != 1 or random[0].terms != ("1",) or random[0].group != PARTICIPANT:
                raise self.fail(
                    f"{where}.random",
                    f"the {family} mixed model supports one random intercept for "
                    f"{PARTICIPANT!r} only; use random: [{{group: {PARTICIPANT}}}].",
                )

        # levels of every factor in the model
        explicit = m.get("levels") or {}
        if not isinstance(explicit, Mapping):
            raise self.fail(f"{where}.levels", "expected a mapping variable -> list of levels.")
        levels: dict[str, tuple[str, ...]] = {}
        for var, vals in explicit.items():
            vw = f"{where}.levels.{var}"
            v = self.name(var, vw)
            if v not in variables:
                raise self.fail(
                    vw, f"{v!r} is not a variable of the model's terms ({_cap(variables)})."
                )
            if not isinstance(vals, list) or len(vals) < 2:
                raise self.fail(vw, "expected a list of at least two levels, reference first.")
            lv = [self.level_value(variables[v], v, x, f"{vw}[{k}]") for k, x in enumerate(vals)]
            if len(set(lv)) != len(lv):
                raise self.fail(vw, f"levels {lv} are not distinct.")
            levels[v] = tuple(lv)
        for v, t in variables.items():
            typ = self.dd.type(t, v)
            if v == tv:
                levels[v] = (contrast.treatment_reference, contrast.treatment_level)
                if v in explicit:
                    raise self.fail(
                        f"{where}.levels.{v}",
                        "the treatment levels come from the contrast; remove them here.",
                    )
                continue
            if v == time_var:
                if v in explicit:
                    raise self.fail(
                        f"{where}.levels.{v}",
                        "the time levels come from contrast.time.window; remove them here.",
                    )
                levels[v] = contrast.window
                continue
            if v in levels:
                continue
            if typ in ("categorical", "boolean"):
                codes = self.dd.codes(t, v)
                ref = self.default_refs.get(v)
                if ref is None:
                    raise self.fail(
                        f"{where}.levels",
                        f"factor {v!r} needs an explicit reference level: list its levels "
                        f"(reference first) in model.levels or give defaults.reference_levels."
                        f"{v}. Codes: {_cap(codes)}. studykit never picks a reference "
                        "alphabetically.",
                    )
                ref = self.level_value(t, v, ref, f"defaults.reference_levels.{v}")
                levels[v] = (ref, *[c for c in codes if c != ref])
            elif typ not in ("integer", "number"):
                raise self.fail(
                    where, f"{v!r} has dictionary type {typ!r} and cannot be a model term."
                )
        return fixed, covariates, random, levels

    def effect_of_interest(
        self, value: Any, where: str, family: str, direction: str, contrast: Contrast
    ) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or math.isnan(float(value))
        ):
            raise self.fail(where, f"expected a number, got {value!r}.")
        d = float(value)
        if contrast.type == "change_correlation":
            if not 0 < d < 1:
                raise self.fail(
                    where, f"{d:g}: a correlation of interest is a magnitude in (0, 1)."
                )
        elif family in ("poisson", "negbin", "ordinal"):
            ok = {"greater": d > 1, "less": 0 < d < 1, "two-sided": d > 0 and d != 1}[direction]
            if not ok:
                what = "an odds ratio" if family == "ordinal" else "a rate ratio"
                kind = "an ordinal" if family == "ordinal" else "a count"
                raise self.fail(
                    where,
                    f"{d:g}: for {kind} outcome the effect of interest is {what}: > 1 for "
                    "'greater', in (0, 1) for 'less', != 1 for 'two-sided'.",
                )
        elif d <= 0:
            raise self.fail(
                where,
                f"{d:g}: the smallest effect of interest is a positive magnitude in the outcome's "
                "units; its sign follows the direction.",
            )
        return d

    def formula(self, value: Any, where: str, outcome: str) -> tuple[list[str], list[Any]]:
        """An lme4 formula (read by models.formula, never evaluated) as fixed terms and random
        specifications; both are then checked as the list form is."""
        text = self.text(value, where)
        try:
            f = parse_formula(text)
        except FormulaError as exc:
            raise self.fail(where, str(exc)) from exc
        if f.response.failures is not None or f.response.value.function is not None:
            raise self.fail(where, f"the response must be the outcome {outcome!r} itself.")
        if f.response.value.column != outcome:
            raise self.fail(
                where,
                f"the formula's response {f.response.value.column!r} is not the hypothesis' "
                f"outcome {outcome!r}.",
            )
        if f.offsets or not f.intercept:
            raise self.fail(where, "protocol models have an intercept and no offset().")
        if not f.fixed:
            raise self.fail(where, "the formula has no fixed-effect terms.")
        random: list[Any] = []
        for bar in f.bars:
            if not bar.intercept:
                raise self.fail(
                    where, f"{bar.label}: protocol random effects have a random intercept."
                )
            parts = bar.group.split(":")
            if PARTICIPANT in parts:  # (1 | participant_id/period) gives period:participant_id
                parts = [PARTICIPANT] + [p for p in parts if p != PARTICIPANT]
            random.append(
                {"group": ":".join(parts), "slopes": list(bar.terms), "correlated": bar.correlated}
            )
        return list(f.fixed), random

    def estimand(self, raw: Any, where: str) -> Estimand:
        e = self.mapping(raw, where, _ESTIMAND_KEYS)
        ices_raw = e["intercurrent_events"]
        if not isinstance(ices_raw, list):
            raise self.fail(f"{where}.intercurrent_events", "expected a list (may be empty: []).")
        ices = []
        for j, x in enumerate(ices_raw):
            iw = f"{where}.intercurrent_events[{j}]"
            s = self.mapping(x, iw, _ICE_KEYS)
            strategy = self.choice(s["strategy"], f"{iw}.strategy", tuple(STRATEGIES))
            handling = self.choice(
                s["handling"],
                f"{iw}.handling",
                ("exclude_after_event", "exclude_period", "exclude_participant", "include"),
            )
            if handling not in STRATEGIES[strategy]:
                raise self.fail(
                    f"{iw}.handling",
                    f"handling {handling!r} does not implement the {strategy!r} strategy; "
                    f"allowed: {', '.join(STRATEGIES[strategy])}.",
                )
            var = table = level = None
            if s.get("variable") is not None:
                var = self.name(s["variable"], f"{iw}.variable")
                table = self.text(s.get("table") or "periods", f"{iw}.table")
                if table not in ("periods", "roster"):
                    raise self.fail(
                        f"{iw}.table",
                        f"{table!r}: intercurrent events are flagged in periods or roster.",
                    )
                if not self.dd.has(table, var):
                    raise self.fail(
                        f"{iw}.variable", f"{var!r} is not a variable of table {table!r}."
                    )
                typ = self.dd.type(table, var)
                if s.get("level") is not None:
                    level = self.level_value(table, var, s["level"], f"{iw}.level")
                elif typ != "boolean":
                    raise self.fail(
                        f"{iw}.level",
                        f"{var!r} is {typ!r}, not boolean: give the level that flags the event.",
                    )
            elif handling != "include":
                raise self.fail(
                    f"{iw}.variable",
                    f"handling {handling!r} needs the variable that flags the event.",
                )
            elif s.get("table") is not None or s.get("level") is not None:
                raise self.fail(iw, "'table' and 'level' need 'variable'.")
            timing = None
            if s.get("timing") is not None:
                timing = self.name(s["timing"], f"{iw}.timing")
                if var is None or table is None or not self.dd.has(table, timing):
                    raise self.fail(
                        f"{iw}.timing",
                        f"{timing!r} is not a variable of the event's table "
                        f"({table or 'none: give variable and table'}).",
                    )
                if self.dd.type(table, timing) not in ("integer", "number"):
                    raise self.fail(
                        f"{iw}.timing",
                        f"{timing!r} is {self.dd.type(table, timing)!r}: the timing is a "
                        "number on the night_index scale (the first night after the event).",
                    )
                if self.dd.unit(table, timing) not in EVENT_TIME_UNITS:
                    raise self.fail(
                        f"{iw}.timing",
                        f"{timing!r} has unit {self.dd.unit(table, timing)!r} in the data "
                        "dictionary: the timing is compared with a night's night_index and a "
                        "diary day, so its unit must be one of "
                        f"{', '.join(EVENT_TIME_UNITS)} (e.g. hours after the infusion would be "
                        "misread: record the first night after the event).",
                    )
            elif handling == "exclude_after_event":
                raise self.fail(
                    f"{iw}.timing",
                    "handling 'exclude_after_event' needs 'timing': the variable saying when "
                    "the event happened (e.g. sedative_first_night).",
                )
            ices.append(
                IntercurrentEvent(
                    event=self.text(s["event"], f"{iw}.event"),
                    variable=var,
                    table=table,
                    level=level,
                    strategy=strategy,
                    handling=handling,
                    rationale=str(s.get("rationale") or "").strip(),
                    timing=timing,
                )
            )
        return Estimand(
            population=self.text(e["population"], f"{where}.population"),
            treatment=self.text(e["treatment"], f"{where}.treatment"),
            variable=self.text(e["variable"], f"{where}.variable"),
            intercurrent_events=tuple(ices),
            summary_measure=self.text(e["summary_measure"], f"{where}.summary_measure"),
        )
