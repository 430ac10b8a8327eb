"""Small stand-ins for the upstream modules, used ONLY to test the orchestration of
``studykit.pipeline`` / ``studykit.manifest.verify`` independently of them.

They follow the contracts of docs/ARCHITECTURE.md (function names, table and column names)
with deliberately simple arithmetic: they are not the statistics of studykit and their
numbers mean nothing. The real end-to-end run is tested in tests/test_pipeline.py with the
real modules (``test_real_demo_run_end_to_end``).
"""

from __future__ import annotations

import hashlib
import math
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from studykit.errors import ProtocolError, ValidationError
from studykit.tables import HYPOTHESIS_COLUMNS

NIGHTS = ("baseline", "post1")
STAGES = np.array(["W", "N1", "N2", "N3", "R"])


@dataclass
class Study:
    roster: pd.DataFrame
    periods: pd.DataFrame
    nights: pd.DataFrame
    diary: pd.DataFrame
    epochs: pd.DataFrame
    issues: pd.DataFrame = field(default_factory=pd.DataFrame)


# ------------------------------------------------------------------ simulate


def simulate_study(*, seed: int = 20261125, n_participants: int = 6) -> Study:
    rng = np.random.default_rng(seed)
    ids = [f"P{i + 1:02d}" for i in range(n_participants)]
    seq = ["KP" if i % 2 == 0 else "PK" for i in range(n_participants)]
    roster = pd.DataFrame(
        {
            "participant_id": ids,
            "initials": [f"Q.{chr(65 + i)}." for i in range(n_participants)],
            "screening_date": ["1999-12-3" + str(i % 2) for i in range(n_participants)],
            "sequence": seq,
            "age": rng.integers(20, 60, n_participants),
            "sex": rng.choice(["F", "M"], n_participants),
            "bmi": np.round(rng.normal(25, 3, n_participants), 1),
            "madrs_baseline": rng.integers(20, 40, n_participants),
            "status": ["completed"] * (n_participants - 1) + ["withdrawn"],
            "withdrawal_reason": [""] * (n_participants - 1) + ["moved away"],
        }
    )
    periods, nights, epochs, diary = [], [], [], []
    for pid, s in zip(ids, seq, strict=True):
        for period in (1, 2):
            trt = "ketamine" if (s == "KP") == (period == 1) else "placebo"
            periods.append({"participant_id": pid, "period": period, "treatment": trt})
            for k, night in enumerate(NIGHTS):
                nights.append(
                    {
                        "participant_id": pid,
                        "period": period,
                        "night": night,
                        "night_index": k,
                        "treatment": trt,
                    }
                )
                p = np.array([0.2, 0.1, 0.4, 0.15, 0.15])
                if trt == "ketamine" and night == "post1":
                    p = np.array([0.15, 0.1, 0.35, 0.25, 0.15])
                st = rng.choice(STAGES, 60, p=p)
                for e, stage in enumerate(st):
                    epochs.append(
                        {
                            "participant_id": pid,
                            "period": period,
                            "night": night,
                            "epoch": e,
                            "onset_s": 30.0 * e,
                            "stage": str(stage),
                        }
                    )
            for day in range(5):
                kss = int(rng.integers(2, 6)) + (2 if trt == "ketamine" and day == 1 else 0)
                diary.append({"participant_id": pid, "period": period, "day": day, "kss": kss})
    return Study(
        roster,
        pd.DataFrame(periods),
        pd.DataFrame(nights),
        pd.DataFrame(diary),
        pd.DataFrame(epochs),
    )


def write_study(study: Study, directory) -> None:
    d = Path(directory)
    (d / "hypnograms").mkdir(parents=True, exist_ok=True)
    (d / "README.md").write_text("SIMULATED data (test stand-in)\n")
    for name in ("roster", "periods", "nights", "diary"):
        getattr(study, name).to_csv(d / f"{name}.csv", index=False, lineterminator="\n")
    for (pid, period, night), g in study.epochs.groupby(["participant_id", "period", "night"]):
        g[["epoch", "onset_s", "stage"]].to_csv(
            d / "hypnograms" / f"{pid}_p{period}_{night}.csv", index=False, lineterminator="\n"
        )


# ------------------------------------------------------------------ validate


def load_study(directory, *, dictionary=None) -> Study:
    d = Path(directory)
    if (d / "FAIL_VALIDATION").exists():
        issues = pd.DataFrame(
            {
                "file": ["roster.csv"],
                "row": [2],
                "participant_id": ["P01"],
                "night": [None],
                "column": ["initials"],
                "value": ["Q.A."],
                "rule": ["pattern"],
                "severity": ["error"],
                "message": ["bad initials 'Q.A.'"],
            }
        )
        raise ValidationError("roster.csv: 1 error (row 2, column initials).", issues)
    roster = pd.read_csv(d / "roster.csv", keep_default_na=False, na_values=[""])
    parts = []
    for f in sorted((d / "hypnograms").glob("*.csv")):
        pid, p, night = f.stem.split("_")
        e = pd.read_csv(f)
        e.insert(0, "night", night)
        e.insert(0, "period", int(p[1:]))
        e.insert(0, "participant_id", pid)
        parts.append(e)
    issues = pd.DataFrame(
        {
            "file": ["roster.csv"],
            "row": [3],
            "participant_id": ["P02"],
            "night": [None],
            "column": ["bmi"],
            "value": [""],
            "rule": ["missing"],
            "severity": ["warning"],
            "message": ["bmi missing"],
        }
    )
    return Study(
        roster,
        pd.read_csv(d / "periods.csv"),
        pd.read_csv(d / "nights.csv"),
        pd.read_csv(d / "diary.csv"),
        pd.concat(parts, ignore_index=True),
        issues,
    )


