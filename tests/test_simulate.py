"""The simulated demo study: determinism, dictionary conformance, labelling, mess, effects.

Effect checks compare the outcomes derived from the simulated epochs with the configured
assumptions (``studykit.simulate.DEFAULT_EFFECTS``, taken from LITERATURE.md "effect sizes to
simulate") within Monte Carlo error: the tolerance is 3.5 standard errors of the estimate,
computed from the simulated data themselves (a fixed set of seeds; a wider check over many
seeds is ``benchmarks/validate_simulator.py``).
"""

from __future__ import annotations

import csv
import hashlib
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import edfio
import numpy as np
import pandas as pd
import pytest

from studykit.cli import main
from studykit.errors import InputError
from studykit.simulate import DEFAULT_EFFECTS, simulate_study, write_study
from studykit.simulate._outcomes import _night_outcomes

DICTIONARY = Path(__file__).resolve().parents[1] / "data_dictionary.csv"
KEYS = ["participant_id", "period", "night"]
STAGES = {"W", "N1", "N2", "N3", "R", "MT", "ART", "UNS"}


def _dictionary() -> dict[str, dict[str, dict[str, str]]]:
    tables: dict[str, dict[str, dict[str, str]]] = {}
    with DICTIONARY.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            tables.setdefault(row["table"], {})[row["name"]] = row
    return tables


def _codes(var: dict[str, str]) -> set[str]:
    return {c.split(",")[0].strip() for c in var["codes"].split("|")} if var["codes"] else set()


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def study():
    return simulate_study()


@pytest.fixture(scope="module")
def written(study, tmp_path_factory):
    return write_study(study, tmp_path_factory.mktemp("demo"))


# --- determinism -------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(written, tmp_path):
    again = write_study(simulate_study(), tmp_path / "again")
    first, second = _files(written), _files(again)
    assert sorted(first) == sorted(second)
    different = [name for name in first if first[name] != second[name]]
    assert different == []


def _data_digest(directory: Path) -> str:
    """SHA-256 over the data files: tables, design columns of nights.csv, hypnograms.

    README.md is prose and nights.csv gains derived columns once studykit.hypnogram is
    merged, so only its eight design columns enter the digest.
    """
    digest = hashlib.sha256()
    for name, content in _files(directory).items():
        if name == "README.md":
            continue
        if name == "nights.csv":
            lines = content.decode().splitlines()
            content = "\n".join(",".join(line.split(",")[:8]) for line in lines).encode()
        digest.update(name.encode() + b"\0" + content + b"\0")
    return digest.hexdigest()


# Digest of the default demo (seed 20261125) as written by this simulator on Linux x86_64,
# numpy 2.4.6, Python 3.11.7. The same bytes must come out on any machine; a change means
# the generator changed (update this deliberately) or numpy changed its random streams
# (NumPy does not promise Generator streams across versions; say so in the release notes).
# Last change: periods.csv gained the intercurrent events' timing (sedative_first_night,
# alcohol_first_night); every other file and column kept its bytes (diffed against the
# previous simulator's output).
DEMO_DIGEST = "675f078a6e178efca1630848891f6fb56f5698c3b7754f75102ac1e9b6cee002"


def test_demo_files_match_the_recorded_digest(written):
    assert _data_digest(written) == DEMO_DIGEST


def test_other_seed_gives_other_data(study):
    other = simulate_study(seed=1)
    assert not other.epochs["stage"].equals(study.epochs["stage"])


