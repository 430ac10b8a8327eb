"""Holm or fixed sequence for the confirmatory family? Power of each verdict under both.

One power simulation of the protocol's confirmatory hypotheses (SIMULATED data, assumed
effects from protocols/ketamine_effects.yaml) analysed with the chosen primary estimator
(constrained baseline for the Gaussian outcomes H1 and H3; H2 as in the protocol), then both
multiplicity procedures applied to the SAME replicates' p-values
(studykit.models.multiplicity.adjust_pvalues): Holm over {H1, H2, H3} and the fixed sequence
H1 -> H2 -> H3 (ordered by the strength of the primary research). Prints the probability that
each hypothesis is supported and the family's joint outcomes.

    python benchmarks/confirmatory_family.py [--n 36] [--reps 500] [--seed 20261125] [--jobs 1]
        [--gaussian-estimator clda]   # did: protocol 1.0's analysis
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studykit.models.multiplicity import adjust_pvalues
from studykit.power import power_analysis
from studykit.power.spec import design_from_protocol
from studykit.protocol import load_protocol


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=36)
    ap.add_argument("--reps", type=int, default=500)
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--protocol", default="protocols/ketamine_sleep.yaml")
    ap.add_argument("--effects", default="protocols/ketamine_effects.yaml")
    ap.add_argument("--gaussian-estimator", default="clda", help="estimator of H1 and H3")
    a = ap.parse_args()
    proto = load_protocol(a.protocol)
    design = design_from_protocol(proto, a.effects, hypotheses=["H1", "H2", "H3"])
    est = {"H1": a.gaussian_estimator, "H2": "did", "H3": a.gaussian_estimator}
    design = replace(
        design, hypotheses=tuple(replace(h, estimator=est[h.id]) for h in design.hypotheses)
    )
    res = power_analysis(design, n=[a.n], reps=a.reps, seed=a.seed, n_jobs=a.jobs, progress=False)
    p = res.replicates.pivot(index="rep", columns="hypothesis_id", values="p_value")[
        ["H1", "H2", "H3"]
    ]
    raw = p.fillna(1.0).to_numpy()
    alpha = 0.025
    rows = []
    for method in ("holm", "fixed-sequence"):
        adj = np.vstack([adjust_pvalues(r, method) for r in raw])
        sup = adj < alpha
        rows.append(
            {
                "procedure": method if method == "holm" else "fixed sequence H1 -> H2 -> H3",
                **{f"P({h} supported)": float(sup[:, j].mean()) for j, h in enumerate(p.columns)},
                "P(all supported)": float(sup.all(axis=1).mean()),
                "P(any supported)": float(sup.any(axis=1).mean()),
            }
        )
    load = os.getloadavg()[0]
    print(
        f"SIMULATED: n = {a.n}, {a.reps} replicates, seed {a.seed}, one-sided alpha {alpha}; "
        f"estimators {est}; effects {a.effects}; load average {load:.1f}\n"
    )
    print(pd.DataFrame(rows).round(3).to_markdown(index=False))


if __name__ == "__main__":
    main()