# ------------------------------------------------------------------ hypnogram


def sleep_statistics(epochs, *, nights=None, epoch_length=30.0, **_):
    rows = []
    for (pid, period, night), g in epochs.groupby(["participant_id", "period", "night"]):
        s = g.sort_values("epoch")["stage"].to_numpy()
        sleep = s != "W"
        rows.append(
            {
                "participant_id": pid,
                "period": period,
                "night": night,
                "tst_min": sleep.sum() * epoch_length / 60,
                "n3_min": (s == "N3").sum() * 0.5,
                "n_awakenings": int(((~sleep[1:]) & sleep[:-1]).sum()),
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ protocol / analysis


def load_protocol(path, *, dictionary=None):
    text = Path(path).read_text()
    if "INVALID" in text:
        raise ProtocolError(f"{path}: hypothesis H1 names unknown outcome 'foo_min'.")
    return types.SimpleNamespace(
        id=Path(path).stem,
        sha256=hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        hypotheses=["H1", "H2"],
        title="Stand-in protocol",
    )


def run_analysis(protocol, study):
    n = study.nights
    post = n[n["night"] == "post1"]
    rows, emm = [], {}
    for hid, outcome, ratio in (("H1", "n3_min", False), ("H2", "n_awakenings", True)):
        k = post.loc[post["treatment"] == "ketamine", outcome].astype(float)
        p = post.loc[post["treatment"] == "placebo", outcome].astype(float)
        if ratio:
            est_log = math.log(k.mean() / p.mean())
            se = math.sqrt(1 / k.sum() + 1 / p.sum())
            est, lo, hi = (math.exp(est_log + z * se) for z in (0, -1.96, 1.96))
        else:
            est = k.mean() - p.mean()
            se = math.sqrt(k.var() / len(k) + p.var() / len(p))
            lo, hi = est - 1.96 * se, est + 1.96 * se
        row = {c: None for c in HYPOTHESIS_COLUMNS}
        row.update(
            protocol_id=protocol.id,
            protocol_sha256=protocol.sha256,
            hypothesis_id=hid,
            claim="C2" if hid == "H1" else "C4",
            source="stand-in",
            evidence="A",
            outcome=outcome,
            contrast="ketamine vs placebo, post1",
            estimand="difference",
            role="confirmatory",
            multiplicity_family="primary",
            family="poisson" if ratio else "gaussian",
            scale="rate ratio" if ratio else "difference",
            n_ketamine=len(k),
            n_placebo=len(p),
            n_participants=len(post["participant_id"].unique()),
            n_observations=len(n),
            n_excluded=0,
            excluded_reasons="",
            estimate=est,
            std_error=se,
            df=math.inf if ratio else 10.0,
            df_method="z" if ratio else "satterthwaite",
            statistic=0.5,
            alternative="two-sided",
            conf_level=0.95,
            conf_low=lo,
            conf_high=hi,
            p_value=0.2,
            p_adjusted=0.4,
            adjust_method="holm",
            effect_size=0.1,
            effect_size_definition="stand-in",
            verdict="not supported",
            verdict_rule="p_adjusted < 0.05",
            model="stand-in",
            converged=True,
            singular=False,
            warnings="",
            simulated=False,
        )
        rows.append(row)
        g = n.groupby(["treatment", "night"], sort=True)[outcome].agg(["mean", "sem"])
        g = g.reset_index().rename(columns={"mean": "estimate", "sem": "std_error"})
        g["conf_low"] = g["estimate"] - 1.96 * g["std_error"]
        g["conf_high"] = g["estimate"] + 1.96 * g["std_error"]
        emm[hid] = g
    return types.SimpleNamespace(hypotheses=pd.DataFrame(rows), emmeans=emm)


MODULES = {
    "studykit.simulate": ("simulate_study", "write_study"),
    "studykit.validate": ("load_study",),
    "studykit.hypnogram": ("sleep_statistics",),
    "studykit.protocol": ("load_protocol",),
    "studykit.analysis": ("run_analysis",),
}


def install(monkeypatch) -> None:
    """Put the stand-ins in ``sys.modules`` for one test (pytest's ``monkeypatch``)."""
    import sys

    this = sys.modules[__name__]
    for name, funcs in MODULES.items():
        mod = types.ModuleType(name)
        mod.__doc__ = "test stand-in (tests/data/outputs/fake_upstream.py)"
        for f in funcs:
            setattr(mod, f, getattr(this, f))
        monkeypatch.setitem(sys.modules, name, mod)
