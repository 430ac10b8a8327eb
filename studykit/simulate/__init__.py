"""The simulated demo study: a placebo-controlled ketamine sleep trial (SIMULATED data).

:func:`simulate_study` generates a complete study in memory - roster, periods, nights,
epoch-by-epoch hypnograms and a daily diary - and :func:`write_study` writes it as a study
directory in every format studykit reads (CSV hypnograms, Sleep-EDF style EDF+ and NSRR XML
for a few nights). The design follows the NIMH randomized, double-blind, saline-controlled
crossover (Transl Psychiatry 2024;14:238): two periods, sequences ketamine -> placebo (KP)
and placebo -> ketamine (PK), a baseline night before each infusion and nights 1 and 2
after it. A parallel-group variant (arms K / P, one period) comes from the same generator.

Every number that shapes the data is an *assumption*, stated in :data:`DEFAULT_EFFECTS`
(treatment effects) and :data:`BASELINE` (drug-free depression baselines), copied into the
study's ``assumptions`` and into the README written next to the data. The data are
simulated; nothing here describes real participants.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from studykit.errors import InputError
from studykit.simulate._night import ART, STAGE_LABELS, UNS, NightParameters, simulate_night
from studykit.simulate._write import write_study

__all__ = [
    "BASELINE",
    "DEFAULT_EFFECTS",
    "DEMO_V2_NUISANCE",
    "NUISANCE_DEFAULTS",
    "NIGHT_INDEX",
    "SimulatedStudy",
    "simulate_study",
    "write_study",
]

logger = logging.getLogger(__name__)

#: Nights a study can record, with their night index (nights after the infusion).
NIGHT_INDEX: dict[str, int] = {"baseline": 0, "post1": 1, "post2": 2, "day7": 7}

#: Diary days of each period (0 = day before the infusion).
DIARY_DAYS: tuple[int, ...] = (0, 1, 2, 3, 4, 7)

#: Treatment effects simulated by default: ASSUMPTIONS (LITERATURE.md "effect sizes to
#: simulate"), ketamine relative to placebo on the same night of the same participant.
DEFAULT_EFFECTS: dict[str, Any] = {
    # N3 (slow-wave sleep) budget increment on the first night after ketamine, minutes,
    # placed early in the night; between-participant SD of that increment
    "n3_min_post1": 8.0,
    "n3_min_post2": 0.0,
    "n3_response_sd": 6.0,
    # awakenings per hour of sleep x rate ratio on ketamine nights post1 and post2 (on
    # post1 the count falls a little more, to about 0.83, and WASO by about 3 min, because
    # the extra N3 carries a lower awakening hazard: benchmarks/validate_simulator.py)
    "awakenings_rate_ratio": 0.85,
    # total wake inside the sleep period x ratio on those nights: 1.0 = WASO unchanged
    # (fewer but longer awakenings), so TST is essentially unchanged (NIMH 2024)
    "waso_ratio": 1.0,
    # REM minutes on ketamine nights post1/post2: mean change and between-participant SD
    # (some people more REM, some less)
    "rem_min_mean": 0.0,
    "rem_min_sd": 10.0,
    # sleep onset latency on the infusion night (post1), minutes added
    "sol_min_post1": 5.0,
    # Karolinska Sleepiness Scale points added by diary day after ketamine
    "kss_by_day": {1: 1.5, 2: 0.7, 3: 0.2, 4: 0.0, 7: 0.0},
    # dream vividness (0-4) points added by diary day (the morning after night k)
    "dream_vividness_by_day": {1: 1.0, 2: 0.4},
    # nightmare count rate ratio by diary day
    "nightmares_rate_ratio_by_day": {1: 1.8, 2: 1.3},
    # MADRS change ketamine minus placebo on days 1 and 7; between-participant SD of the
    # day-1 response and its correlation with the N3 increment (more N3, larger drop)
    "madrs_day1": -8.0,
    "madrs_day7": -3.0,
    "madrs_response_sd": 4.0,
    "n3_madrs_correlation": 0.4,
}

#: Baseline (placebo / drug-free depression) distributions the generator is tuned to:
#: ASSUMPTIONS after J Clin Sleep Med 2021 (n=117) and BMC Psychiatry 2019 (n=87) via
#: LITERATURE.md. WASO 73 +/- 62 and SE 84 +/- 12 cannot both hold with TST 358 and
#: SOL 18 (TIB would be ~450 min and SE ~80 %): the generator aims between the two.
BASELINE: dict[str, str] = {
    "tst_min": "358 +/- 75",
    "se_pct": "84 +/- 12 (simulated lower, ~80, see WASO)",
    "sol_min": "18 +/- 19",
    "lat_rem_min": "130 +/- 75 (from sleep onset)",
    "rem_pct": "16.8 +/- 5.8",
    "waso_min": "73 +/- 62 (simulated ~60)",
    "n3_min": "35 +/- 34",
    "night_to_night_r": "about 0.5 for TST and WASO, 0.7 for N3",
}

#: Design nuisances, all OFF by default (the demo study, "v1", has none of them; its files
#: are byte-identical to earlier releases). See docs/simulate.md for the values and sources.
NUISANCE_DEFAULTS: dict[str, float] = {
    # share of each participant-level (log-scale) night-parameter variance that is specific
    # to the participant x period (0 = a participant sleeps alike in both periods)
    "period_share": 0.0,
    # N3 minutes added to every night of period 2 after ketamine in period 1 (carryover)
    "carryover_n3_min": 0.0,
    # first-night effect on the first night in the sleep laboratory (the baseline night of
    # period 1): minutes of sleep onset latency added, awakening-rate multiplier, N3 minutes
    # added (negative = fewer), REM latency added
    "first_night_sol_min": 0.0,
    "first_night_wake_ratio": 1.0,
    "first_night_n3_min": 0.0,
    "first_night_rem_latency_min": 0.0,
}

#: Demo v2: the nuisances switched on at calibrated values (ASSUMPTIONS, docs/simulate.md):
#: ``simulate_study(nuisance="v2")`` / ``studykit simulate --nuisance v2``. No carryover
#: (a single infusion, >= 2-week washout); carryover is a sensitivity scenario.
DEMO_V2_NUISANCE: dict[str, float] = {
    "period_share": 0.3,
    "carryover_n3_min": 0.0,
    "first_night_sol_min": 8.0,
    "first_night_wake_ratio": 1.3,
    "first_night_n3_min": -4.0,
    "first_night_rem_latency_min": 20.0,
}

_DESIGNS = ("crossover", "parallel")
_STUDY_START = datetime(2025, 1, 6)  # a fixed Monday: no clock time of "now" anywhere


@dataclass(frozen=True)
class SimulatedStudy:
    """A simulated study: the tables of a study directory, in memory. SIMULATED data.

    Attributes
    ----------
    roster, periods, nights, diary : pandas.DataFrame
        The dictionary's tables (``nights`` with the design columns only; per-night
        outcomes are derived from ``epochs`` by :func:`studykit.hypnogram.sleep_statistics`).
    epochs : pandas.DataFrame
        Long hypnogram table: ``participant_id, period, night, epoch, onset_s, stage``.
    assumptions : dict
        The effects simulated (``DEFAULT_EFFECTS`` updated with the caller's) and the
        baseline targets.
    mess : dict
        What was made messy on purpose (missing nights, withdrawal, artefacts ...).
    night_parameters : pandas.DataFrame
        The generating parameters of each night (for validation, not a study table).
    seed, design : int, str
        How the study was generated.
    hypnogram_formats : dict
        ``(participant_id, period, night) -> "edf" | "xml"`` for nights written in those
        formats by :func:`write_study`; every other night is written as CSV.
    """

    roster: pd.DataFrame
    periods: pd.DataFrame
    nights: pd.DataFrame
    epochs: pd.DataFrame
    diary: pd.DataFrame
    assumptions: dict[str, Any]
    mess: dict[str, Any]
    night_parameters: pd.DataFrame
    seed: int
    design: str
    hypnogram_formats: dict[tuple[str, int, str], str] = field(default_factory=dict)


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent stream for one part of the study, stable whatever else is drawn."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))


def _merge_effects(effects: Mapping[str, Any] | None) -> dict[str, Any]:
    merged: dict[str, Any] = {
        k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT_EFFECTS.items()
    }
    if effects is None:
        return merged
    unknown = sorted(set(effects) - set(DEFAULT_EFFECTS))
    if unknown:
        raise InputError(
            f"Unknown effect name(s) {unknown[:5]}. Allowed: {sorted(DEFAULT_EFFECTS)}. "
            "Pass only the effects you want to change; the others keep their defaults."
        )
    for key, value in effects.items():
        if isinstance(DEFAULT_EFFECTS[key], dict):
            if not isinstance(value, Mapping):
                raise InputError(
                    f"Effect {key!r} must be a mapping of day -> value, got {value!r}."
                )
            merged[key] = {int(d): float(v) for d, v in value.items()}
        else:
            try:
                merged[key] = float(value)
            except (TypeError, ValueError) as exc:
                raise InputError(f"Effect {key!r} must be a number, got {value!r}.") from exc
    if float(merged["awakenings_rate_ratio"]) <= 0 or float(merged["waso_ratio"]) <= 0:
        raise InputError("Effects 'awakenings_rate_ratio' and 'waso_ratio' must be > 0.")
    if not -1.0 <= float(merged["n3_madrs_correlation"]) <= 1.0:
        raise InputError("Effect 'n3_madrs_correlation' must lie in [-1, 1].")
    return merged


def _merge_nuisance(nuisance: Mapping[str, Any] | str | None) -> dict[str, float]:
    """:data:`NUISANCE_DEFAULTS` updated with the caller's values (``"v2"``: the demo v2 set)."""
    merged = dict(NUISANCE_DEFAULTS)
    if nuisance is None:
        return merged
    if isinstance(nuisance, str):
        if nuisance not in ("v1", "v2"):
            raise InputError(f"Unknown nuisance preset {nuisance!r}; expected 'v1' (none) or 'v2'.")
        return merged if nuisance == "v1" else {**merged, **DEMO_V2_NUISANCE}
    unknown = sorted(set(nuisance) - set(NUISANCE_DEFAULTS))
    if unknown:
        raise InputError(
            f"Unknown nuisance name(s) {unknown}. Allowed: {sorted(NUISANCE_DEFAULTS)}."
        )
    for key, value in nuisance.items():
        try:
            merged[key] = float(value)
        except (TypeError, ValueError) as exc:
            raise InputError(f"Nuisance {key!r} must be a number, got {value!r}.") from exc
        if not math.isfinite(merged[key]):
            raise InputError(f"Nuisance {key!r} must be finite, got {value!r}.")
    if not 0.0 <= merged["period_share"] < 1.0:
        raise InputError("Nuisance 'period_share' must lie in [0, 1).")
    if merged["first_night_wake_ratio"] <= 0:
        raise InputError("Nuisance 'first_night_wake_ratio' must be > 0.")
    return merged


def _check_arguments(n_participants: int, design: str, nights: Sequence[str]) -> tuple[str, ...]:
    if design not in _DESIGNS:
        raise InputError(f"Unknown design {design!r}. Allowed: {list(_DESIGNS)}.")
    if isinstance(n_participants, bool) or not isinstance(n_participants, int | np.integer):
        raise InputError(f"n_participants must be an integer, got {n_participants!r}.")
    if not 4 <= n_participants <= 100_000:
        raise InputError(
            f"n_participants must be between 4 and 100000, got {n_participants}: the demo "
            "needs at least two participants per sequence (and its messy cases)."
        )
    nights = tuple(nights)
    bad = [n for n in nights if n not in NIGHT_INDEX]
    if bad or not nights or len(set(nights)) != len(nights):
        raise InputError(
            f"Invalid nights {list(nights)}: give distinct labels from {list(NIGHT_INDEX)}."
        )
    if "baseline" not in nights or "post1" not in nights:
        raise InputError(f"nights must include 'baseline' and 'post1', got {list(nights)}.")
    return tuple(sorted(nights, key=NIGHT_INDEX.__getitem__))


def _lognormal(rng: np.random.Generator, mean: float, sd: float, size: int | None = None):
    """Log-normal draws with the given mean and SD (of the variable itself)."""
    sigma2 = math.log1p((sd / mean) ** 2)
    return rng.lognormal(math.log(mean) - sigma2 / 2, math.sqrt(sigma2), size=size)


def _participants(seed: int, n: int, design: str) -> pd.DataFrame:
    """Roster covariates, randomized sequence and per-participant random effects."""
    rng = _rng(seed, 0)
    width = max(2, len(str(n)))
    ids = [f"P{i + 1:0{width}d}" for i in range(n)]
    codes = ("KP", "PK") if design == "crossover" else ("K", "P")
    # balanced randomization in blocks of 4 (a realistic allocation list)
    seq: list[str] = []
    while len(seq) < n:
        block = [codes[0], codes[0], codes[1], codes[1]]
        seq.extend(rng.permutation(block).tolist())
    age = np.clip(np.rint(rng.normal(42.0, 12.0, n)), 18, 70).astype(int)
    sex = np.where(rng.random(n) < 0.58, "F", "M")
    bmi = np.round(np.clip(rng.normal(28.5, 5.0, n), 18.0, 45.0), 1)
    madrs = np.clip(np.rint(rng.normal(31.0, 5.0, n)), 20, 50).astype(int)
    z = rng.standard_normal((n, 14))
    frame = pd.DataFrame(
        {
            "participant_id": ids,
            "sequence": seq[:n],
            "age": age,
            "sex": sex,
            "bmi": bmi,
            "madrs_baseline": madrs,
            # random effects (standard normal, scaled where used)
            **{f"_u{j}": z[:, j] for j in range(z.shape[1])},
        }
    )
    return frame


def _treatment(sequence: str, period: int) -> str:
    first = sequence[0] if period == 1 else sequence[-1]
    return "ketamine" if first == "K" else "placebo"


def _night_parameters(
    rng: np.random.Generator,
    person: pd.Series,
    *,
    treatment: str,
    night: str,
    effects: Mapping[str, Any],
    n3_response: float,
    rem_response: float,
    sedative: bool,
    period_effects: np.ndarray | None = None,
    nuisance: Mapping[str, float] | None = None,
    first_night: bool = False,
    carryover: bool = False,
) -> NightParameters:
    """Combine participant random effects, night noise and treatment effects.

    ``period_effects`` (standard normal, one per night parameter) mix into the participant
    effects with weight ``sqrt(period_share)``; ``first_night`` and ``carryover`` switch on
    the nuisance terms of ``nuisance`` (all absent by default).
    """
    u = [person[f"_u{j}"] for j in range(14)]
    nz = NUISANCE_DEFAULTS if nuisance is None else nuisance
    if period_effects is not None and nz["period_share"] > 0:
        a, b = math.sqrt(1.0 - nz["period_share"]), math.sqrt(nz["period_share"])
        u = [a * u[j] + b * period_effects[j] if j < 9 else u[j] for j in range(14)]
    e = rng.standard_normal(10)
    ket = treatment == "ketamine" and night in ("post1", "post2")
    age_c = (person["age"] - 42.0) / 10.0

    sol = math.exp(math.log(12.0) + 0.60 * u[0] + 0.65 * e[0])
    if treatment == "ketamine" and night == "post1":
        sol += float(effects["sol_min_post1"])
    tib = 446.0 + 36.0 * u[1] + 32.0 * e[1]
    final = math.exp(math.log(4.0) + 0.5 * u[2] + 0.7 * e[2])

    rate = math.exp(math.log(3.0) + 0.45 * u[3] + 0.30 * e[3] + 0.08 * age_c)
    median = math.exp(math.log(1.25) + 0.70 * u[4] + 0.45 * e[4])
    if ket:
        rate *= float(effects["awakenings_rate_ratio"])
        median *= float(effects["waso_ratio"]) / float(effects["awakenings_rate_ratio"])
    if sedative:  # the night is after the sedative use (the caller compares the timing)
        sol *= 0.6
        rate *= 0.8
    if first_night:
        sol += nz["first_night_sol_min"]
        rate *= nz["first_night_wake_ratio"]

    n3 = min(math.exp(math.log(26.0) + 0.75 * u[5] + 0.40 * e[5] - 0.25 * age_c), 150.0)
    n3_extra = 0.0
    if treatment == "ketamine" and night in ("post1", "post2"):
        n3_extra = max(float(effects[f"n3_min_{night}"]) + n3_response, -n3)
    if carryover:
        n3_extra = max(n3_extra + nz["carryover_n3_min"], -n3)
    if first_night:
        n3_extra = max(n3_extra + nz["first_night_n3_min"], -n3)

    rem_scale = 0.85 * math.exp(0.18 * u[6] + 0.10 * e[6])
    # the REM response (minutes) as a factor on the REM period lengths: about 62 min of
    # REM on a night at rem_scale 0.85
    rem_factor = 1.0
    if ket:
        expected_rem = 62.0 * rem_scale / 0.85
        rem_factor = max(1.0 + (float(effects["rem_min_mean"]) + rem_response) / expected_rem, 0.2)
    rem_lat = math.exp(math.log(92.0) + 0.35 * u[7] + 0.30 * e[7])
    if first_night:
        rem_lat += nz["first_night_rem_latency_min"]
    skip = bool(rng.random() < 0.2)
    nrem_cycle = 66.0 + 6.0 * u[8]

    pre = int(rng.integers(8, 61))  # 4-30 min of wake before lights off
    post = int(rng.integers(4, 25))  # 2-12 min after lights on
    return NightParameters(
        pre_lights_off_epochs=pre,
        tib_epochs=int(round(np.clip(tib, 330.0, 560.0) * 2)),
        post_lights_on_epochs=post,
        sol_min=min(sol, 180.0),
        final_wake_min=min(final, 120.0),
        rem_latency_min=rem_lat,
        skip_first_rem=skip,
        nrem_cycle_min=nrem_cycle,
        rem_scale=rem_scale,
        rem_response=rem_factor,
        n3_budget_min=n3,
        n3_extra_min=n3_extra,
        wake_rate_per_h=rate,
        wake_median_min=median,
        wake_sigma=1.15,
    )


def simulate_study(
    *,
    seed: int = 20261125,
    n_participants: int = 36,
    design: str = "crossover",
    nights: Sequence[str] = ("baseline", "post1", "post2"),
    effects: Mapping[str, Any] | None = None,
    mess: bool = True,
    nuisance: Mapping[str, Any] | str | None = None,
) -> SimulatedStudy:
    """Simulate a placebo-controlled ketamine sleep study (SIMULATED data).

    Parameters
    ----------
    seed : int
        Seed of every random draw (``numpy.random.SeedSequence``); the same seed gives the
        same study, and the same files from :func:`write_study`, on any machine with the
        same numpy.
    n_participants : int
        Participants randomized (4-100000), balanced between the two sequences (or arms) in
        blocks of four.
    design : {"crossover", "parallel"}
        Crossover: two periods, sequences ``KP`` and ``PK``. Parallel: one period, arms
        ``K`` and ``P``.
    nights : sequence of str
        Nights recorded in each period: ``baseline``, ``post1`` (required), ``post2``,
        ``day7``.
    effects : mapping, optional
        Effects to change from :data:`DEFAULT_EFFECTS` (e.g. ``{"n3_min_post1": 0}`` for a
        null study). Unknown names are an error.
    mess : bool
        Add the realistic mess (default): two missing nights, one withdrawal after period 1,
        artefact, unscored and movement epochs, one participant with sedative use (after the
        infusion: ``sedative_first_night`` 1), one with alcohol use (the evening before the
        baseline night: ``alcohol_first_night`` 0), one diary entry not completed (``-99``).
        ``False`` gives clean data.
    nuisance : mapping or {"v1", "v2"}, optional
        Design nuisances to switch on (:data:`NUISANCE_DEFAULTS`, all off by default):
        participant x period variation (``period_share``), carryover of ketamine into period
        2 (``carryover_n3_min``) and a first-night effect on the first night in the
        laboratory, period 1's first recorded night (``first_night_*``). ``"v2"`` is :data:`DEMO_V2_NUISANCE`. Values and sources:
        docs/simulate.md.

    Returns
    -------
    SimulatedStudy
        Tables ``roster``, ``periods``, ``nights`` (design columns), ``epochs``, ``diary``
        and the ``assumptions`` and ``mess`` actually applied.

    See Also
    --------
    write_study : write the study directory (README, CSV tables, hypnograms).

    Notes
    -----
    Hypnograms come from a semi-Markov bout model (see ``studykit/simulate/_night.py``):
    NREM-REM cycles of about 90 min with N3 concentrated in the first two cycles and REM
    periods lengthening through the night, awakenings as a point process on the sleep-time
    axis (more in REM and late in the night) with log-normal wake-bout lengths, and the
    sleep onset latency and final wake around them. Its parameters combine participant
    random effects (night-to-night correlation of about 0.5 for TST / WASO and 0.7 for N3),
    night noise and treatment effects, so effects appear in the per-night outcomes derived
    from the epochs - with the noise of the process - rather than being added to them.

    Effects (ASSUMPTIONS, :data:`DEFAULT_EFFECTS`; ketamine vs placebo): N3 +8 min on
    night post1 (participant SD 6); awakenings rate ratio 0.85 on nights post1 and post2
    with total WASO unchanged, so TST is essentially unchanged (about -4 min on post1, from
    the longer sleep onset); REM minutes changed by a participant-specific amount, mean 0,
    SD 10 (both directions); sleep onset latency +5 min on post1; KSS +1.5 / +0.7 / +0.2 on
    days 1 / 2 / 3 and 0 from day 4; dream vividness +1.0 / +0.4 on days 1 / 2; nightmares
    rate ratio 1.8 / 1.3 on days 1 / 2; MADRS -8 on day 1 and -3 on day 7, the day-1
    response correlated (0.4) with the N3 increment. The articles' claim that total sleep
    time increases is therefore not built in.

    Examples
    --------
    >>> study = simulate_study(seed=1, n_participants=8)
    >>> study.roster[["participant_id", "sequence"]].head(2)
      participant_id sequence
    0            P01       PK
    1            P02       KP
    >>> sorted(study.epochs["stage"].unique())[:5]
    ['ART', 'MT', 'N1', 'N2', 'N3']
    >>> study.assumptions["effects"]["n3_min_post1"]
    8.0
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}.")
    nights = _check_arguments(n_participants, design, nights)
    if mess and n_participants < 8:
        raise InputError(
            f"The realistic mess needs at least 8 participants, got {n_participants}: pass "
            "mess=False (CLI: --clean) for a smaller study."
        )
    eff = _merge_effects(effects)
    nz = _merge_nuisance(nuisance)
    nuisance_on = nz != NUISANCE_DEFAULTS
    seed = int(seed)
    n = int(n_participants)

    people = _participants(seed, n, design)
    n_periods = 2 if design == "crossover" else 1
    mess_info = _plan_mess(seed, people, n_periods, nights, enabled=mess)

    # participant-specific treatment responses (N3 increment, REM change, MADRS response)
    rho = float(eff["n3_madrs_correlation"])
    z_n3 = people["_u9"].to_numpy()
    z_madrs = rho * z_n3 + math.sqrt(1.0 - rho**2) * people["_u10"].to_numpy()
    n3_resp = float(eff["n3_response_sd"]) * z_n3
    rem_resp = float(eff["rem_min_sd"]) * people["_u11"].to_numpy()
    madrs_resp = -float(eff["madrs_response_sd"]) * z_madrs

    withdrawn = mess_info.get("withdrawn")
    missing = {tuple(k) for k in mess_info.get("missing_nights", [])}
    sedative = {tuple(k) for k in mess_info.get("sedative_use", [])}
    alcohol = {tuple(k) for k in mess_info.get("alcohol_use", [])}
    sedative_night = int(mess_info.get("sedative_first_night", 1))
    alcohol_night = int(mess_info.get("alcohol_first_night", 0))

    period_rows: list[dict[str, Any]] = []
    night_rows: list[dict[str, Any]] = []
    param_rows: list[dict[str, Any]] = []
    epoch_parts: list[tuple[str, int, str, np.ndarray]] = []
    diary_rows: list[dict[str, Any]] = []

    for i, person in people.iterrows():
        pid = person["participant_id"]
        # staggered enrolment: one or two participants a week
        start = _STUDY_START + timedelta(days=int(i) // 2 * 7 + int(i) % 2 * 2)
        for period in range(1, n_periods + 1):
            if period == 2 and withdrawn == pid:
                break
            treat = _treatment(person["sequence"], period)
            day0 = start + timedelta(days=21 * (period - 1))
            prng = _rng(seed, 1, int(i), period)
            infusion = day0 + timedelta(days=1, hours=9, minutes=int(prng.integers(0, 16)) * 10)
            madrs0 = person["madrs_baseline"] + prng.normal(-1.0 * (period - 1), 2.5)
            ket = treat == "ketamine"
            madrs1 = madrs0 - 2.0 + prng.normal(0, 3.5)
            madrs7 = madrs0 - 1.5 + prng.normal(0, 4.0)
            if ket:
                madrs1 += float(eff["madrs_day1"]) + madrs_resp[i]
                madrs7 += float(eff["madrs_day7"]) + 0.5 * madrs_resp[i]
            withdrawn_early = design == "parallel" and withdrawn == pid
            period_rows.append(
                {
                    "participant_id": pid,
                    "period": period,
                    "treatment": treat,
                    "infusion_datetime": infusion,
                    "dose_mg_kg": 0.5 if ket else 0.0,
                    "madrs_day0": _score(madrs0, 0, 60),
                    "madrs_day1": _score(madrs1, 0, 60),
                    "madrs_day7": pd.NA if withdrawn_early else _score(madrs7, 0, 60),
                    "sedative_use": int((pid, period) in sedative),
                    "alcohol_use": int((pid, period) in alcohol),
                    # when the event happened (night_index of the first night after it)
                    "sedative_first_night": sedative_night if (pid, period) in sedative else None,
                    "alcohol_first_night": alcohol_night if (pid, period) in alcohol else None,
                }
            )
            # participant x period effects: an independent stream, drawn only when used, so
            # the default study's streams (and files) are unchanged
            v = _rng(seed, 6, int(i), period).standard_normal(9) if nz["period_share"] else None
            carry = period == 2 and person["sequence"][0] == "K" and design == "crossover"
            for night in nights:
                k = NIGHT_INDEX[night]
                if (pid, period, night) in missing or (withdrawn_early and k > 1):
                    continue
                nrng = _rng(seed, 2, int(i), period, k)
                p = _night_parameters(
                    nrng,
                    person,
                    treatment=treat,
                    night=night,
                    effects=eff,
                    n3_response=n3_resp[i],
                    rem_response=rem_resp[i],
                    sedative=(pid, period) in sedative and k >= sedative_night,
                    period_effects=v,
                    nuisance=nz,
                    first_night=period == 1 and night == nights[0],
                    carryover=carry,
                )
                stages, lo, lon = simulate_night(nrng, p)
                evening = day0 + timedelta(days=k, hours=22, minutes=int(nrng.integers(0, 61)))
                rec_start = evening
                night_rows.append(
                    {
                        "participant_id": pid,
                        "period": period,
                        "night": night,
                        "night_index": k,
                        "treatment": treat,
                        "recording_start": rec_start,
                        "lights_off": rec_start + timedelta(seconds=30 * lo),
                        "lights_on": rec_start + timedelta(seconds=30 * lon),
                    }
                )
                param_rows.append(
                    {
                        "participant_id": pid,
                        "period": period,
                        "night": night,
                        "lights_off_epoch": lo,
                        "lights_on_epoch": lon,
                        "n_epochs": stages.size,
                        **{
                            f: getattr(p, f)
                            for f in (
                                "sol_min",
                                "final_wake_min",
                                "rem_latency_min",
                                "skip_first_rem",
                                "rem_scale",
                                "rem_response",
                                "n3_budget_min",
                                "n3_extra_min",
                                "wake_rate_per_h",
                                "wake_median_min",
                            )
                        },
                    }
                )
                epoch_parts.append((pid, period, night, stages))
            diary_rows.extend(
                _diary(
                    _rng(seed, 3, int(i), period),
                    person,
                    pid=pid,
                    period=period,
                    ketamine=ket,
                    effects=eff,
                    last_day=1 if withdrawn_early else None,
                )
            )

    if mess:
        _apply_epoch_mess(seed, epoch_parts, mess_info, param_rows)
    _apply_diary_mess(diary_rows, mess_info)

    roster = people[["participant_id", "sequence", "age", "sex", "bmi", "madrs_baseline"]].copy()
    roster["status"] = np.where(roster["participant_id"] == withdrawn, "withdrawn", "completed")
    roster["withdrawal_reason"] = np.where(
        roster["participant_id"] == withdrawn, mess_info.get("withdrawal_reason", ""), ""
    )
    roster["withdrawal_reason"] = roster["withdrawal_reason"].replace("", pd.NA)

    periods = pd.DataFrame(period_rows)
    for col in (
        "madrs_day0",
        "madrs_day1",
        "madrs_day7",
        "sedative_first_night",
        "alcohol_first_night",
    ):
        periods[col] = periods[col].astype("Int64")
    nights_df = pd.DataFrame(night_rows)
    epochs = _epoch_table(epoch_parts)
    diary = pd.DataFrame(diary_rows)
    keys = ["participant_id", "period"]
    periods = periods.sort_values(keys, kind="stable").reset_index(drop=True)
    nights_df = nights_df.sort_values([*keys, "night_index"], kind="stable").reset_index(drop=True)
    diary = diary.sort_values([*keys, "day"], kind="stable").reset_index(drop=True)

    formats = _choose_formats(people, nights_df, epochs, mess_info)
    return SimulatedStudy(
        roster=roster.reset_index(drop=True),
        periods=periods,
        nights=nights_df,
        epochs=epochs,
        diary=diary,
        assumptions={
            "effects": eff,
            "baseline_targets": dict(BASELINE),
            **({"nuisance": nz} if nuisance_on else {}),
        },
        mess=mess_info,
        night_parameters=pd.DataFrame(param_rows),
        seed=seed,
        design=design,
        hypnogram_formats=formats,
    )


def _score(x: float, low: int, high: int) -> int:
    return int(np.clip(np.rint(x), low, high))


def _diary(
    rng: np.random.Generator,
    person: pd.Series,
    *,
    pid: str,
    period: int,
    ketamine: bool,
    effects: Mapping[str, Any],
    last_day: int | None,
) -> list[dict[str, Any]]:
    """Daily diary: KSS (1-9), dream vividness (0-4), nightmares (count)."""
    kss_mean = 4.3 + 1.0 * person["_u12"]
    dream_mean = 1.4 + 0.6 * person["_u13"]
    frailty = rng.gamma(2.0, 0.5)  # nightmare proneness, mean 1 (per period)
    rows = []
    for day in DIARY_DAYS:
        if last_day is not None and day > last_day:
            break
        kss = kss_mean + rng.normal(0.0, 1.0)
        dream = dream_mean + rng.normal(0.0, 0.7)
        rate = 0.25 * frailty
        if ketamine:
            kss += effects["kss_by_day"].get(day, 0.0)
            dream += effects["dream_vividness_by_day"].get(day, 0.0)
            rate *= effects["nightmares_rate_ratio_by_day"].get(day, 1.0)
        rows.append(
            {
                "participant_id": pid,
                "period": period,
                "day": day,
                "kss": _score(kss, 1, 9),
                "dream_vividness": _score(dream, 0, 4),
                "nightmares": int(min(rng.poisson(rate), 20)),
            }
        )
    return rows


def _plan_mess(
    seed: int, people: pd.DataFrame, n_periods: int, nights: tuple[str, ...], *, enabled: bool
) -> dict[str, Any]:
    """Choose who and what gets the realistic mess (deterministic in the seed)."""
    if not enabled:
        return {}
    rng = _rng(seed, 4)
    ids = people["participant_id"].tolist()
    # participants 2 and 3 carry the EDF / XML nights; keep them clean of ART
    order = [ids[j] for j in rng.permutation(len(ids)) if j >= 3]
    withdrawn, sed, alc, miss1, miss2 = order[:5]
    last = nights[-1]
    info: dict[str, Any] = {
        "withdrawn": withdrawn,
        "withdrawal_reason": (
            "Withdrew consent after period 1 (travel burden)"
            if n_periods == 2
            else "Withdrew consent after night post1 (travel burden)"
        ),
        "sedative_use": [[sed, n_periods]],
        # intercurrent-event timing (night_index of the first night after the event): the
        # sedative is taken after the infusion, before night post1 (it acts on the nights
        # after it); the alcohol the evening before the baseline night
        "sedative_first_night": 1,
        "alcohol_use": [[alc, 1]],
        "alcohol_first_night": 0,
        "missing_nights": [
            [miss1, 1, last],  # recording failed
            [miss2, n_periods, "baseline" if n_periods == 2 else last],
        ],
    }
    # artefact blocks in three nights, one long unscored stretch (electrode off)
    pool = [x for x in order[5:] if x != withdrawn] or order
    info["artefact_nights"] = [[pool[j % len(pool)], 1, nights[j % len(nights)]] for j in range(3)]
    info["unscored_night"] = [pool[3 % len(pool)], 1, "post1"]
    info["diary_not_completed"] = [pool[4 % len(pool)], 1, 3, "kss"]
    return info


def _apply_epoch_mess(
    seed: int,
    parts: list[tuple[str, int, str, np.ndarray]],
    info: Mapping[str, Any],
    params: list[dict[str, Any]],
) -> None:
    """Artefact blocks and a long unscored stretch, in place on the stage arrays."""
    rng = _rng(seed, 5)
    index = {(pid, per, night): j for j, (pid, per, night, _) in enumerate(parts)}
    for pid, per, night in info.get("artefact_nights", []):
        j = index.get((pid, per, night))
        if j is None:
            continue
        stages = parts[j][3]
        lo, lon = params[j]["lights_off_epoch"], params[j]["lights_on_epoch"]
        length = int(rng.integers(4, 21))
        start = int(rng.integers(lo + 60, max(lon - length - 60, lo + 61)))
        stages[start : start + length] = ART
    pid, per, night = info.get("unscored_night", (None, None, None))
    j = index.get((pid, per, night))
    if j is not None:
        stages = parts[j][3]
        lo, lon = params[j]["lights_off_epoch"], params[j]["lights_on_epoch"]
        length = int(0.12 * (lon - lo)) + 1  # > 10 % of TIB: the night gets flagged
        start = lon - length - int(rng.integers(20, 60))
        stages[start : start + length] = UNS


def _apply_diary_mess(rows: list[dict[str, Any]], info: Mapping[str, Any]) -> None:
    target = info.get("diary_not_completed")
    if not target:
        return
    pid, per, day, column = target
    for row in rows:
        if (row["participant_id"], row["period"], row["day"]) == (pid, per, day):
            row[column] = -99  # the dictionary's missing code: diary entry not completed


def _epoch_table(parts: list[tuple[str, int, str, np.ndarray]]) -> pd.DataFrame:
    sizes = np.array([p[3].size for p in parts], dtype=np.int64)
    codes = np.concatenate([p[3] for p in parts]) if parts else np.array([], dtype=np.int8)
    epoch = np.concatenate([np.arange(s) for s in sizes]) if parts else np.array([], dtype=int)
    frame = pd.DataFrame(
        {
            "participant_id": np.repeat([p[0] for p in parts], sizes),
            "period": np.repeat([p[1] for p in parts], sizes).astype(np.int64),
            "night": np.repeat([p[2] for p in parts], sizes),
            "epoch": epoch.astype(np.int64),
            "onset_s": (epoch * 30.0).astype(np.float64),
            "stage": STAGE_LABELS[codes],
        }
    )
    frame["participant_id"] = frame["participant_id"].astype(str)
    frame["night"] = frame["night"].astype(str)
    frame["stage"] = frame["stage"].astype(str)
    return frame


def _choose_formats(
    people: pd.DataFrame, nights: pd.DataFrame, epochs: pd.DataFrame, mess: Mapping[str, Any]
) -> dict[tuple[str, int, str], str]:
    """Participant 2's period-1 nights as EDF+, participant 3's as NSRR XML.

    EDF+ and NSRR XML have no artefact label, so those nights never carry ART epochs
    (the mess plan keeps artefacts away from participants 2 and 3).
    """
    out: dict[tuple[str, int, str], str] = {}
    ids = people["participant_id"].tolist()
    for pid, fmt in ((ids[1], "edf"), (ids[2], "xml")):
        rows = nights[(nights["participant_id"] == pid) & (nights["period"] == 1)]
        for night in rows["night"]:
            out[(pid, 1, str(night))] = fmt
    bad = set(
        map(
            tuple,
            epochs.loc[epochs["stage"] == "ART", ["participant_id", "period", "night"]]
            .drop_duplicates()
            .itertuples(index=False, name=None),
        )
    )
    return {k: v for k, v in out.items() if k not in bad}
