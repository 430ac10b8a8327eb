"""One simulated night: a semi-Markov bout model of the sleep-stage sequence.

Private module of :mod:`studykit.simulate`. A night is built in two layers:

1. The *sleep architecture* on a sleep-only time axis: NREM-REM cycles of about 90 min.
   Cycle 1's NREM length is the REM latency (the first REM period is skipped on some nights);
   each NREM episode opens with N1, descends through N2 into a block of N3 whose length
   follows the night's slow-wave "budget" (most of it in cycles 1-2), then returns to N2
   before the REM period, which lengthens from cycle to cycle. Brief N1 intrusions into N2
   and N2 intrusions into N3 are sprinkled as single-epoch stage shifts.
2. *Awakenings* as a point process on that sleep-time axis (intensity per hour of sleep,
   higher in REM and late in the night, lower in N3), each a wake bout with a log-normal
   duration. Inserting the bouts moves the following sleep later on the clock; the
   sleep-time consumed plus the wake inserted fills the sleep period exactly. After a wake
   bout sleep resumes through N1.

Around it: wake from recording start to lights off, the sleep onset latency, the final wake
before lights on and wake after lights on until the recording ends. Every parameter comes
from the night's generating parameters (participant random effects + night noise +
treatment effects; see :mod:`studykit.simulate`), so treatment effects show up in the
derived outcomes through the process, not by editing outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__: list[str] = []

# integer stage codes used internally; STAGE_LABELS maps them to the dictionary's codes
W, N1, N2, N3, R, MT, ART, UNS = range(8)
STAGE_LABELS = np.array(["W", "N1", "N2", "N3", "R", "MT", "ART", "UNS"], dtype=object)
EPOCHS_PER_MIN = 2  # 30-s epochs

# REM period length (minutes) by cycle, before the night's REM scale factor
_REM_BY_CYCLE = (12.0, 21.0, 26.0, 29.0, 31.0, 32.0)
# share of the night's N3 budget by cycle (the rest, if any, is dropped)
_N3_SHARE = (0.58, 0.27, 0.11, 0.04)
# share of the ketamine N3 increment by cycle ("delta power up early in the night")
_N3_EXTRA_SHARE = (0.75, 0.25)


@dataclass(frozen=True)
class NightParameters:
    """Generating parameters of one night (minutes unless noted)."""

    pre_lights_off_epochs: int  # wake from recording start to lights off
    tib_epochs: int  # lights off to lights on
    post_lights_on_epochs: int  # wake from lights on to the end of the recording
    sol_min: float  # lights off to the first sleep epoch
    final_wake_min: float  # last sleep epoch to lights on
    rem_latency_min: float  # NREM sleep before the first REM period (sleep minutes)
    skip_first_rem: bool  # first REM period omitted (long REM latency)
    nrem_cycle_min: float  # mean NREM episode length after cycle 1
    rem_scale: float  # multiplies the REM period lengths
    rem_response: float  # treatment factor on REM periods; the NREM episode gives way
    n3_budget_min: float  # N3 minutes the night tends towards
    n3_extra_min: float  # treatment increment of N3, placed early in the night
    wake_rate_per_h: float  # awakenings per hour of sleep (before time/stage modulation)
    wake_median_min: float  # median wake bout length
    wake_sigma: float  # log-normal shape of wake bout lengths


def _architecture(rng: np.random.Generator, n_epochs: int, p: NightParameters) -> np.ndarray:
    """Stage sequence on the sleep-only axis, at least ``n_epochs`` long."""
    parts: list[np.ndarray] = []
    total = 0
    cycle = 0
    carry_n3 = 0.0
    while total < n_epochs:
        if cycle == 0:
            nrem = p.rem_latency_min
        else:
            nrem = float(np.clip(rng.normal(p.nrem_cycle_min, 12.0), 35.0, 120.0))
        nrem_ep = max(int(round(nrem * EPOCHS_PER_MIN)), 20)
        base_rem = _REM_BY_CYCLE[min(cycle, len(_REM_BY_CYCLE) - 1)]
        rem = base_rem * p.rem_scale * float(np.exp(rng.normal(0.0, 0.25)))
        if cycle == 0 and p.skip_first_rem:
            rem = 0.0
        # a treatment change of REM keeps the cycle length: REM takes from (or gives to)
        # the NREM episode before it, so it is not pushed out at the end of the night
        shift = rem * (p.rem_response - 1.0)
        shift = min(shift, nrem - 30.0) if shift > 0 else shift
        rem += shift
        nrem_ep = max(nrem_ep - int(round(shift * EPOCHS_PER_MIN)), 20)
        rem_ep = max(int(round(rem * EPOCHS_PER_MIN)), 0)

        share = _N3_SHARE[cycle] if cycle < len(_N3_SHARE) else 0.0
        extra = _N3_EXTRA_SHARE[cycle] if cycle < len(_N3_EXTRA_SHARE) else 0.0
        n3 = p.n3_budget_min * share + p.n3_extra_min * extra + carry_n3
        lead = int(rng.integers(3, 11)) if cycle == 0 else int(rng.integers(0, 3))
        room = max(nrem_ep - lead - 14, 0)  # >= 5 min N2 before and 2 min after N3
        n3_ep = min(max(int(round(n3 * EPOCHS_PER_MIN)), 0), room)
        carry_n3 = max(n3 - n3_ep / EPOCHS_PER_MIN, 0.0)
        n2_ep = nrem_ep - lead - n3_ep
        # N2 before the N3 block: about a third of the remaining N2, at least 5 min
        pre = min(max(int(round(n2_ep * rng.uniform(0.25, 0.45))), 10), n2_ep)
        seg = np.concatenate(
            [
                np.full(lead, N1, dtype=np.int8),
                np.full(pre, N2, dtype=np.int8),
                np.full(n3_ep, N3, dtype=np.int8),
                np.full(n2_ep - pre, N2, dtype=np.int8),
                np.full(rem_ep, R, dtype=np.int8),
            ]
        )
        parts.append(seg)
        total += seg.size
        cycle += 1
    arch = np.concatenate(parts)
    # single-epoch stage shifts: N2 -> N1, N3 -> N2, R -> N1
    u = rng.random(arch.size)
    arch[(arch == N2) & (u < 0.012)] = N1
    arch[(arch == N3) & (u < 0.04)] = N2
    arch[(arch == R) & (u < 0.006)] = N1
    return arch


def simulate_night(rng: np.random.Generator, p: NightParameters) -> tuple[np.ndarray, int, int]:
    """Simulate one recording.

    Returns
    -------
    stages : ndarray of int8
        One code per 30-s epoch from the recording start to its end.
    lights_off_epoch, lights_on_epoch : int
        Epoch indices of lights off and lights on (lights on is exclusive: TIB epochs are
        ``lights_off_epoch .. lights_on_epoch - 1``).
    """
    tib = p.tib_epochs
    sol = int(round(p.sol_min * EPOCHS_PER_MIN))
    final = int(round(p.final_wake_min * EPOCHS_PER_MIN))
    # keep at least two hours of sleep period
    if tib - sol - final < 240:
        excess = 240 - (tib - sol - final)
        cut_final = min(final, excess)
        final -= cut_final
        sol = max(sol - (excess - cut_final), 0)
    spt = tib - sol - final

    arch = _architecture(rng, spt, p)[:spt]

    # awakening intensity per sleep epoch: time trend (x0.7 early .. x1.3 late) and stage
    pos = np.arange(spt, dtype=float) / max(spt - 1, 1)
    stage_factor = np.select([arch == N3, arch == R, arch == N1], [0.3, 1.4, 1.6], default=1.0)
    hazard = p.wake_rate_per_h / (60.0 * EPOCHS_PER_MIN) * (0.7 + 0.6 * pos) * stage_factor
    cum = np.cumsum(hazard)
    n_draw = int(cum[-1] * 2 + 30)
    arrivals = np.cumsum(rng.exponential(size=n_draw))
    arrivals = arrivals[arrivals < cum[-1]]
    after = np.searchsorted(cum, arrivals)  # a bout follows sleep epoch `after`
    minutes = p.wake_median_min * np.exp(rng.normal(0.0, p.wake_sigma, size=after.size))
    dur = np.clip(np.ceil(minutes * EPOCHS_PER_MIN).astype(np.int64), 1, 180)
    # bouts after the same sleep epoch merge into one
    if after.size:
        uniq, start = np.unique(after, return_index=True)
        dur = np.add.reduceat(dur, start)
        after = uniq
    # keep the prefix of bouts that still leaves sleep after them within the sleep period
    end_clock = after + 1 + np.cumsum(dur)
    keep = end_clock < spt
    after, dur = after[keep], dur[keep]
    n_sleep = spt - int(dur.sum())

    arch = arch[:n_sleep].copy()
    # sleep resumes through N1 (one epoch, two with probability 0.4)
    resume = after + 1
    arch[resume[resume < n_sleep]] = N1
    second = resume + 1
    second = second[(second < n_sleep) & (rng.random(second.size) < 0.4)]
    arch[second[arch[second] != R]] = N1

    wake_before = np.concatenate([[0], np.cumsum(dur)])
    clock = np.arange(n_sleep) + wake_before[np.searchsorted(after, np.arange(n_sleep), "left")]
    period = np.full(spt, W, dtype=np.int8)
    period[clock] = arch
    # a movement-time epoch opens some longer wake bouts
    mt = clock[after[dur >= 2]] + 1
    period[mt[rng.random(mt.size) < 0.06]] = MT

    stages = np.concatenate(
        [
            np.full(p.pre_lights_off_epochs + sol, W, dtype=np.int8),
            period,
            np.full(final + p.post_lights_on_epochs, W, dtype=np.int8),
        ]
    )
    lights_off = p.pre_lights_off_epochs
    return stages, lights_off, lights_off + tib
