"""Test helpers for the protocol and analysis tests (not a test module).

``CsvDictionary`` reads the repo-root ``data_dictionary.csv`` and offers the part of the
``DataDictionary`` contract (docs/ARCHITECTURE.md) that ``load_protocol`` uses: ``tables``,
``variables(table)``, ``get(table, name)`` and ``levels(table, name)``. It stands in until
``studykit.dictionary`` is merged.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Var:
    name: str
    table: str
    role: str
    type: str
    unit: str
    minimum: str
    maximum: str
    codes: str
    identifier: bool
    missing_codes: tuple[str, ...] = ()


class CsvDictionary:
    def __init__(self, path: Path = ROOT / "data_dictionary.csv") -> None:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        self._vars: dict[str, dict[str, Var]] = {}
        for r in rows:
            v = Var(
                name=r["name"],
                table=r["table"],
                role=r["role"],
                type=r["type"],
                unit=r["unit"],
                minimum=r["minimum"],
                maximum=r["maximum"],
                codes=r["codes"],
                identifier=r["identifier"] == "yes",
                missing_codes=tuple(c for c in r["missing_codes"].split("|") if c),
            )
            self._vars.setdefault(v.table, {})[v.name] = v

    @property
    def tables(self) -> list[str]:
        return list(self._vars)

    def variables(self, table: str) -> list[Var]:
        return list(self._vars[table].values())

    def get(self, table: str, name: str) -> Var:
        return self._vars[table][name]

    def levels(self, table: str, name: str) -> list[str]:
        codes = self._vars[table][name].codes
        return [c.split(",")[0].strip() for c in codes.split("|")] if codes else []


# ---------------------------------------------------------------------------------------------
# Thin model adapters over statsmodels, standing in for studykit.models.lmm / glmm until they
# are merged. They only exercise the analysis plumbing: z tests (contrast_df = inf), and the
# count adapter ignores the random intercept (a plain GLM). Warnings statsmodels emits while
# fitting are recorded in `.warnings`, not silenced.
import warnings as _warnings  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from studykit.models.design import build_design  # noqa: E402


class _AdapterResult:
    def __init__(self, design, beta, vcov, fit_warnings, converged, singular, family, nobs):
        self.design = design
        self.columns = design.columns
        self.beta = np.asarray(beta, dtype=float)
        self.vcov = np.asarray(vcov, dtype=float)
        self.warnings = fit_warnings
        self.converged = converged
        self.singular = singular
        self.family = family
        self.link = "identity" if family == "gaussian" else "log"
        self.nobs = nobs

    def contrast_df(self, L):
        return float("inf")

    def coef_table(self):
        se = np.sqrt(np.diag(self.vcov))
        return pd.DataFrame(
            {"term": self.columns, "estimate": self.beta, "std_error": se, "df": np.inf}
        )


def statsmodels_lmm(data, outcome, fixed, *, random, levels, reml=True):
    """MixedLM with a participant intercept and (optionally) participant:period components."""
    import statsmodels.api as sm

    design = build_design(data, fixed, levels=levels)
    groups = data["participant_id"].astype(str).to_numpy()
    y = pd.to_numeric(data[outcome]).to_numpy(dtype=float)
    exog_vc = None
    nested = [g for g, _ in random if g != "participant_id"]
    if nested:
        exog_vc = {}
        for g in nested:
            inner = g.split(":")[1]
            comp = {}
            for pid in pd.unique(groups):
                sub = data.loc[groups == pid, inner].astype(str)
                comp[pid] = pd.get_dummies(sub).to_numpy(dtype=float)
            exog_vc[g] = comp
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        model = sm.MixedLM(y, design.X, groups, exog_re=np.ones((len(y), 1)), exog_vc=exog_vc)
        fit = model.fit(reml=reml)
    p = design.X.shape[1]
    vcov = np.asarray(fit.cov_params())[:p, :p]
    singular = bool(np.asarray(fit.cov_re).min() < 1e-8)
    return _AdapterResult(
        design, fit.fe_params, vcov, [str(w.message) for w in caught], bool(fit.converged),
        singular, "gaussian", len(y),
    )  # fmt: skip


def statsmodels_glm(data, outcome, fixed, *, group, family, levels, nagq=1):
    """Poisson / NB GLM WITHOUT the random intercept: plumbing only, not the GLMM."""
    import statsmodels.api as sm

    design = build_design(data, fixed, levels=levels)
    y = pd.to_numeric(data[outcome]).to_numpy(dtype=float)
    fam = sm.families.Poisson() if family == "poisson" else sm.families.NegativeBinomial(alpha=0.1)
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        fit = sm.GLM(y, design.X, family=fam).fit()
    return _AdapterResult(
        design, fit.params, fit.cov_params(), [str(w.message) for w in caught], True, False,
        family, len(y),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Small Study-like inputs
from dataclasses import dataclass as _dataclass  # noqa: E402


@_dataclass
class FakeStudy:
    roster: pd.DataFrame
    periods: pd.DataFrame
    nights: pd.DataFrame
    diary: pd.DataFrame
    epochs: pd.DataFrame | None = None
    simulated: bool = True


NIGHTS = ["baseline", "post1", "post2", "day7"]


def make_crossover(n=16, seed=7):
    """A complete, balanced crossover (SIMULATED here, for plumbing tests).

    Half the participants get ketamine in period 1 (sequence KP), half in period 2 (PK). Effects
    are loosely the LITERATURE assumptions (N3 +8 on post1 under ketamine ...).
    """
    rng = np.random.default_rng(seed)
    pids = [f"P{i + 1:02d}" for i in range(n)]
    seq = ["KP" if i % 2 == 0 else "PK" for i in range(n)]
    roster = pd.DataFrame(
        {
            "participant_id": pids,
            "sequence": seq,
            "age": rng.integers(20, 65, n),
            "sex": np.where(rng.random(n) < 0.5, "F", "M"),
            "madrs_baseline": rng.integers(20, 40, n),
            "status": "completed",
        }
    )
    prow, nrow, drow = [], [], []
    for pid, s in zip(pids, seq, strict=True):
        u = rng.normal(0, 20)
        for period in (1, 2):
            trt = "ketamine" if (s == "KP") == (period == 1) else "placebo"
            k = trt == "ketamine"
            v = rng.normal(0, 8)
            m0 = int(rng.integers(20, 40))
            dn3 = 0.0
            for night, idx in zip(NIGHTS, [0, 1, 2, 7], strict=True):
                eff = 8.0 if (k and night == "post1") else 0.0
                n3 = max(0.0, 60 + u + v + eff + rng.normal(0, 10))
                if night == "baseline":
                    n3_base = n3
                if night == "post1":
                    dn3 = n3 - n3_base
                nrow.append(
                    {
                        "participant_id": pid,
                        "period": period,
                        "night": night,
                        "night_index": idx,
                        "treatment": trt,
                        "n3_min": n3,
                        "tst_min": 360 + u + v + (10.0 if k and night == "post1" else 0) + rng.normal(0, 40),
                        "rem_min": 70 + rng.normal(0, 15),
                        "sol_min": max(0.0, 18 + (5.0 if k and night == "post1" else 0) + rng.normal(0, 6)),
                        "waso_min": max(0.0, 70 + rng.normal(0, 20)),
                        "n_awakenings": int(rng.poisson(20 * (0.85 if k and night == "post1" else 1))),
                    }
                )  # fmt: skip
            prow.append(
                {
                    "participant_id": pid,
                    "period": period,
                    "treatment": trt,
                    "sedative_use": False,
                    "alcohol_use": False,
                    "madrs_day0": m0,
                    "madrs_day1": m0 - (6 if k else 1) - 0.2 * dn3 + rng.normal(0, 3),
                }
            )
            for day in range(5):
                bump = {1: 1.5, 2: 0.7, 3: 0.2}.get(day, 0.0) if k else 0.0
                drow.append(
                    {
                        "participant_id": pid,
                        "period": period,
                        "day": day,
                        "kss": float(np.clip(np.round(4 + bump + rng.normal(0, 1)), 1, 9)),
                        "dream_vividness": float(np.clip(np.round(1.5 + (0.8 if k and day == 1 else 0) + rng.normal(0, 1)), 0, 4)),
                        "nightmares": int(rng.poisson(0.5 * (1.8 if k and day == 1 else 1))),
                    }
                )  # fmt: skip
    return FakeStudy(roster, pd.DataFrame(prow), pd.DataFrame(nrow), pd.DataFrame(drow))


def trial_sim_study(path):
    """The R reference trial as a Study (one period, parallel arms)."""
    df = pd.read_csv(path)
    nights = pd.DataFrame(
        {
            "participant_id": df["id"],
            "period": 1,
            "night": df["night"],
            "night_index": df["night_index"],
            "treatment": df["arm"],
            "n3_min": df["sws_min"],
            "rem_min": df["rem_min"],
            "n_awakenings": df["awakenings"],
        }
    )
    arms = df.drop_duplicates("id")
    periods = pd.DataFrame(
        {"participant_id": arms["id"], "period": 1, "treatment": arms["arm"], "sedative_use": False}
    )
    roster = pd.DataFrame(
        {
            "participant_id": arms["id"],
            "sequence": np.where(arms["arm"] == "ketamine", "K", "P"),
            "status": "completed",
        }
    )
    return FakeStudy(roster, periods, nights, pd.DataFrame(), simulated=True)
