"""Assumed truth from pilot data, as simr's ``extend``: fit, then simulate more participants.

Each outcome's pre-specified model is fitted to the pilot data; its fixed-effect estimates
and variance components become the truth that new participants are simulated from (the
pilot's participants are not reused: every replicate simulates all ``n`` participants from
the fitted model). Coefficients given in ``effects`` then replace fitted ones, typically the
smallest effect of interest in place of the pilot's noisy estimate.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pandas as pd
import yaml

from studykit.errors import InputError, ModelError
from studykit.power.engine import _engine_fit
from studykit.power.spec import OutcomeTruth, PowerDesign, PowerHypothesis, as_design
from studykit.protocol import load_protocol
from studykit.validate import validate_table

__all__ = ["read_pilot", "design_from_pilot", "truth_from_fit"]

logger = logging.getLogger(__name__)


def read_pilot(pilot: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
    """Pilot data: a DataFrame (used as given), or a ``nights`` table file / study directory.

    Files are read and validated as the data dictionary's ``nights`` table
    (:func:`studykit.validate.validate_table`); validation issues and rejected rows are logged.
    """
    if isinstance(pilot, pd.DataFrame):
        return pilot.copy()
    path = os.fspath(pilot)
    if os.path.isdir(path):
        path = os.path.join(path, "nights.csv")
    if not os.path.isfile(path):
        raise InputError(
            f"Pilot data {os.fspath(pilot)!r} not found: give a CSV file or a study directory "
            "containing nights.csv."
        )
    res = validate_table(path, "nights")  # typed against the data dictionary
    if len(res.issues):
        logger.warning(
            "power: pilot %s: %d validation issue(s), %d row(s) rejected and not used: %s",
            path,
            len(res.issues),
            len(res.rejected),
            "; ".join(res.issues["message"].astype(str).head(5)),
        )
    return res.data


def truth_from_fit(hyp: PowerHypothesis, data: pd.DataFrame) -> OutcomeTruth:
    """Fit ``hyp``'s model to ``data`` and return it as an :class:`OutcomeTruth`."""
    cols = [
        hyp.outcome,
        *{v for t in hyp.fixed for v in t.split(":")},
        *{g for r in hyp.random for g in r.group.split(":")},
    ]
    missing = [c for c in dict.fromkeys(cols) if c not in data.columns]
    if missing:
        raise InputError(
            f"Pilot data lack column(s) {missing} needed by hypothesis {hyp.id} "
            f"(columns: {', '.join(map(str, data.columns[:20]))})."
        )
    data = data.dropna(subset=list(dict.fromkeys(cols)))
    hyp = _observed_levels(hyp, data)
    res: Any = _engine_fit(hyp)(data)
    coefs = dict(zip(res.columns, map(float, res.beta), strict=True))
    ct = res.coef_table()
    ci = {
        str(t): (float(a), float(b))
        for t, a, b in zip(ct["term"], ct["conf_low"], ct["conf_high"], strict=True)
    }
    n_part = int(data[hyp.random[0].group.split(":")[0]].nunique())
    origin = f"estimated from pilot data ({n_part} participants, {len(data)} observations)"
    sd: dict[str, float] = {}
    slopes: dict[str, dict[str, float]] = {}
    for row in res.varcorr().itertuples(index=False):
        if row.group == "Residual" or row.var2 is not None and not pd.isna(row.var2):
            continue
        if row.var1 == "(Intercept)":
            sd[row.group] = float(row.sdcor)
        else:
            slopes.setdefault(row.group, {})[str(row.var1)] = float(row.sdcor)
    return OutcomeTruth(
        name=hyp.outcome,
        family=hyp.family,
        fixed=hyp.fixed,
        coefficients=coefs,
        sd=sd,
        slopes=slopes,
        sd_residual=float(res.sigma) if hyp.family == "gaussian" else None,
        dispersion=float(res.theta) if hyp.family == "negbin" else None,
        origin=origin,
        pilot_ci=ci,
    )