def test_write_refuses_non_empty_directory_unless_overwrite(tmp_path):
    small = simulate_study(seed=2, n_participants=8)
    write_study(small, tmp_path)
    with pytest.raises(InputError, match="not empty"):
        write_study(small, tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    # a bigger study first, then a smaller one: no stale hypnograms may remain
    write_study(simulate_study(seed=2, n_participants=12), tmp_path, overwrite=True)
    write_study(small, tmp_path, overwrite=True)
    names = {p.name.split("_")[0] for p in (tmp_path / "hypnograms").iterdir()}
    assert names == set(small.roster["participant_id"])
    assert (tmp_path / "notes.txt").read_text() == "mine"


# --- dictionary conformance --------------------------------------------------------------


@pytest.mark.parametrize("table", ["roster", "periods", "nights", "epochs", "diary"])
def test_tables_use_dictionary_names_and_codes(study, table):
    variables = _dictionary()[table]
    frame = getattr(study, table)
    assert set(frame.columns) <= set(variables), set(frame.columns) - set(variables)
    phi = {name for name, v in variables.items() if v["identifier"] == "yes"}
    required = {n for n, v in variables.items() if v["required"] == "yes"} - phi
    if table != "nights":  # nights: derived outcomes come from the hypnogram module
        assert required <= set(frame.columns)
    else:
        design = {n for n, v in variables.items() if v["role"] != "derived"}
        assert set(frame.columns) == design
    assert not phi & set(frame.columns)
    for name in frame.columns:
        var = variables[name]
        values = frame[name].dropna()
        missing = {x.strip() for x in var["missing_codes"].split("|") if x.strip()}
        values = values[~values.astype(str).isin(missing)]
        if var["codes"]:
            assert set(values.astype(str)) <= _codes(var), name
        if var["minimum"] and var["type"] in ("integer", "number"):
            ok = values.astype(float).between(float(var["minimum"]), float(var["maximum"]))
            assert ok.all(), name
        if var["required"] == "yes":
            assert frame[name].notna().all(), name


def test_written_csv_headers_match_frames_and_start_with_data(study, written):
    for table in ("roster", "periods", "nights", "diary"):
        text = (written / f"{table}.csv").read_text(encoding="utf-8")
        header = text.splitlines()[0].split(",")
        assert header[: len(getattr(study, table).columns)] == list(getattr(study, table).columns)
        read = pd.read_csv(written / f"{table}.csv")
        assert len(read) == len(getattr(study, table))


def test_keys_unique_and_consistent(study):
    assert study.roster["participant_id"].is_unique
    assert not study.periods.duplicated(["participant_id", "period"]).any()
    assert not study.nights.duplicated(KEYS).any()
    assert not study.diary.duplicated(["participant_id", "period", "day"]).any()
    merged = study.nights.merge(study.periods, on=["participant_id", "period"], suffixes=("", "_p"))
    assert len(merged) == len(study.nights)
    assert (merged["treatment"] == merged["treatment_p"]).all()
    # crossover: each sequence gets ketamine in the period its first letter says
    seq = study.periods.merge(study.roster[["participant_id", "sequence"]])
    letter = np.where(seq["period"] == 1, seq["sequence"].str[0], seq["sequence"].str[1])
    assert (np.where(letter == "K", "ketamine", "placebo") == seq["treatment"]).all()
    assert (seq["dose_mg_kg"] == np.where(seq["treatment"] == "ketamine", 0.5, 0.0)).all()
    # 36 randomized in blocks of four: 18 per sequence
    assert study.roster["sequence"].value_counts().to_dict() == {"KP": 18, "PK": 18}


def test_parallel_design():
    par = simulate_study(seed=7, n_participants=20, design="parallel")
    assert set(par.roster["sequence"]) == {"K", "P"}
    assert set(par.periods["period"]) == {1}
    arm = par.periods.merge(par.roster[["participant_id", "sequence"]])
    assert (np.where(arm["sequence"] == "K", "ketamine", "placebo") == arm["treatment"]).all()


def test_day7_night_optional():
    s = simulate_study(seed=4, n_participants=8, nights=("baseline", "post1", "day7"), mess=False)
    assert set(s.nights["night"]) == {"baseline", "post1", "day7"}
    assert set(s.nights.loc[s.nights["night"] == "day7", "night_index"]) == {7}


# --- hypnogram files ---------------------------------------------------------------------


def _stages_from_runs(runs: list[tuple[float, float, str]], mapping: dict[str, str]) -> list[str]:
    out: list[str] = []
    for onset, duration, label in runs:
        assert onset == 30 * len(out)  # contiguous, no gaps or overlaps
        out.extend([mapping[label]] * int(duration // 30))
    return out


def test_every_night_written_once_in_one_format(study, written):
    files = sorted(p.name for p in (written / "hypnograms").iterdir())
    stems = [f.rsplit(".", 1)[0] for f in files]
    assert len(stems) == len(set(stems)) == len(study.nights)
    suffixes = {f.rsplit(".", 1)[1] for f in files}
    assert suffixes == {"csv", "edf", "xml"}


def test_hypnogram_files_reproduce_the_epochs(study, written):
    edf_map = {
        "Sleep stage W": "W",
        "Sleep stage 1": "N1",
        "Sleep stage 2": "N2",
        "Sleep stage 3": "N3",
        "Sleep stage 4": "N3",
        "Sleep stage R": "R",
        "Sleep stage ?": "UNS",
        "Movement time": "MT",
    }
    xml_map = {
        "Wake|0": "W",
        "Stage 1 sleep|1": "N1",
        "Stage 2 sleep|2": "N2",
        "Stage 3 sleep|3": "N3",
        "Stage 4 sleep|4": "N3",
        "REM sleep|5": "R",
        "Movement|6": "MT",
        "Unscored|9": "UNS",
    }
    seen = set()
    for (pid, period, night), block in study.epochs.groupby(KEYS):
        stem = written / "hypnograms" / f"{pid}_p{period}_{night}"
        expected = block["stage"].tolist()
        if stem.with_suffix(".edf").exists():
            edf = edfio.read_edf(stem.with_suffix(".edf"))
            runs = [(a.onset, a.duration, a.text) for a in edf.annotations]
            assert _stages_from_runs(runs, edf_map) == expected
            assert "SIMULATED" in edf.local_recording_identification
            start = study.nights.set_index(KEYS).loc[(pid, period, night), "recording_start"]
            assert (edf.startdate, edf.starttime) == (start.date(), start.time())
            assert "Sleep stage 4" in {r[2] for r in runs}  # R&K 4 exercised
            seen.add("edf")
        elif stem.with_suffix(".xml").exists():
            root = ET.parse(stem.with_suffix(".xml")).getroot()
            events = [
                (
                    float(e.findtext("Start")),
                    float(e.findtext("Duration")),
                    e.findtext("EventConcept"),
                )
                for e in root.iter("ScoredEvent")
                if e.findtext("EventType") == "Stages|Stages"
            ]
            assert _stages_from_runs(events, xml_map) == expected
            seen.add("xml")
        else:
            frame = pd.read_csv(stem.with_suffix(".csv"))
            assert list(frame.columns) == ["epoch", "onset_s", "stage"]
            assert frame["stage"].tolist() == expected
            assert (frame["onset_s"] == 30 * frame["epoch"]).all()
            seen.add("csv")
    assert seen == {"csv", "edf", "xml"}


# --- labelling ---------------------------------------------------------------------------


def test_readme_labels_the_data_simulated(written):
    readme = (written / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# SIMULATED DATA")
    assert "seed: 20261125" in readme
    assert "ASSUMPTIONS" in readme
    assert '"n3_min_post1": 8.0' in readme
    for table in ("roster", "periods", "nights", "diary"):
        first = (written / f"{table}.csv").read_text().splitlines()[0]
        assert not first.startswith("#")


# --- realistic mess ----------------------------------------------------------------------


def test_mess_is_present(study, written):
    roster = study.roster.set_index("participant_id")
    withdrawn = roster.index[roster["status"] == "withdrawn"].tolist()
    assert len(withdrawn) == 1
    assert roster.loc[withdrawn[0], "withdrawal_reason"].startswith("Withdrew consent")
    assert roster.loc[roster["status"] == "completed", "withdrawal_reason"].isna().all()
    assert set(study.periods.loc[study.periods["participant_id"] == withdrawn[0], "period"]) == {1}
    assert not (study.diary["participant_id"].eq(withdrawn[0]) & study.diary["period"].eq(2)).any()

    # 35 completers x 2 periods x 3 nights + withdrawn 3 nights - 2 missing nights
    assert len(study.nights) == 35 * 6 + 3 - 2
    for pid, period, night in study.mess["missing_nights"]:
        assert not list((written / "hypnograms").glob(f"{pid}_p{period}_{night}.*"))

    assert study.periods["sedative_use"].sum() == 1
    assert study.periods["alcohol_use"].sum() == 1
    counts = study.epochs["stage"].value_counts()
    assert {"ART", "UNS", "MT"} <= set(counts.index)
    assert counts["ART"] < 100  # a few artefact epochs, not a broken study
    assert (study.diary["kss"] == -99).sum() == 1

    nights = study.nights
    assert (nights["lights_off"] > nights["recording_start"]).all()
    params = study.night_parameters
    assert (params["n_epochs"] > params["lights_on_epoch"]).all()  # wake after lights on


def test_clean_study_has_no_mess():
    s = simulate_study(seed=3, n_participants=8, mess=False)
    assert (s.roster["status"] == "completed").all()
    assert not {"ART", "UNS"} & set(s.epochs["stage"])
    assert len(s.nights) == 8 * 2 * 3
    assert s.periods["sedative_use"].sum() == 0


# --- user errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"design": "factorial"}, "Unknown design"),
        ({"n_participants": 2}, "between 4 and"),
        ({"n_participants": 6}, "at least 8"),
        ({"nights": ("post1", "post9")}, "Invalid nights"),
        ({"nights": ("post1", "post2")}, "must include 'baseline'"),
        ({"effects": {"n3_boost": 3}}, "Unknown effect"),
        ({"effects": {"kss_by_day": 2}}, "mapping"),
        ({"seed": -1}, "non-negative"),
    ],
)
def test_bad_arguments_raise_input_error(kwargs, match):
    with pytest.raises(InputError, match=match):
        simulate_study(**kwargs)


def test_inputs_are_not_modified():
    effects = {"kss_by_day": {1: 2.0}}
    simulate_study(seed=5, n_participants=8, effects=effects)
    assert effects == {"kss_by_day": {1: 2.0}}
    assert DEFAULT_EFFECTS["kss_by_day"][1] == 1.5


# --- command line ------------------------------------------------------------------------


def test_cli_writes_the_study(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["simulate", "--seed", "11", "--n", "8", "--out", str(out)]) == 0
    assert "SIMULATED" in capsys.readouterr().out
    assert (out / "roster.csv").exists()
    assert main(["simulate", "--seed", "11", "--n", "8", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["simulate", "--n", "8", "--out", str(out), "--design", "parallel", "--force"]) == 0
    assert pd.read_csv(out / "roster.csv")["sequence"].isin(["K", "P"]).all()


# --- effects and baselines within Monte Carlo error --------------------------------------

SEEDS = (101, 202, 303)
N_MC = 96  # participants per simulated study in the effect checks


@pytest.fixture(scope="module")
def mc():
    """Per-night outcomes and diaries of a few clean studies (ketamine and placebo)."""
    nights, diaries = [], []
    for seed in SEEDS:
        s = simulate_study(seed=seed, n_participants=N_MC, mess=False)
        o = _night_outcomes(s).merge(s.nights[[*KEYS, "treatment"]], on=KEYS)
        o["participant_id"] = f"{seed}-" + o["participant_id"]
        nights.append(o)
        d = s.diary.merge(s.periods[["participant_id", "period", "treatment"]])
        d["participant_id"] = f"{seed}-" + d["participant_id"]
        diaries.append(d)
    return pd.concat(nights, ignore_index=True), pd.concat(diaries, ignore_index=True)


def _paired(frame, night, outcome, by="night"):
    w = frame[frame[by] == night].pivot(index="participant_id", columns="treatment", values=outcome)
    return (w["ketamine"] - w["placebo"]).dropna()


def _check(diff: pd.Series, expected: float, *, allowance: float = 0.0, k: float = 3.5) -> None:
    """Mean paired difference within ``allowance + k`` standard errors of ``expected``."""
    se = diff.std(ddof=1) / math.sqrt(len(diff))
    assert abs(diff.mean() - expected) < allowance + k * se, (diff.mean(), expected, se)


def test_n3_increase_on_night_post1_only(mc):
    nights, _ = mc
    _check(_paired(nights, "post1", "n3_min"), DEFAULT_EFFECTS["n3_min_post1"])
    _check(_paired(nights, "post2", "n3_min"), DEFAULT_EFFECTS["n3_min_post2"])
    _check(_paired(nights, "baseline", "n3_min"), 0.0)
    # and the check can fail: the post1 increase is distinguishable from zero
    d = _paired(nights, "post1", "n3_min")
    assert d.mean() > 3 * d.std(ddof=1) / math.sqrt(len(d))


def test_sleep_onset_longer_on_infusion_night(mc):
    nights, _ = mc
    _check(_paired(nights, "post1", "sol_min"), DEFAULT_EFFECTS["sol_min_post1"])
    _check(_paired(nights, "post2", "sol_min"), 0.0)


def test_fewer_awakenings_same_waso_tst_unchanged(mc):
    nights, _ = mc
    for night in ("post1", "post2"):
        sub = nights[nights["night"] == night]
        placebo_mean = sub.loc[sub["treatment"] == "placebo", "n_awakenings"].mean()
        expected = (DEFAULT_EFFECTS["awakenings_rate_ratio"] - 1.0) * placebo_mean
        # the extra N3 on post1 (fewer awakenings in N3) lowers the count a little more
        _check(_paired(nights, night, "n_awakenings"), expected, allowance=0.5)
        # waso_ratio 1.0: same wake in fewer, longer bouts (minus a little from extra N3)
        _check(_paired(nights, night, "waso_min"), 0.0, allowance=3.0)
    # TST essentially unchanged: on post1 the sleep-onset delay (-5 min of opportunity,
    # partly offset by the N3 effect) -> expected between -5 and 0 (measured -1.1 with
    # 1000 participants, SE 1.9)
    _check(_paired(nights, "post1", "tst_min"), -2.5, allowance=2.5)
    _check(_paired(nights, "post2", "tst_min"), 0.0, allowance=3.0)


def test_rem_change_has_mean_zero(mc):
    nights, _ = mc
    _check(_paired(nights, "post1", "rem_min"), DEFAULT_EFFECTS["rem_min_mean"])


@pytest.mark.parametrize("shift", [25.0, -25.0])
def test_rem_effect_in_minutes_reaches_the_outcome(shift):
    """A configured REM change of +/-25 min (no between-person spread) shows up as such."""
    s = simulate_study(
        seed=55, n_participants=N_MC, mess=False, effects={"rem_min_mean": shift, "rem_min_sd": 0}
    )
    nights = _night_outcomes(s).merge(s.nights[[*KEYS, "treatment"]], on=KEYS)
    for night in ("post1", "post2"):
        _check(_paired(nights, night, "rem_min"), shift)


def test_diary_effects_by_day(mc):
    _, diary = mc
    for day in (0, 1, 2, 3, 4, 7):
        _check(_paired(diary, day, "kss", by="day"), DEFAULT_EFFECTS["kss_by_day"].get(day, 0.0))
        vivid = DEFAULT_EFFECTS["dream_vividness_by_day"].get(day, 0.0)
        _check(_paired(diary, day, "dream_vividness", by="day"), vivid)
    day1 = diary[diary["day"] == 1].groupby("treatment")["nightmares"].mean()
    assert day1["ketamine"] > day1["placebo"]


def test_placebo_baselines_near_drug_free_depression(mc):
    """Placebo nights vs LITERATURE.md baselines (J Clin Sleep Med 2021 n=117; BMC
    Psychiatry 2019 n=87): mean within half a literature SD; SD within a factor of 1.6."""
    nights, _ = mc
    placebo = nights[nights["treatment"] == "placebo"].copy()
    placebo["rem_pct"] = 100 * placebo["rem_min"] / placebo["tst_min"]
    literature = {  # mean, SD
        "tst_min": (358, 75),
        "se_pct": (84, 12),
        "sol_min": (18, 19),
        "lat_rem_min": (130, 75),
        "rem_pct": (16.8, 5.8),
        "waso_min": (73, 62),
        "n3_min": (35, 34),
    }
    for name, (mean, sd) in literature.items():
        m, s = placebo[name].mean(), placebo[name].std()
        assert abs(m - mean) < 0.5 * sd, (name, m, mean)
        assert sd / 1.6 < s < sd * 1.6, (name, s, sd)


def test_night_to_night_correlation(mc):
    """Baseline nights of periods 1 and 2 (no treatment yet): r about 0.5 for TST and WASO
    and 0.7 for N3 (LITERATURE.md, assumed); tolerance +/- 0.2 (SE of r at n=288 ~ 0.05)."""
    nights, _ = mc
    base = nights[nights["night"] == "baseline"]
    wide = base.pivot(
        index="participant_id", columns="period", values=["tst_min", "waso_min", "n3_min"]
    )
    for name, target in (("tst_min", 0.5), ("waso_min", 0.5), ("n3_min", 0.7)):
        r = wide[name][1].corr(wide[name][2])
        assert abs(r - target) < 0.2, (name, r)


# --- derived outcomes (studykit.hypnogram) -----------------------------------------------


def test_nights_csv_has_derived_outcomes_matching_an_independent_count(study, written):
    nights = pd.read_csv(written / "nights.csv")
    assert not nights.duplicated(KEYS).any()
    assert len(nights) == len(study.nights)
    variables = _dictionary()["nights"]
    derived = [n for n, v in variables.items() if v["role"] == "derived"]
    assert set(derived) <= set(nights.columns)
    # the simulator's own minimal count (lights off..on, AASM definitions) must agree
    mine = _night_outcomes(study)
    both = nights.merge(mine, on=KEYS, suffixes=("", "_mine"))
    assert len(both) == len(study.nights)
    for col in ("tib_min", "sol_min", "tst_min", "waso_min", "n3_min", "rem_min", "lat_rem_min"):
        assert np.allclose(both[col], both[f"{col}_mine"], atol=1e-3, equal_nan=True), col
    assert (both["n_awakenings"] == both["n_awakenings_mine"]).all()
    flagged = nights.set_index(KEYS)["quality_flag"]
    assert flagged.loc[tuple(study.mess["unscored_night"])] == 1


def test_project_readers_read_every_format_back(study, written):
    from studykit.hypnogram import read_hypnogram

    for key, fmt in study.hypnogram_formats.items():
        pid, period, night = key
        back = read_hypnogram(written / "hypnograms" / f"{pid}_p{period}_{night}.{fmt}")
        expected = study.epochs.set_index(KEYS).loc[key, "stage"].tolist()
        assert back["stage"].astype(str).tolist() == expected, key


def test_load_study_accepts_the_demo(study, written):
    from studykit.validate import load_study

    loaded = load_study(written)
    errors = loaded.issues[loaded.issues["severity"] == "error"]
    assert errors.empty, errors.head().to_string()
    assert len(loaded.nights) == len(study.nights)
    assert len(loaded.roster) == len(study.roster)


# --- design nuisances (participant x period variation, carryover, first-night effect) -----


def test_nuisances_off_by_default_leave_the_study_unchanged():
    # v1 = no nuisance: the same epochs as without the argument (the digest test above pins
    # the default files themselves)
    a = simulate_study(seed=4, n_participants=8, mess=False)
    b = simulate_study(seed=4, n_participants=8, mess=False, nuisance="v1")
    assert a.epochs.equals(b.epochs)
    assert "nuisance" not in a.assumptions


def _means(study):
    out = _night_outcomes(study).merge(
        study.nights[["participant_id", "period", "night", "treatment"]], on=KEYS
    )
    return out


def test_first_night_effect_appears_on_the_first_laboratory_night_only():
    kw = {"seed": 8, "n_participants": 120, "mess": False}
    base = _means(simulate_study(**kw))
    fne = _means(simulate_study(**kw, nuisance={"first_night_sol_min": 15.0}))
    diff = fne.set_index(KEYS)["sol_min"] - base.set_index(KEYS)["sol_min"]
    by = diff.groupby(["period", "night"]).mean()
    # SOL is drawn as a parameter, so the shift is exact up to the epoch grid (0.5 min)
    assert by[(1, "baseline")] == pytest.approx(15.0, abs=0.5)
    assert by.drop((1, "baseline")).abs().max() == pytest.approx(0.0, abs=1e-9)


def test_carryover_adds_n3_in_period_2_after_ketamine_first():
    kw = {"seed": 9, "n_participants": 120, "mess": False}
    base = simulate_study(**kw).night_parameters.set_index(KEYS)
    carry = simulate_study(**kw, nuisance={"carryover_n3_min": 6.0})
    seq = carry.roster.set_index("participant_id")["sequence"]
    d = carry.night_parameters.set_index(KEYS)["n3_extra_min"] - base["n3_extra_min"]
    d = d.reset_index()
    d["sequence"] = d["participant_id"].map(seq)
    kp2 = d[(d.sequence == "KP") & (d.period == 2)]["n3_extra_min"]
    others = d[~((d.sequence == "KP") & (d.period == 2))]["n3_extra_min"]
    assert np.allclose(kp2, 6.0)  # every night of period 2 after ketamine (ASSUMPTION: no decay)
    assert np.allclose(others, 0.0)


def test_period_share_lowers_the_between_period_correlation():
    # N3 budget is a night parameter: its correlation between the two periods' baseline
    # nights falls from about 0.75 when participants sleep alike in both periods
    kw = {"seed": 10, "n_participants": 400, "mess": False}

    def r(study):
        p = study.night_parameters
        w = p[p.night == "baseline"].pivot(
            index="participant_id", columns="period", values="n3_budget_min"
        )
        return np.corrcoef(np.log(w[1]), np.log(w[2]))[0, 1]

    r0 = r(simulate_study(**kw))
    r1 = r(simulate_study(**kw, nuisance={"period_share": 0.5}))
    # log N3 budget (simulate/__init__.py): participant SD 0.75, age term 0.25 x SD 1.2 = 0.3,
    # night SD 0.40 -> r = (0.5625 + 0.09) / (0.5625 + 0.09 + 0.16) = 0.80; with half the
    # participant variance period-specific -> (0.28 + 0.09) / 0.81 = 0.46 (hand count)
    assert r0 == pytest.approx(0.80, abs=0.06)
    assert r1 == pytest.approx(0.46, abs=0.08)


def test_unknown_nuisance_is_a_clear_error():
    with pytest.raises(InputError, match="Unknown nuisance"):
        simulate_study(seed=1, n_participants=8, nuisance={"carry": 1})
    with pytest.raises(InputError, match="period_share"):
        simulate_study(seed=1, n_participants=8, nuisance={"period_share": 1.5})


def test_cli_nuisance_v2_is_recorded_in_the_readme(tmp_path):
    out = tmp_path / "v2"
    argv = ["simulate", "--nuisance", "v2", "--clean", "--n", "8", "--seed", "3", "--out", str(out)]
    assert main(argv) == 0
    readme = (out / "README.md").read_text()
    assert "Design nuisances switched on" in readme and '"period_share": 0.3' in readme
