"""Write the SIMULATED data sets the estimator R references are computed on.

Run from the repository root: ``PYTHONPATH=. python tests/data/estimators/make_data.py``; then
``Rscript tests/data/estimators/reference.R`` (see PROVENANCE.md). Every value is simulated.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from studykit.estimators import example_data
from studykit.simulate import simulate_study, write_study
from studykit.validate import load_study

HERE = Path(__file__).parent


def main() -> None:
    # 1. the demo study (seed 20261125), periods with sedative/alcohol use left out as the
    #    protocol's hypothetical strategy does; outcomes derived from the hypnograms
    with tempfile.TemporaryDirectory() as tmp:
        write_study(simulate_study(), tmp)
        study = load_study(tmp)
    per = study.periods
    ice = per.loc[
        (per["sedative_use"] == 1) | (per["alcohol_use"] == 1), ["participant_id", "period"]
    ]
    nights = study.nights.merge(ice.assign(_ice=1), how="left", on=["participant_id", "period"])
    nights = nights.loc[nights["_ice"].isna()]
    cols = ["participant_id", "period", "treatment", "night", "n3_min", "tst_min", "n_awakenings"]
    nights[cols].to_csv(HERE / "demo_nights.csv", index=False)

    # 2. a smaller generic crossover with missing rows, participant x period variance
    df = example_data(seed=11, n=20, sd_period=10.0, nights=("baseline", "post1", "post2"))
    rng = np.random.default_rng(11)
    drop = rng.choice(len(df), size=8, replace=False)
    df.loc[drop, "n3_min"] = np.nan
    df.to_csv(HERE / "generic_crossover.csv", index=False)


if __name__ == "__main__":
    main()
