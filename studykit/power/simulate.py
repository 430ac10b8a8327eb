"""Simulate one replicate data set of a :class:`~studykit.power.spec.PowerDesign` (SIMULATED data).

Common random numbers. Every random component of replicate ``rep`` (each outcome's random
effects per grouping factor, its residuals or counts, its missingness) has its own stream,
``numpy.random.SeedSequence(seed, spawn_key=(rep, outcome, component))``, and draws one value
per participant (or row) in participant order. Participants are allocated in an interleaved
order that does not depend on ``n`` (:meth:`~studykit.power.spec.Layout.group_of`), so the
first ``n`` participants of a study of ``n + k`` are *the same* simulated people: power at
different sample sizes is compared on nested data (curves monotone in ``n`` up to the
analysis' own discreteness), and at one ``n`` every analysis and scenario sees the same
data. A replicate's data depend only on ``(seed, rep, n)``: never on the number of workers,
the chunking, or which other sample sizes are in the grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from studykit.errors import ProtocolError
from studykit.models.design import Design, build_design
from studykit.power.spec import Layout, OutcomeTruth, PowerDesign

__all__ = ["replicate_rng", "resolve_coefficients", "OutcomePlan", "simulate_replicate"]


def replicate_rng(seed: int, rep: int, *key: int) -> np.random.Generator:
    """The random generator of one component ``key`` of replicate ``rep``.

    Examples
    --------
    >>> a = replicate_rng(1, 7, 0).normal(size=2)
    >>> b = replicate_rng(1, 7, 0).normal(size=2)
    >>> bool((a == b).all()), bool((a != replicate_rng(1, 8, 0).normal(size=2)).all())
    (True, True)
    """
    keys = (int(rep), *(int(k) for k in key))
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=keys))


def resolve_coefficients(
    design: Design, coefficients: Mapping[str, float], where: str
) -> np.ndarray:
    """Map ``{lme4 column or short alias: value}`` onto the design's columns (others 0).

    A short alias drops the variable names: ``"ketamine:post1"`` for
    ``"treatmentketamine:nightpost1"``.
    """
    alias: dict[str, str] = {}
    for col in design.columns:
        parts = []
        for piece in col.split(":"):
            short = piece
            for var in sorted(design.levels, key=len, reverse=True):
                if piece.startswith(var) and piece[len(var) :] in design.levels[var]:
                    short = piece[len(var) :]
                    break
            parts.append(short)
        alias[":".join(parts)] = col
    beta = np.zeros(len(design.columns))
    for key, value in coefficients.items():
        found: str | None = key if key in design.columns else alias.get(key)
        if found is None:
            raise ProtocolError(
                f"Power design, {where}: coefficient {key!r} is not a column of the true model. "
                f"Columns: {', '.join(design.columns)}."
            )
        beta[design.columns.index(found)] = float(value)
    return beta


def _group_codes(frame: pd.DataFrame, group: str) -> tuple[np.ndarray, int]:
    cols = group.split(":")
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ProtocolError(
            f"Power design: random-effect group {group!r} uses {missing}, which the simulated "
            f"layout does not have (columns: {', '.join(frame.columns)})."
        )
    key = frame[cols].astype(str).agg("\x1f".join, axis=1) if len(cols) > 1 else frame[cols[0]]
    codes, uniques = pd.factorize(key)
    return codes.astype(np.intp), len(uniques)


@dataclass
class OutcomePlan:
    """Everything needed to draw one outcome for ``n`` participants, fixed across replicates."""

    truth: OutcomeTruth
    template: pd.DataFrame
    mean: np.ndarray  # X beta
    groups: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]]  # codes, m, chol, slope matrix
    p_missing: np.ndarray | None

    @classmethod
    def build(cls, truth: OutcomeTruth, layout: Layout, n: int, levels: Mapping) -> OutcomePlan:
        """Prepare the schedule, ``X beta`` and random-effect structure."""
        template = layout.template(n)
        design = build_design(template, list(truth.fixed), levels=dict(levels))
        beta = resolve_coefficients(design, truth.coefficients, f"outcomes.{truth.name}")
        groups = []
        for g in dict.fromkeys([*truth.sd, *truth.slopes]):
            codes, m = _group_codes(template, g)
            slopes = truth.slopes.get(g, {})
            sds = np.array([truth.sd.get(g, 0.0), *slopes.values()], float)
            rho = truth.corr.get(g, 0.0)
            R = np.full((len(sds), len(sds)), rho)
            np.fill_diagonal(R, 1.0)
            cov = R * np.outer(sds, sds)
            chol = np.linalg.cholesky(cov + 1e-300 * np.eye(len(sds))) if sds.any() else cov
            zmat = np.column_stack(
                [np.ones(len(template))] + [template[c].to_numpy(float) for c in slopes]
            )
            groups.append((codes, m, chol, zmat))
        p_missing = None
        if any(v > 0 for v in layout.missing.values()):
            p_missing = template[layout.time].map(layout.missing).fillna(0.0).to_numpy(float)
        return cls(truth, template, design.X @ beta, groups, p_missing)

    def draw(self, seed: int, rep: int, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """One simulated outcome vector and the mask of observed rows.

        ``index`` is the outcome's position in the design (its own streams). Random effects
        of grouping factor ``g`` come from stream ``(rep, index, g)`` one row per level in
        order of appearance (participant order); row-level noise from ``(rep, index, 100)``
        and missingness from ``(rep, index, 101)``, one value per row in template order.
        """
        eta = self.mean.copy()
        for g, (codes, m, chol, zmat) in enumerate(self.groups):
            rng = replicate_rng(seed, rep, index, g)
            b = rng.standard_normal((m, chol.shape[0])) @ chol.T
            eta += np.einsum("ij,ij->i", b[codes], zmat)
        t = self.truth
        N = eta.shape[0]
        rng = replicate_rng(seed, rep, index, 100)
        if t.family == "gaussian":
            y = eta + float(t.sd_residual or 0.0) * rng.standard_normal(N)
            if t.round_to:
                y = np.round(y / t.round_to) * t.round_to
        elif t.family == "poisson":
            y = _poisson_by_row(rng, np.exp(eta)).astype(float)
        else:
            mu = np.exp(eta)
            theta = float(t.dispersion or 1.0)
            lam = np.asarray(rng.gamma(theta, mu / theta), float)
            y = _poisson_by_row(replicate_rng(seed, rep, index, 102), lam).astype(float)
        if self.p_missing is None:
            keep = np.ones(N, bool)
        else:
            keep = replicate_rng(seed, rep, index, 101).random(N) >= self.p_missing
        return y, keep


def _poisson_by_row(rng: np.random.Generator, lam: np.ndarray) -> np.ndarray:
    """Poisson draws by inversion of one uniform per row (so row ``i`` does not depend on
    how many rows follow: common random numbers across sample sizes)."""
    from scipy import stats

    u = rng.random(lam.shape[0])
    return stats.poisson.ppf(u, lam).astype(np.int64)


def simulate_replicate(design: PowerDesign, n: int, *, seed: int, rep: int = 0) -> pd.DataFrame:
    """One SIMULATED data set: the layout's schedule with every outcome, missing rows dropped.

    Parameters
    ----------
    design : PowerDesign
    n : int
        Number of participants.
    seed, rep : int
        The replicate's random streams are ``SeedSequence(seed, spawn_key=(rep, ...))``
        (module docstring); the power simulation analyses exactly this data set as its
        replicate ``rep``.

    Returns
    -------
    pandas.DataFrame
        Columns of the layout (``participant_id``, ``treatment``, ``night``, ...) and one
        column per outcome (NaN where missing). Outcomes are simulated independently.

    Examples
    --------
    >>> from studykit.power.spec import TRIAL_SIM_EXAMPLE, design_from_dict
    >>> df = simulate_replicate(design_from_dict(TRIAL_SIM_EXAMPLE), 40, seed=1)
    >>> df.shape, list(df.columns)
    ((120, 5), ['participant_id', 'treatment', 'night', 'night_index', 'sws_min'])
    """
    out = design.layout.template(n)
    for index, (name, truth) in enumerate(design.outcomes.items()):
        hyp = next(h for h in design.hypotheses if h.outcome == name)
        plan = OutcomePlan.build(truth, design.layout, n, hyp.levels)
        y, keep = plan.draw(seed, rep, index)
        out[name] = np.where(keep, y, np.nan)
    return out
