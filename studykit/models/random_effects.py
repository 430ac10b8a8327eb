"""Random effects: the one specification type, the model matrix ``Z`` and its factorization.

Every part of studykit that names random effects (the protocol, power analysis, the LMM and
GLMM engines) uses :class:`RandomEffect`. A term is lme4's ``(terms | group)``:
``RandomEffect("participant_id")`` is ``(1 | participant_id)``,
``RandomEffect("participant_id", ("1", "night_index"))`` a correlated random slope and
``RandomEffect("participant_id", ("1", "night_index"), correlated=False)`` lme4's
``(1 + night_index || participant_id)`` (independent intercept and slope).

:class:`ReStructure` holds ``Z`` and the map ``theta -> Lambda`` (lme4's relative covariance
factor) and factorizes the penalized cross-product ``Lambda' Z' W Z Lambda + I`` by block
elimination, keeping the cost near linear in the number of observations:

* one *anchor* grouping factor and every term nested in it (or grouped by it) form the
  block-diagonal part ``A``: one small dense block per anchor level (e.g. participant, holding
  the participant's intercept, slopes and participant x period effects), Cholesky-factorized
  all at once in one vectorized call;
* the remaining terms (crossed factors such as scorer, site or item) form a dense part ``B``
  whose Schur complement ``D - C' A^-1 C`` is factorized densely.

The anchor is the factor that minimises the estimated flop count, which for crossed designs
is the factor with the most levels: the cost is then ``O(n + G m^3 + G m q_B^2 + q_B^3)``
instead of the ``O(q^3)`` of a dense factorization (``G`` anchor levels with ``m`` effects
each, ``q_B`` effects in the dense part). This is the elimination order a fill-reducing
ordering gives lme4's CHOLMOD factor for these designs (nested levels first, the crossed
factor last).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import linalg, sparse
from threadpoolctl import ThreadpoolController

from studykit.errors import ModelError
from studykit.models.design import build_design, parse_term

__all__ = [
    "RandomEffect",
    "parse_random",
    "ReTerm",
    "ReStructure",
    "Cross",
    "Factor",
    "single_threaded_blas",
]

# A slope column whose standard deviation within every level of its group is below this
# (relative to its overall scale) does not vary within groups: its random slope is not
# identifiable (confounded with the random intercept).
SLOPE_VARIATION_RTOL = 1e-10
SCALE_FLOOR = 1e-300  # a slope column of zeros has this scale (no division by zero)
# The analytic gradient of a log determinant (ReStructure.logdet_gradient) divides by the
# diagonal of Lambda: below this |theta| its rounding error (~1e-16 / theta per level) grows
# past that of central differences, which the engines use instead.
LOGDET_GRAD_MIN_THETA = 1e-6


@dataclass(frozen=True)
class RandomEffect:
    """One random-effects term, ``(terms | group)`` (or ``||``) in lme4 notation.

    Parameters
    ----------
    group : str or sequence of str
        Grouping column, or columns joined by ``:`` for their interaction
        (``"participant_id:period"``); a tuple of columns is joined the same way.
    terms : tuple of str
        ``"1"`` for a random intercept, plus variables with random slopes. Without ``"1"``
        the term has no intercept (lme4's ``(0 + x | g)``).
    correlated : bool, default True
        All effects of the term share an unstructured covariance matrix (lme4's ``|``);
        ``False`` makes them independent (lme4's ``||``: one term per effect).

    Examples
    --------
    >>> RandomEffect("participant_id", ("1", "night_index")).label
    '(1 + night_index | participant_id)'
    >>> RandomEffect(("participant_id", "period")).label
    '(1 | participant_id:period)'
    >>> [r.label for r in RandomEffect("id", ("1", "x"), correlated=False).expand()]
    ['(1 | id)', '(0 + x | id)']
    """

    group: str
    terms: tuple[str, ...] = ("1",)
    correlated: bool = True

    def __post_init__(self) -> None:
        group: Any = self.group
        if isinstance(group, tuple | list) and group and all(isinstance(g, str) for g in group):
            group = ":".join(group)
        if not isinstance(group, str) or not group:
            raise ModelError(
                f"A random-effect group must be one column name (or columns joined by ':', "
                f"e.g. 'participant_id:period'); got {self.group!r}. For several grouping "
                "factors give several random-effect terms."
            )
        for g in group.split(":"):
            if not g.strip().isidentifier():
                raise ModelError(
                    f"Random-effect group {group!r}: {g!r} is not a column name "
                    "(letters, digits and underscores; join columns with ':')."
                )
        object.__setattr__(self, "group", ":".join(g.strip() for g in group.split(":")))
        raw = (self.terms,) if isinstance(self.terms, str) else self.terms
        terms = tuple(str(t).strip() for t in raw)
        if not terms:
            raise ModelError(f"Random effect for {group!r} has no terms; use ('1',).")
        for t in terms:
            if t not in ("1", "0"):
                parse_term(t)
        if "1" in terms and "0" in terms:
            raise ModelError(f"Random effect for {group!r} has both '1' and '0' among its terms.")
        if not [t for t in terms if t != "0"]:
            raise ModelError(f"Random effect for {group!r} has no effects (only '0').")
        object.__setattr__(self, "terms", terms)
        if not isinstance(self.correlated, bool | np.bool_):
            raise ModelError(f"'correlated' must be True or False; got {self.correlated!r}.")
        object.__setattr__(self, "correlated", bool(self.correlated))

    @property
    def groups(self) -> tuple[str, ...]:
        """The grouping columns, e.g. ``("participant_id", "period")``."""
        return tuple(self.group.split(":"))

    @property
    def group_name(self) -> str:
        """The grouping factor as ``a:b`` (same as :attr:`group`)."""
        return self.group

    @property
    def intercept(self) -> bool:
        """Whether the term has a random intercept."""
        return "1" in self.terms

    @property
    def slopes(self) -> tuple[str, ...]:
        """The variables with random slopes (terms other than ``"1"`` / ``"0"``)."""
        return tuple(t for t in self.terms if t not in ("0", "1"))

    @property
    def label(self) -> str:
        """lme4-style label, e.g. ``(1 + night_index | participant_id)``."""
        lhs = " + ".join(("0", *self.slopes) if not self.intercept else ("1", *self.slopes))
        bar = "|" if self.correlated or len(self.slopes) + self.intercept < 2 else "||"
        return f"({lhs} {bar} {self.group})"

    def lme4(self) -> str:
        """The term as lme4 writes it (same as :attr:`label`)."""
        return self.label

    def expand(self) -> list[RandomEffect]:
        """The correlated terms this term stands for: itself, or one per effect for ``||``."""
        if self.correlated or len(self.slopes) + self.intercept < 2:
            return [self]
        out = [RandomEffect(self.group, ("1",))] if self.intercept else []
        return out + [RandomEffect(self.group, ("0", s)) for s in self.slopes]


def parse_random(random: Any) -> list[RandomEffect]:
    """Normalize random-effect specifications to a list of :class:`RandomEffect`.

    Accepts a :class:`RandomEffect`, a group name (random intercept), a ``(group, terms)``
    pair, a mapping with keys ``group``, ``terms`` (optional) and ``correlated`` (optional),
    or a list of those.

    Examples
    --------
    >>> parse_random("id")
    [RandomEffect(group='id', terms=('1',), correlated=True)]
    >>> [r.label for r in parse_random([("id", ["1"]), ("id:period", ["1"])])]
    ['(1 | id)', '(1 | id:period)']
    >>> [r.label for r in parse_random({"group": "id", "terms": ["1", "x"], "correlated": False})]
    ['(1 + x || id)']
    """
    if random is None:
        raise ModelError("A mixed model needs at least one random effect, e.g. random='id'.")
    if isinstance(random, RandomEffect | str | Mapping) or (
        isinstance(random, tuple) and len(random) == 2 and isinstance(random[0], str)
    ):
        items = [random]
    elif isinstance(random, Sequence):
        items = list(random)
    else:
        raise ModelError(
            f"Cannot read random effects {random!r}; give RandomEffect(group, terms), a group "
            "name, a (group, [terms]) pair, or a list of those."
        )
    out: list[RandomEffect] = []
    for item in items:
        if isinstance(item, RandomEffect):
            out.append(item)
        elif isinstance(item, str):
            out.append(RandomEffect(item))
        elif isinstance(item, Mapping):
            unknown = set(item) - {"group", "terms", "correlated"}
            if "group" not in item or unknown:
                raise ModelError(
                    f"Random effect {dict(item)!r} needs a 'group' key (and optionally 'terms', "
                    f"'correlated'); unknown keys: {sorted(map(str, unknown))}."
                )
            terms = item.get("terms", ("1",))
            out.append(
                RandomEffect(
                    item["group"],
                    (terms,) if isinstance(terms, str) else tuple(terms),
                    item.get("correlated", True),
                )
            )
        elif isinstance(item, Sequence) and len(item) == 2:
            group, terms = item
            out.append(RandomEffect(group, (terms,) if isinstance(terms, str) else tuple(terms)))
        else:
            raise ModelError(
                f"Cannot read random effect {item!r}; give RandomEffect(group, terms), "
                "a group name, or a (group, [terms]) pair."
            )
    if not out:
        raise ModelError("A mixed model needs at least one random effect.")
    return out


def check_columns(data: pd.DataFrame, specs: Sequence[RandomEffect]) -> None:
    """Every grouping and slope column of the random effects must be in the data."""
    for r in specs:
        for c in r.groups:
            if c not in data.columns:
                raise ModelError(
                    f"Grouping column {c!r} of the random effect {r.label} is not in the data. "
                    f"Columns: {', '.join(map(str, data.columns[:30]))}."
                )
        for t in r.slopes:
            for v in parse_term(t):
                if v not in data.columns:
                    raise ModelError(
                        f"Random-slope variable {v!r} of {r.label} is not in the data. "
                        f"Columns: {', '.join(map(str, data.columns[:30]))}."
                    )


def random_columns(specs: Sequence[RandomEffect]) -> list[str]:
    """Every data column the random-effects terms use (slope variables, grouping columns)."""
    used: list[str] = []
    for r in specs:
        for t in r.slopes:
            used += list(parse_term(t))
        used += list(r.groups)
    return list(dict.fromkeys(used))


_THREADPOOLS: list[ThreadpoolController] = []


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block the mixed-model engines' linear algebra in one BLAS thread.

    Their matrices are small (blocks of a few rows, Schur complements of tens of rows); a
    multi-threaded OpenBLAS spends far longer waking threads than computing on them, and on a
    busy machine a 300 x 40 product then takes milliseconds instead of microseconds.
    """
    if not _THREADPOOLS:
        _THREADPOOLS.append(ThreadpoolController())
    with _THREADPOOLS[0].limit(limits=1, user_api="blas"):
        yield


# --------------------------------------------------------------------------------------------
# terms: codes and Z columns
# --------------------------------------------------------------------------------------------


@dataclass
class ReTerm:
    """One correlated random-effects term evaluated on the data."""

    spec: RandomEffect
    names: list[str]  # columns of the term's Z (lme4 names)
    q: int
    nlev: int
    level_names: list[str]
    codes: np.ndarray  # level index per observation
    Z: np.ndarray  # (n, q) values of the term's columns
    theta_start: int = 0  # index of the first theta of this term


def group_codes(
    data: pd.DataFrame,
    group: str,
    cache: dict[str, tuple[np.ndarray, list[str]]] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Level index per row and level labels of a (possibly interaction) grouping factor.

    ``cache`` keeps each column's codes for the next call (terms sharing a column, such as
    ``(1 | a) + (1 | a:b)``, factorize it once).
    """
    cols = [c.strip() for c in group.split(":")]
    for c in cols:
        if c not in data.columns:
            raise ModelError(
                f"Grouping variable {c!r} is not a column of the data. Columns: "
                f"{', '.join(map(str, data.columns[:30]))}."
            )
    codes = np.zeros(len(data), dtype=np.int64)
    names: list[str] = [""]
    cache = {} if cache is None else cache
    for i, c in enumerate(cols):
        if c not in cache:
            try:
                cc, uu = pd.factorize(data[c], sort=True)
            except TypeError as exc:
                raise ModelError(
                    f"Grouping variable {c!r} mixes value types that cannot be ordered (e.g. "
                    "numbers and text); store it as text."
                ) from exc
            if (cc < 0).any():
                raise ModelError(f"Grouping variable {c!r} has missing values in the model rows.")
            cache[c] = (cc.astype(np.int64), [str(u) for u in np.asarray(uu, dtype=object)])
        cc, labels = cache[c]
        if i == 0:  # factorize's codes are already 0 .. nlevels - 1, all present
            codes, names = cc, labels
            continue
        combined = codes * len(labels) + cc
        uniq, codes = np.unique(combined, return_inverse=True)
        names = [
            (names[u // len(labels)] + ":" if i else "") + labels[u % len(labels)] for u in uniq
        ]
    return codes.astype(np.int64).ravel(), names


def build_terms(
    data: pd.DataFrame,
    specs: Sequence[RandomEffect],
    levels: Mapping[str, Sequence[str]] | None,
) -> list[ReTerm]:
    """Evaluate random-effects terms on complete model rows, refusing unusable ones.

    Raises
    ------
    ModelError
        Unknown grouping column, a slope variable that does not vary within any level of its
        group, or a grouping factor with as many levels as observations.
    """
    n = len(data)
    terms: list[ReTerm] = []
    columns: dict[str, tuple[np.ndarray, list[str]]] = {}
    for spec in specs:
        for r in spec.expand():
            codes, names = group_codes(data, r.group, columns)
            nlev = len(names)
            if r.slopes:
                zd = build_design(data, list(r.slopes), levels=levels, intercept=r.intercept)
                z_names, Z = list(zd.columns), zd.X
                _check_slopes(Z, z_names, codes, nlev, r)
            else:
                z_names, Z = ["(Intercept)"], np.ones((n, 1))
            if nlev >= n:
                raise ModelError(
                    f"Grouping factor {r.group!r} has {nlev} levels for {n} observations: its "
                    "random effect cannot be told apart from the residual (lme4 refuses this too)."
                )
            terms.append(ReTerm(r, z_names, Z.shape[1], nlev, names, codes, Z))
    return terms


def _check_slopes(
    Z: np.ndarray, names: list[str], codes: np.ndarray, nlev: int, r: RandomEffect
) -> None:
    """A random slope needs its variable to vary within at least one level of the group."""
    counts = np.bincount(codes, minlength=nlev).astype(float)
    for j, name in enumerate(names):
        if name == "(Intercept)":
            continue
        z = Z[:, j]
        scale = max(float(np.max(np.abs(z))), SCALE_FLOOR)
        if np.ptp(z) <= SLOPE_VARIATION_RTOL * scale:
            raise ModelError(
                f"Random slope {name!r} in {r.label} has no variation (it is {z[0]:g} in every "
                "row), so its random effect is not identifiable. Remove it from the random terms."
            )
        if r.intercept:
            s1 = np.bincount(codes, weights=z, minlength=nlev)
            s2 = np.bincount(codes, weights=z * z, minlength=nlev)
            within = s2 - s1 * s1 / np.maximum(counts, 1.0)
            if np.all(within <= SLOPE_VARIATION_RTOL * scale**2 * np.maximum(counts, 1.0)):
                raise ModelError(
                    f"Random slope {name!r} in {r.label} does not vary within any level of "
                    f"{r.group!r}: it cannot be told apart from the random intercept. Remove the "
                    "slope, or group by a factor within which it varies."
                )


# --------------------------------------------------------------------------------------------
# structure and factorization
# --------------------------------------------------------------------------------------------


def _lower_pairs(q: int) -> list[tuple[int, int]]:
    """Lower-triangular (row, col) positions of a q x q factor, column by column (lme4)."""
    return [(i, j) for j in range(q) for i in range(j, q)]


@dataclass
class Cross:
    """Weighted cross-products ``[Z_A Z_B E]' W [Z_A Z_B E]`` in partitioned form."""

    AA: np.ndarray  # (G, m, m)
    AB: np.ndarray  # (G, m, qB)
    BB: np.ndarray  # (qB, qB)
    AE: np.ndarray  # (G, m, e)
    BE: np.ndarray  # (qB, e)
    EE: np.ndarray  # (e, e)


@dataclass
class Factor:
    """Cholesky factor of ``[[A, C], [C', D]]`` with ``A`` block diagonal (``G`` blocks)."""

    LA: np.ndarray  # (G, m, m) lower Cholesky factors of the A blocks
    CL: np.ndarray  # (G, m, d) LA^-1 C
    LS: np.ndarray  # (d, d) lower Cholesky factor of the Schur complement D - C' A^-1 C
    LAinv: np.ndarray  # (G, m, m) LA^-1 (lower triangular)

    def logdet_A(self) -> float:
        """``log |A|``."""
        return 2.0 * float(np.sum(np.log(np.diagonal(self.LA, axis1=1, axis2=2))))

    def logdet_S(self, k: int | None = None) -> float:
        """``log`` of the determinant of the leading ``k`` rows of the Schur complement."""
        d = np.diag(self.LS)[: (len(self.LS) if k is None else k)]
        return 2.0 * float(np.sum(np.log(d)))

    def solve(self, rA: np.ndarray, rB: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Solve the full system for right-hand sides ``rA`` (G, m) and ``rB`` (d,)."""
        m = self.LA.shape[1]
        if m == 1:
            yA = rA / self.LA[:, :, 0]
        else:
            yA = np.linalg.solve(self.LA, rA[:, :, None])[:, :, 0]
        d = self.LS.shape[0]
        if d:
            t = rB - np.einsum("gmd,gm->d", self.CL, yA)
            yB = _tri_solve(self.LS, t, lower=True)
            xB = _tri_solve(self.LS.T, yB, lower=False)
            yA = yA - np.einsum("gmd,d->gm", self.CL, xB)
        else:
            xB = rB
        if m == 1:
            xA = yA / self.LA[:, :, 0]
        else:
            xA = np.linalg.solve(np.swapaxes(self.LA, 1, 2), yA[:, :, None])[:, :, 0]
        return xA, xB


def _tri_solve(L: np.ndarray, b: np.ndarray, *, lower: bool) -> np.ndarray:
    return np.asarray(linalg.solve_triangular(L, b, lower=lower, check_finite=False))


def tril_inverse(L: np.ndarray) -> np.ndarray:
    """Inverses of a stack ``(G, m, m)`` of lower-triangular matrices (forward substitution).

    Row by row for all ``G`` matrices at once: ``m`` small vectorized steps, which for the
    engines' blocks (a few rows, many blocks) is several times faster than numpy's batched
    ``inv`` / ``solve`` (one LAPACK call with copies per matrix).

    Examples
    --------
    >>> L = np.array([[[2.0, 0.0], [1.0, 4.0]]])
    >>> tril_inverse(L) @ L
    array([[[1., 0.],
            [0., 1.]]])
    """
    m = L.shape[-1]
    X = np.zeros_like(L)
    dinv = 1.0 / np.diagonal(L, axis1=-2, axis2=-1)
    X[..., 0, 0] = dinv[..., 0]
    for i in range(1, m):
        X[..., i, :i] = -(L[..., i : i + 1, :i] @ X[..., :i, :i])[..., 0, :] * dinv[..., i, None]
        X[..., i, i] = dinv[..., i]
    return X


class ReStructure:
    """``Z`` in partitioned form and the map ``theta -> Lambda`` for a list of terms.

    Observations are kept in their original order; ``block`` gives each observation's anchor
    level (its block of ``A``) and ``zA`` its values in the block's ``m`` columns; ``bcols``
    and ``bvals`` its (few) nonzero columns of ``Z_B``.
    """

    def __init__(self, terms: list[ReTerm], n: int):
        self.terms = terms
        self.n = n
        # ---- theta layout (term by term, lower triangle column by column, as lme4)
        nth = 0
        lower: list[float] = []
        for t in terms:
            t.theta_start = nth
            pairs = _lower_pairs(t.q)
            lower += [0.0 if i == j else -np.inf for i, j in pairs]
            nth += len(pairs)
        self.ntheta = nth
        self.lower = np.array(lower)
        self.theta0 = np.where(np.isfinite(self.lower), 1.0, 0.0)
        # column of theta's diagonal element -> off-diagonal thetas of the same column
        self.col_offdiag: dict[int, list[int]] = {}
        for t in terms:
            pairs = _lower_pairs(t.q)
            for kk, (i, j) in enumerate(pairs):
                if i == j:
                    self.col_offdiag[t.theta_start + kk] = [
                        t.theta_start + k2
                        for k2, (i2, j2) in enumerate(pairs)
                        if j2 == j and i2 > j
                    ]
        # ---- partition: anchor term + terms nested in it -> A; the rest -> B
        self.a_terms, self.b_terms = self._partition()
        self._build_A()
        self._build_B()

    # ---------------------------------------------------------------- partition
    def _partition(self) -> tuple[list[int], list[int]]:
        terms = self.terms
        best: tuple[float, list[int], list[int]] | None = None
        for a, ta in enumerate(terms):
            # k is nested in a when each level of k lies in one level of a; then the levels
            # of k per level of a are counted through k's level -> a's level map
            per_level = {a: np.ones(ta.nlev, dtype=np.int64)}
            for k, tk in enumerate(terms):
                if k == a:
                    continue
                parent = np.empty(tk.nlev, dtype=np.int64)
                parent[tk.codes] = ta.codes
                if np.array_equal(parent[tk.codes], ta.codes):
                    per_level[k] = np.bincount(parent, minlength=ta.nlev)
            A = [a] + [k for k in per_level if k != a]
            B = [k for k in range(len(terms)) if k not in per_level]
            G = ta.nlev
            m = 0
            for k in A:
                m += terms[k].q * int(per_level[k].max())
            qB = sum(terms[k].q * terms[k].nlev for k in B)
            cost = G * (m**3 + m * m) + G * m * qB * qB + qB**3 + self.n * (m + 1) ** 2
            if best is None or cost < best[0]:
                best = (cost, A, B)
        assert best is not None
        return best[1], best[2]

    def _build_A(self) -> None:
        terms, n = self.terms, self.n
        anchor = terms[self.a_terms[0]]
        self.G = anchor.nlev
        block = anchor.codes
        self.block = block
        self.a_offsets: list[int] = []
        self.a_slots: list[np.ndarray] = []  # per A term: slot of each level within its block
        self.level_block: list[np.ndarray] = []
        m = 0
        for k in self.a_terms:
            t = terms[k]
            lev_block = np.zeros(t.nlev, dtype=np.int64)
            lev_block[t.codes] = block
            order = np.lexsort((np.arange(t.nlev), lev_block))
            sorted_b = lev_block[order]
            starts = np.r_[0, np.flatnonzero(np.diff(sorted_b)) + 1]
            counts = np.diff(np.r_[starts, t.nlev])
            rank = np.empty(t.nlev, dtype=np.int64)
            rank[order] = np.arange(t.nlev) - np.repeat(starts, counts)
            self.a_offsets.append(m)
            self.a_slots.append(rank)
            self.level_block.append(lev_block)
            m += t.q * (int(rank.max()) + 1)
        self.m = m
        zA = np.zeros((n, m))
        rows = np.arange(n)
        for k, off, rank in zip(self.a_terms, self.a_offsets, self.a_slots, strict=True):
            t = terms[k]
            base = off + rank[t.codes] * t.q
            for j in range(t.q):
                zA[rows, base + j] = t.Z[:, j]
        self.zA = zA
        # Lambda_A (m x m, the same for every block)
        rows_l, cols_l, tidx = [], [], []
        for k, off, rank in zip(self.a_terms, self.a_offsets, self.a_slots, strict=True):
            t = terms[k]
            for s in range(int(rank.max()) + 1):
                base = off + s * t.q
                for kk, (i, j) in enumerate(_lower_pairs(t.q)):
                    rows_l.append(base + i)
                    cols_l.append(base + j)
                    tidx.append(t.theta_start + kk)
        self.lamA_diagonal = all(terms[k].q == 1 for k in self.a_terms)
        self.lamA_rows = np.array(rows_l, dtype=np.int64)
        self.lamA_cols = np.array(cols_l, dtype=np.int64)
        self.lamA_tidx = np.array(tidx, dtype=np.int64)
        # observations sorted by block (for reduceat sums)
        self.order = np.argsort(block, kind="stable")
        bs = block[self.order]
        self.starts = np.r_[0, np.flatnonzero(np.diff(bs)) + 1]

    def _build_B(self) -> None:
        terms, n = self.terms, self.n
        self.b_offsets: list[int] = []
        qB = 0
        cols, vals = [], []
        for k in self.b_terms:
            t = terms[k]
            self.b_offsets.append(qB)
            for j in range(t.q):
                cols.append(qB + t.codes * t.q + j)
                vals.append(t.Z[:, j])
            qB += t.q * t.nlev
        self.qB = qB
        self.b_scalar = all(terms[k].q == 1 for k in self.b_terms)
        self.b_theta_index = np.concatenate(
            [np.full(terms[k].nlev, terms[k].theta_start) for k in self.b_terms]
            or [np.zeros(0, dtype=np.int64)]
        ).astype(np.int64)
        self.bcols = np.column_stack(cols) if cols else np.zeros((n, 0), dtype=np.int64)
        self.bvals = np.column_stack(vals) if vals else np.zeros((n, 0))
        # Lambda_B's nonzero entries (row, column, theta index), every level of every term
        rows_b: list[np.ndarray] = []
        cols_b: list[np.ndarray] = []
        tidx_b: list[np.ndarray] = []
        for k, off in zip(self.b_terms, self.b_offsets, strict=True):
            t = terms[k]
            base = off + np.arange(t.nlev) * t.q
            for kk, (i, j) in enumerate(_lower_pairs(t.q)):
                rows_b.append(base + i)
                cols_b.append(base + j)
                tidx_b.append(np.full(t.nlev, t.theta_start + kk))
        empty = np.zeros(0, dtype=np.int64)
        self.lamB_rows = np.concatenate(rows_b).astype(np.int64) if rows_b else empty
        self.lamB_cols = np.concatenate(cols_b).astype(np.int64) if cols_b else empty
        self.lamB_tidx = np.concatenate(tidx_b).astype(np.int64) if tidx_b else empty

    # ---------------------------------------------------------------- Lambda
    def lam_A(self, theta: np.ndarray) -> np.ndarray:
        """The ``m x m`` factor of one block of ``Lambda_A``."""
        L = np.zeros((self.m, self.m))
        L[self.lamA_rows, self.lamA_cols] = theta[self.lamA_tidx]
        return L

    def term_factor(self, t: ReTerm, theta: np.ndarray) -> np.ndarray:
        """The term's ``q x q`` lower-triangular relative covariance factor."""
        T = np.zeros((t.q, t.q))
        for kk, (i, j) in enumerate(_lower_pairs(t.q)):
            T[i, j] = theta[t.theta_start + kk]
        return T

    def lam_B_right(self, M: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """``M @ Lambda_B`` for ``M`` with ``q_B`` columns (last axis)."""
        if self.b_scalar:  # every dense term is scalar: Lambda_B is diagonal
            return M * theta[self.b_theta_index]
        out = np.empty_like(M)
        for k, off in zip(self.b_terms, self.b_offsets, strict=True):
            t = self.terms[k]
            T = self.term_factor(t, theta)
            sl = M[..., off : off + t.q * t.nlev]
            shp = sl.shape[:-1] + (t.nlev, t.q)
            out[..., off : off + t.q * t.nlev] = (sl.reshape(shp) @ T).reshape(sl.shape)
        return out

    def lam_B_left_t(self, v: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """``Lambda_B' v`` for a vector or ``(q_B, k)`` matrix ``v``."""
        if v.ndim == 1:
            return self.lam_B_right(v[None, :], theta)[0]
        return self.lam_B_right(v.T, theta).T

    # ---------------------------------------------------------------- derivatives in theta
    def lam_derivative_forms(
        self, aA: np.ndarray, aB: np.ndarray, bA: np.ndarray, bB: np.ndarray
    ) -> np.ndarray:
        """``a' (d Lambda / d theta_k) b`` for every ``k``, ``a`` and ``b`` in partitioned form.

        ``Lambda`` is linear in ``theta`` with 0/1 derivatives at its nonzero entries, so each
        form is a sum of products over the entries that hold ``theta_k``.
        """
        K = self.ntheta
        prod = np.sum(aA[:, self.lamA_rows] * bA[:, self.lamA_cols], axis=0)
        out = np.bincount(self.lamA_tidx, weights=prod, minlength=K)
        if self.qB:
            prod_b = aB[self.lamB_rows] * bB[self.lamB_cols]
            out = out + np.bincount(self.lamB_tidx, weights=prod_b, minlength=K)
        return out

    def lam_inv_t_times(
        self, uA: np.ndarray, uB: np.ndarray, theta: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``Lambda'^-1 u`` in partitioned form (``Lambda`` invertible: no diagonal theta 0)."""
        if self.lamA_diagonal:
            aA = uA / np.diag(self.lam_A(theta))
        else:
            aA = uA @ linalg.lapack.dtrtri(self.lam_A(theta), lower=1)[0]
        if not self.qB:
            return aA, uB
        if self.b_scalar:
            return aA, uB / theta[self.b_theta_index]
        aB = np.empty_like(uB)
        for k, off in zip(self.b_terms, self.b_offsets, strict=True):
            t = self.terms[k]
            Tinv = linalg.lapack.dtrtri(self.term_factor(t, theta), lower=1)[0]
            sl = uB[off : off + t.q * t.nlev].reshape(t.nlev, t.q)
            aB[off : off + t.q * t.nlev] = (sl @ Tinv).ravel()
        return aA, aB

    def logdet_gradient(self, theta: np.ndarray, F: Factor, LSinv: np.ndarray) -> np.ndarray | None:
        """Gradient in ``theta`` of ``log |Omega_s|``, the leading part of a factored matrix.

        ``Omega_s`` is the part of the matrix :meth:`factor` factorized made of the blocks of
        ``A`` and the first ``s`` rows of the dense part (``s = len(LSinv)``, the inverse of
        the leading ``s x s`` block of ``F.LS``): the random effects, and, for REML, the
        fixed effects. Writing ``Omega_s = Lt' M Lt + P`` (``Lt = diag(Lambda, I)``, ``P``
        the identity on the random effects), ``d log|Omega_s| = 2 tr(Omega_s^-1 Lt' M dLt)``
        and ``Omega_s^-1 Lt' M = (I - Omega_s^-1 P) Lt^-1``, so the gradient needs only the
        within-level diagonal blocks of ``Omega_s^-1`` (a selected inverse from the block
        factor) and ``Lambda^-1`` (per term ``T^-1``): ``d/d theta_k = 2 sum over levels of
        [(I - Omega^-1_level) T^-1]_(j, i)`` for ``theta_k = T[i, j]``.

        Returns None when a diagonal theta is below :data:`LOGDET_GRAD_MIN_THETA` in
        absolute value (``Lambda`` (nearly) singular); callers use finite differences there.
        """
        if np.any(np.abs(theta[np.isfinite(self.lower)]) < LOGDET_GRAD_MIN_THETA):
            return None
        K = self.ntheta
        s = LSinv.shape[0]
        G, m = F.LAinv.shape[:2]
        qB = self.qB
        # within-block inverse of the A part: A_g^-1 + (A_g^-1 C_g) S^-1 (A_g^-1 C_g)'
        LV = np.swapaxes(F.LAinv, 1, 2) @ (F.CL[:, :, :s] @ LSinv.T)  # (G, m, s)
        LamA = self.lam_A(theta)
        out = np.zeros(K)
        if self.lamA_diagonal:
            b_sum = np.einsum("gij,gij->j", F.LAinv, F.LAinv) + np.einsum("gis,gis->i", LV, LV)
            yA = (G - b_sum) / np.diag(LamA)  # sum over blocks of [(I - B_g) Lambda_A^-1]_cc
            out += np.bincount(self.lamA_tidx, weights=yA[self.lamA_cols], minlength=K)
        else:
            LAi = F.LAinv.reshape(G * m, m)
            LVt = np.swapaxes(LV, 0, 1).reshape(m, G * s)
            B_sum = LAi.T @ LAi + LVt @ LVt.T
            LamA_inv = linalg.lapack.dtrtri(LamA, lower=1)[0]
            Y = (G * np.eye(m) - B_sum) @ LamA_inv
            out += np.bincount(
                self.lamA_tidx, weights=Y[self.lamA_cols, self.lamA_rows], minlength=K
            )
        if qB:
            LSb = LSinv[:, :qB]
            if self.b_scalar:
                yB = (1.0 - np.sum(LSb * LSb, axis=0)) / theta[self.b_theta_index]
                out += np.bincount(self.lamB_tidx, weights=yB[self.lamB_cols], minlength=K)
            else:
                Sbb = LSb.T @ LSb
                for k, off in zip(self.b_terms, self.b_offsets, strict=True):
                    t = self.terms[k]
                    idx = off + np.arange(t.nlev)[:, None] * t.q + np.arange(t.q)[None, :]
                    blocks = Sbb[idx[:, :, None], idx[:, None, :]]  # (nlev, q, q)
                    T = self.term_factor(t, theta)
                    Tinv = linalg.lapack.dtrtri(T, lower=1)[0]
                    Y = (t.nlev * np.eye(t.q) - blocks.sum(axis=0)) @ Tinv
                    for kk, (i, j) in enumerate(_lower_pairs(t.q)):
                        out[t.theta_start + kk] += Y[j, i]
        return 2.0 * out

    # ---------------------------------------------------------------- products with Z
    def z_times(self, bA: np.ndarray, bB: np.ndarray) -> np.ndarray:
        """``Z b`` for ``b`` in partitioned form (``bA`` (G, m), ``bB`` (q_B,))."""
        out = np.einsum("nm,nm->n", self.zA, bA[self.block])
        if self.qB:
            out = out + np.sum(self.bvals * bB[self.bcols], axis=1)
        return out

    def zt_times(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``Z' v`` in partitioned form for a vector ``v`` of length n."""
        tA = np.add.reduceat((self.zA * v[:, None])[self.order], self.starts, axis=0)
        tB: np.ndarray = np.zeros(self.qB)
        if self.qB:
            tB = np.bincount(
                self.bcols.ravel(), weights=(self.bvals * v[:, None]).ravel(), minlength=self.qB
            )
        return tA, tB

    def cross(self, w: np.ndarray | None, E: np.ndarray | None = None) -> Cross:
        """Weighted cross-products of ``[Z_A, Z_B, E]`` (weights ``w``, default 1)."""
        n, m, qB, G = self.n, self.m, self.qB, self.G
        e = 0 if E is None else E.shape[1]
        ww = np.ones(n) if w is None else w
        zw = self.zA * ww[:, None]
        Ee = np.zeros((n, 0)) if E is None else E
        feats = np.concatenate(
            [(zw[:, :, None] * self.zA[:, None, :]).reshape(n, m * m),
             (zw[:, :, None] * Ee[:, None, :]).reshape(n, m * e)],
            axis=1,
        )  # fmt: skip
        sums = np.add.reduceat(feats[self.order], self.starts, axis=0)
        AA = sums[:, : m * m].reshape(G, m, m)
        AE = sums[:, m * m :].reshape(G, m, e)
        nb = self.bcols.shape[1]
        AB: np.ndarray
        BB: np.ndarray
        if qB:
            bw = self.bvals * ww[:, None]
            # A x B: per observation, its block's m columns times its few B columns
            idx = (self.block[:, None, None] * m + np.arange(m)[None, :, None]) * qB + self.bcols[
                :, None, :
            ]
            AB = np.bincount(
                idx.ravel(),
                weights=(self.zA[:, :, None] * bw[:, None, :]).ravel(),
                minlength=G * m * qB,
            ).reshape(G, m, qB)
            idx2 = self.bcols[:, :, None] * qB + self.bcols[:, None, :]
            BB = np.bincount(
                idx2.ravel(),
                weights=(bw[:, :, None] * self.bvals[:, None, :]).ravel(),
                minlength=qB * qB,
            ).reshape(qB, qB)
            BE = np.zeros((qB, e))
            for j in range(nb):
                np.add.at(BE, self.bcols[:, j], bw[:, j : j + 1] * Ee)
        else:
            AB = np.zeros((G, m, 0))
            BB = np.zeros((0, 0))
            BE = np.zeros((0, e))
        EE = Ee.T @ (Ee * ww[:, None])
        return Cross(AA, AB, BB, AE, BE, EE)

    # ---------------------------------------------------------------- factorization
    def factor(self, theta: np.ndarray, cr: Cross, *, n_penalized: int | None = None) -> Factor:
        """Factorize ``[Lambda' Z' W Z Lambda + I, Lambda' Z' W E; ., E' W E]``.

        The identity is added to the random-effects rows only (the first ``q_B`` rows of the
        dense part); the ``E`` columns (fixed effects and response in an LMM) are not
        penalized.

        Raises
        ------
        numpy.linalg.LinAlgError
            The dense Schur complement is not positive definite (e.g. collinear ``E``).
        """
        m, qB = self.m, self.qB
        LamA = self.lam_A(theta)
        if m == 1:
            lam = LamA[0, 0]
            A = 1.0 + lam * lam * cr.AA
            LA = np.sqrt(A)
            LAinv = 1.0 / LA
            CB = lam * self.lam_B_right(cr.AB, theta) if qB else cr.AB
            CE = lam * cr.AE
            C = np.concatenate([CB, CE], axis=2)
            CL = C * LAinv
        else:
            if self.lamA_diagonal:  # scalar terms only: Lambda_A is diagonal
                lam = np.diag(LamA)
                A = cr.AA * np.outer(lam, lam)[None]
            else:
                A = LamA.T[None] @ cr.AA @ LamA[None]
            A[:, np.arange(m), np.arange(m)] += 1.0
            LA = np.linalg.cholesky(A)
            if self.lamA_diagonal:
                CB = lam[None, :, None] * self.lam_B_right(cr.AB, theta) if qB else cr.AB
                CE = lam[None, :, None] * cr.AE
            else:
                CB = LamA.T[None] @ self.lam_B_right(cr.AB, theta) if qB else cr.AB
                CE = LamA.T[None] @ cr.AE
            C = np.concatenate([CB, CE], axis=2)
            LAinv = tril_inverse(LA)
            CL = LAinv @ C
        e = cr.EE.shape[0]
        d = qB + e
        D = np.empty((d, d))
        if qB:
            BBl = self.lam_B_right(cr.BB, theta)
            D[:qB, :qB] = self.lam_B_left_t(BBl, theta)
            D[:qB, :qB][np.diag_indices(qB)] += 1.0
            BEl = self.lam_B_left_t(cr.BE, theta)
            D[:qB, qB:] = BEl
            D[qB:, :qB] = BEl.T
        D[qB:, qB:] = cr.EE
        G = CL.shape[0]
        flat = CL.reshape(G * m, d)
        S = D - flat.T @ flat
        LS = np.linalg.cholesky(0.5 * (S + S.T)) if d else np.zeros((0, 0))
        return Factor(LA, CL, LS, LAinv)

    def unsort_levels(self, bA: np.ndarray, bB: np.ndarray) -> list[np.ndarray]:
        """Per term, its random effects as an ``(nlev, q)`` array (spherical or not)."""
        out: list[np.ndarray] = [np.empty(0)] * len(self.terms)
        for k, off, rank, lb in zip(
            self.a_terms, self.a_offsets, self.a_slots, self.level_block, strict=True
        ):
            t = self.terms[k]
            cols = off + rank[:, None] * t.q + np.arange(t.q)[None, :]
            out[k] = bA[lb[:, None], cols]
        for k, off in zip(self.b_terms, self.b_offsets, strict=True):
            t = self.terms[k]
            out[k] = bB[off : off + t.q * t.nlev].reshape(t.nlev, t.q)
        return out

    def lam_times(
        self, uA: np.ndarray, uB: np.ndarray, theta: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``Lambda u`` in partitioned form."""
        return uA @ self.lam_A(theta).T, self._lam_B_times(uB, theta)

    def _lam_B_times(self, uB: np.ndarray, theta: np.ndarray) -> np.ndarray:
        if self.b_scalar:
            return uB * theta[self.b_theta_index]
        out = np.empty_like(uB)
        for k, off in zip(self.b_terms, self.b_offsets, strict=True):
            t = self.terms[k]
            T = self.term_factor(t, theta)
            sl = uB[off : off + t.q * t.nlev].reshape(t.nlev, t.q)
            out[off : off + t.q * t.nlev] = (sl @ T.T).ravel()
        return out

    # ---------------------------------------------------------------- full sparse forms
    def _columns(self, k: int) -> np.ndarray:
        """Full-Z column of every (level, effect) of term ``k``: an ``(nlev, q)`` array."""
        t = self.terms[k]
        if k in self.a_terms:
            i = self.a_terms.index(k)
            off, rank, lb = self.a_offsets[i], self.a_slots[i], self.level_block[i]
            return lb[:, None] * self.m + off + rank[:, None] * t.q + np.arange(t.q)[None, :]
        off = self.b_offsets[self.b_terms.index(k)]
        return self.G * self.m + off + np.arange(t.nlev * t.q).reshape(t.nlev, t.q)

    def z_sparse(self) -> sparse.csr_matrix:
        """``Z`` as an ``n x q`` sparse matrix (columns: the blocks of ``A``, then ``B``)."""
        rows, cols, vals = [], [], []
        for k, t in enumerate(self.terms):
            cmap = self._columns(k)
            for j in range(t.q):
                rows.append(np.arange(self.n))
                cols.append(cmap[t.codes, j])
                vals.append(t.Z[:, j])
        q = self.G * self.m + self.qB
        return sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(self.n, q)
        )

    def lam_sparse(self, theta: np.ndarray) -> sparse.csr_matrix:
        """``Lambda`` as a ``q x q`` sparse matrix in the column order of :meth:`z_sparse`."""
        rows, cols, vals = [], [], []
        for k, t in enumerate(self.terms):
            cmap = self._columns(k)
            for kk, (i, j) in enumerate(_lower_pairs(t.q)):
                rows.append(cmap[:, i])
                cols.append(cmap[:, j])
                vals.append(np.full(t.nlev, theta[t.theta_start + kk]))
        q = self.G * self.m + self.qB
        return sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(q, q)
        )

    def cov_patterns(self) -> list[sparse.csr_matrix]:
        """One symmetric 0/1 pattern per covariance parameter (lower elements, term by term)."""
        q = self.G * self.m + self.qB
        out = []
        for k, t in enumerate(self.terms):
            cmap = self._columns(k)
            for i, j in _lower_pairs(t.q):
                r = np.r_[cmap[:, i], cmap[:, j]] if i != j else cmap[:, i]
                c = np.r_[cmap[:, j], cmap[:, i]] if i != j else cmap[:, i]
                out.append(sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(q, q)))
        return out

    def varcorr_rows(self, theta: np.ndarray, sigma2: float) -> list[tuple[Any, ...]]:
        """lme4's ``as.data.frame(VarCorr(fit))`` rows (without the residual)."""
        rows: list[tuple[Any, ...]] = []
        for t in self.terms:
            T = self.term_factor(t, theta)
            C = sigma2 * T @ T.T
            sd = np.sqrt(np.diag(C))
            for i in range(t.q):
                rows.append((t.spec.group, t.names[i], None, C[i, i], sd[i]))
            for j in range(t.q):
                for i in range(j + 1, t.q):
                    cor = C[i, j] / (sd[i] * sd[j]) if sd[i] > 0 and sd[j] > 0 else float("nan")
                    rows.append((t.spec.group, t.names[j], t.names[i], C[i, j], cor))
        return rows
