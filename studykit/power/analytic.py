"""Exact power of the difference-in-differences test in a balanced random-intercept design.

For ``y ~ treatment * night + (1 | participant_id)`` with complete data, ``n1`` participants on
the active treatment and ``n0`` on the reference, ``T`` nights and residual SD ``sigma``:

- the DiD estimate of night ``k`` versus baseline is the difference between arms of the mean
  within-participant change ``y_k - y_baseline``; each change has variance ``2 sigma^2`` (the
  random intercept cancels), so ``Var(DiD) = 2 sigma^2 (1/n1 + 1/n0)`` (``8 sigma^2 / n`` for
  equal arms), whatever the participant SD;
- REML equals the ANOVA estimator when the between-participant variance estimate is positive,
  ``sigma^2`` is then estimated by the within-participant residual mean square on
  ``(n - a)(T - 1)`` degrees of freedom (``a`` arms), and Satterthwaite's df for a
  within-participant contrast equal those exactly (lmerTest gives 76 for n = 40, T = 3);
- the t statistic then has a noncentral t distribution with that df and noncentrality
  ``delta / sqrt(Var(DiD))``.
"""

from __future__ import annotations

import math

__all__ = ["did_power_balanced"]


def did_power_balanced(
    n: int,
    *,
    effect: float,
    sd_residual: float,
    n_times: int = 3,
    alpha: float = 0.025,
    alternative: str = "greater",
    allocation: tuple[float, float] = (1.0, 1.0),
) -> dict[str, float]:
    """Power of the one- or two-sided DiD t test (balanced, complete, random intercept).

    Parameters
    ----------
    n : int
        Total participants (parallel groups, two arms).
    effect : float
        True difference in differences (active minus reference, change from baseline).
    sd_residual : float
        Within-participant (residual) SD.
    n_times : int, default 3
        Nights in the model (baseline included).
    alpha : float, default 0.025
        Level of the test (one-sided level for ``"greater"``/``"less"``).
    alternative : {"greater", "less", "two-sided"}
    allocation : (float, float)
        Relative sizes of the reference and active arms.

    Returns
    -------
    dict
        ``power``, ``std_error`` (true SE of the estimate), ``df``, ``ncp``, ``critical_t``,
        ``n_reference``, ``n_active``.

    Examples
    --------
    The design of the R reference ``trial_sim`` (n = 40, effect 10, residual SD 12):

    >>> r = did_power_balanced(40, effect=10, sd_residual=12, alpha=0.025)
    >>> round(r["power"], 4), r["df"], round(r["std_error"], 4)
    (0.4522, 76.0, 5.3666)
    >>> round(did_power_balanced(40, effect=10, sd_residual=12, alpha=0.05)["power"], 4)
    0.58
    """
    from scipy import stats

    w0, w1 = allocation
    n0 = round(n * w0 / (w0 + w1))
    n1 = n - n0
    se = math.sqrt(2.0 * sd_residual**2 * (1.0 / n1 + 1.0 / n0))
    df = float((n - 2) * (n_times - 1))
    ncp = effect / se
    if alternative == "two-sided":
        c = stats.t.ppf(1 - alpha / 2, df)
        power = stats.nct.sf(c, df, ncp) + stats.nct.cdf(-c, df, ncp)
    elif alternative == "greater":
        c = stats.t.ppf(1 - alpha, df)
        power = stats.nct.sf(c, df, ncp)
    else:
        c = stats.t.ppf(alpha, df)
        power = stats.nct.cdf(c, df, ncp)
    return {
        "power": float(power),
        "std_error": se,
        "df": df,
        "ncp": ncp,
        "critical_t": float(c),
        "n_reference": float(n0),
        "n_active": float(n1),
    }