def _observed_levels(hyp: PowerHypothesis, data: pd.DataFrame) -> PowerHypothesis:
    """Drop factor levels the pilot never observed (their columns would be all zero).

    Their effects cannot be estimated from the pilot: the simulation then gives them the
    reference level's mean (coefficient 0), and a warning says so. The reference level itself
    must be observed.
    """
    levels = {}
    for var, lv in hyp.levels.items():
        if var not in data.columns:
            levels[var] = lv
            continue
        seen = set(data[var].astype(str))
        if lv[0] not in seen:
            raise ModelError(
                f"Pilot data have no rows at the reference level {var}={lv[0]!r} of "
                f"hypothesis {hyp.id}; the model cannot be fitted to them."
            )
        kept = tuple(x for x in lv if x in seen)
        if len(kept) < len(lv):
            logger.warning(
                "power: pilot data have no %s level(s) %s (hypothesis %s): their effects are "
                "not estimable from the pilot and are simulated as 0 (the reference's mean) "
                "unless the effects file sets them",
                var,
                [x for x in lv if x not in seen],
                hyp.id,
            )
        levels[var] = kept
    return replace(hyp, levels=levels)


def design_from_pilot(
    pilot: Any,
    design_like: Any,
    *,
    effects: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    hypotheses: Any = None,
) -> PowerDesign:
    """A :class:`PowerDesign` whose truth is fitted to pilot data (simr's ``extend``).

    Parameters
    ----------
    pilot : DataFrame or path
        Pilot data with the layout's columns (``participant_id``, ``treatment``, ``night`` ...)
        and the outcomes.
    design_like : PowerDesign, protocol, or path
        Supplies the layout and hypotheses; its assumed outcomes (if any) are replaced.
    effects : mapping or path, optional
        ``outcomes.<name>.coefficients`` override fitted coefficients; ``layout`` (for a
        protocol) as in :func:`~studykit.power.spec.design_from_protocol`.

    Returns
    -------
    PowerDesign
    """
    data = read_pilot(pilot)
    if effects is not None and not isinstance(effects, Mapping):
        with open(os.fspath(effects), encoding="utf-8") as fh:
            effects = yaml.safe_load(fh) or {}
    effects = dict(effects or {})
    if isinstance(design_like, PowerDesign):
        design = design_like
    else:
        # placeholders for outcomes the pilot will supply
        placeholder = {"sd_residual": 1.0, "dispersion": 1.0}
        eff = dict(effects)
        raw_outs = {k: dict(v) for k, v in dict(eff.get("outcomes", {})).items()}
        protocol_like = hasattr(design_like, "hypotheses") and hasattr(design_like, "sha256")
        if isinstance(design_like, (str, os.PathLike)):
            with open(os.fspath(design_like), encoding="utf-8") as fh:
                doc = yaml.safe_load(fh)
            if isinstance(doc, Mapping) and "outcomes" in doc and "hypotheses" in doc:
                design_like = dict(doc)
            else:
                design_like = load_protocol(design_like)
                protocol_like = True
        if protocol_like:
            names = {h.outcome for h in design_like.hypotheses}
            eff["outcomes"] = {
                n: {
                    **placeholder,
                    **{k: v for k, v in raw_outs.get(n, {}).items() if k != "coefficients"},
                }
                for n in names
            }
            design = as_design(design_like, eff, hypotheses)
        else:
            doc = dict(design_like)
            names = {str(h.get("outcome")) for h in doc.get("hypotheses", [])}
            doc["outcomes"] = {
                n: {**placeholder, **dict(doc.get("outcomes", {}).get(n, {}))} for n in names
            }
            design = as_design(doc, None, hypotheses)
    outs: dict[str, OutcomeTruth] = {}
    for name in design.outcomes:
        hyp = next(h for h in design.hypotheses if h.outcome == name)
        try:
            truth = truth_from_fit(hyp, data)
        except ModelError as exc:
            raise ModelError(
                f"Pilot data: the model of {hyp.id} ({name}) cannot be fitted: {exc}"
            ) from exc
        over = dict(dict(effects.get("outcomes", {})).get(name, {}).get("coefficients", {}))
        if over:
            truth = replace(
                truth,
                coefficients={**truth.coefficients, **{k: float(v) for k, v in over.items()}},
                origin=f"{truth.origin}; {', '.join(map(str, over))} set by the effects file",
            )
        logger.info(
            "power: pilot truth for %s: %s; SDs %s, residual %s",
            name,
            {k: round(v, 3) for k, v in truth.coefficients.items()},
            {k: round(v, 3) for k, v in truth.sd.items()},
            None if truth.sd_residual is None else round(truth.sd_residual, 3),
        )
        outs[name] = truth
    return replace(design, outcomes=outs, source=f"{design.source} + pilot")
