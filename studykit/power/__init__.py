"""Power and sample size by simulation, with the analysis' own inference.

Simulate the study many times from assumed effects (or a model fitted to pilot data, as
simr's ``extend``), refit each pre-specified model, test its contrasts (Satterthwaite t for
linear mixed models, z for count models), adjust within each multiplicity family, and report
power with its Monte Carlo SE and exact CI, per hypothesis and sample size. Replicates run on
local cores (joblib) or a Dask cluster; each has its own random stream, so results do not
depend on the number of workers.

>>> from studykit.power import power_analysis, TRIAL_SIM_EXAMPLE
>>> power_analysis(TRIAL_SIM_EXAMPLE, n=[40], reps=20, seed=3, progress=False).table.power.tolist()
[0.5]
"""

from __future__ import annotations

from studykit.power.analytic import did_power_balanced
from studykit.power.core import PowerResult, binomial_ci, power_analysis
from studykit.power.plot import plot_power_curve
from studykit.power.simulate import simulate_replicate
from studykit.power.spec import (
    TRIAL_SIM_EXAMPLE,
    Layout,
    OutcomeTruth,
    PowerDesign,
    PowerHypothesis,
    design_from_dict,
    design_from_protocol,
    load_design,
)

__all__ = [
    "power_analysis",
    "PowerResult",
    "PowerDesign",
    "PowerHypothesis",
    "OutcomeTruth",
    "Layout",
    "design_from_dict",
    "design_from_protocol",
    "load_design",
    "simulate_replicate",
    "did_power_balanced",
    "binomial_ci",
    "plot_power_curve",
    "TRIAL_SIM_EXAMPLE",
]
