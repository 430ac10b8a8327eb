"""lme4 model formulas, parsed by a grammar and never evaluated.

``parse_formula("Reaction ~ Days + (Days | Subject)")`` reads the formula into plain data: the
response, the fixed-effect terms (lme4 / R names such as ``"treatment:day"``), whether there is
an intercept, the random-effects terms (:class:`~studykit.models.lmm.RandomEffect`) and the
offsets. :func:`model_frame` then binds a parsed formula to a data frame: it decides which
variables are factors (as R does), their levels (reference first) and which rows are complete.
The front doors :func:`studykit.models.api.lmer`, ``glmer`` and ``clmm`` fit the result with the
engine.

The grammar (R's formula operators, by increasing precedence)::

    formula  := response "~" sum
    sum      := ["-"] product (("+" | "-") product)*
    product  := inter (("*" | "/") inter)*
    inter    := power (":" power)*
    power    := atom ["^" INTEGER]
    atom     := NAME | "0" | "1" | "(" sum ")" | "(" sum ("|" | "||") group ")"
              | offset(transform) | cbind(arg, arg)      (response: also a transform)
    transform:= NAME | log(NAME) | log2(NAME) | log10(NAME) | log1p(NAME) | exp(NAME) | sqrt(NAME)

A formula is only ever tokenized and parsed: any other character, a string literal, a
subscript, attribute access (``x.y``), a keyword such as ``lambda`` or ``import``, a dunder name,
or a call of any function other than those listed is refused with a
:class:`~studykit.errors.FormulaError` that names the offending text and its position.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from studykit.errors import FormulaError
from studykit.models.random_effects import RandomEffect

__all__ = [
    "Transform",
    "Response",
    "Bar",
    "ParsedFormula",
    "ModelFrame",
    "parse_formula",
    "model_frame",
    "factor_levels",
]

MAX_LENGTH = 10_000
MAX_DEPTH = 64
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "log": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "log1p": np.log1p,
    "exp": np.exp,
    "sqrt": np.sqrt,
}
_KEYWORDS = frozenset(keyword.kwlist)

# ------------------------------------------------------------------------------------------
# tokens
# ------------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<bquote>`[^`\n]*`)
  | (?P<number>[0-9]+(?:\.[0-9]+)?)
  | (?P<op>\|\||[~+\-*/:^|(),])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # "name", "number", "op", "end"
    text: str
    pos: int


def _refuse(text: str, pos: int, why: str) -> FormulaError:
    pointer = f"{text}\n{' ' * pos}^"
    return FormulaError(f"Formula refused at position {pos}: {why}.\n{pointer}")


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            if ch in "'\"":
                why = "string literals are not allowed (a formula names columns, it holds no code)"
            elif ch in "[]":
                why = "subscripts ('[') are not allowed in a formula"
            elif ch == ".":
                why = (
                    "'.' is not allowed: no attribute access, and no R-style dotted names or '.' "
                    "for 'all columns' (rename the column to letters, digits and underscores)"
                )
            elif ch in "=;@!&<>{}%$#\\":
                why = f"{ch!r} is not a formula operator (allowed: ~ + - * / : ^ | || ( ) ,)"
            else:
                why = f"unexpected character {ch!r}"
            raise _refuse(text, pos, why)
        kind = m.lastgroup or ""
        if kind == "ws":
            pos = m.end()
            continue
        value = m.group()
        if kind == "bquote":
            kind, value = "name", value[1:-1]
            if not value.isidentifier() or not value.isascii():
                raise _refuse(
                    text,
                    pos,
                    f"`{value}` is not a column name the models accept (letters, digits and "
                    "underscores; backquotes are for names that are Python keywords)",
                )
        elif value in _KEYWORDS:
            raise _refuse(
                text,
                pos,
                f"{value!r} is a Python keyword; formulas hold no code (a column with this "
                f"name can be written `{value}`)",
            )
        if kind == "name" and (value.startswith("__") or value.endswith("__")):
            raise _refuse(text, pos, f"dunder names such as {value!r} are not allowed")
        elif kind == "number":
            nxt = text[m.end() : m.end() + 1]
            if nxt and (nxt.isalpha() or nxt == "_"):
                raise _refuse(text, pos, f"a name cannot start with a digit ({value}{nxt}...)")
        toks.append(_Tok(kind, value, pos))
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


# ------------------------------------------------------------------------------------------
# syntax tree
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Node:
    kind: str  # name, num, bin, neg, call, bar, paren
    pos: int
    value: str = ""
    args: tuple[_Node, ...] = ()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    # -- helpers
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, op: str) -> _Tok:
        tok = self.take()
        if tok.kind != "op" or tok.text != op:
            found = "the end of the formula" if tok.kind == "end" else repr(tok.text)
            raise _refuse(self.text, tok.pos, f"expected {op!r}, found {found}")
        return tok

    def at(self, *ops: str) -> bool:
        tok = self.peek()
        return tok.kind == "op" and tok.text in ops

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _refuse(self.text, pos, f"nesting deeper than {MAX_DEPTH} levels")

    # -- grammar
    def formula(self) -> tuple[_Node, _Node]:
        if self.at("~"):
            raise _refuse(self.text, self.peek().pos, "the formula needs a response before '~'")
        lhs = self.sum()
        self.expect("~")
        rhs = self.sum()
        tok = self.peek()
        if tok.kind != "end":
            raise _refuse(self.text, tok.pos, f"unexpected {tok.text!r}")
        return lhs, rhs

    def sum(self) -> _Node:
        if self.at("-"):
            tok = self.take()
            node = _Node("neg", tok.pos, args=(self.product(),))
        else:
            node = self.product()
        while self.at("+", "-"):
            tok = self.take()
            node = _Node("bin", tok.pos, tok.text, (node, self.product()))
        return node

    def product(self) -> _Node:
        node = self.inter()
        while self.at("*", "/"):
            tok = self.take()
            node = _Node("bin", tok.pos, tok.text, (node, self.inter()))
        return node

    def inter(self) -> _Node:
        node = self.power()
        while self.at(":"):
            tok = self.take()
            node = _Node("bin", tok.pos, ":", (node, self.power()))
        return node

    def power(self) -> _Node:
        node = self.atom()
        if self.at("^"):
            tok = self.take()
            exp = self.take()
            if exp.kind != "number" or not exp.text.isdigit() or int(exp.text) < 1:
                raise _refuse(
                    self.text, exp.pos, "'^' takes a positive whole number, e.g. (a + b)^2"
                )
            node = _Node("bin", tok.pos, "^", (node, _Node("num", exp.pos, exp.text)))
        return node

    def atom(self) -> _Node:
        tok = self.take()
        if tok.kind == "name":
            if self.at("("):
                return self.call(tok)
            return _Node("name", tok.pos, tok.text)
        if tok.kind == "number":
            return _Node("num", tok.pos, tok.text)
        if tok.kind == "op" and tok.text == "(":
            self.enter(tok.pos)
            inner = self.sum()
            if self.at("|", "||"):
                bar = self.take()
                group = self.sum()
                self.expect(")")
                self.depth -= 1
                return _Node("bar", tok.pos, bar.text, (inner, group))
            self.expect(")")
            self.depth -= 1
            return _Node("paren", tok.pos, args=(inner,))
        found = "the end of the formula" if tok.kind == "end" else repr(tok.text)
        raise _refuse(self.text, tok.pos, f"expected a variable name, 0/1 or '(', found {found}")

    def call(self, name: _Tok) -> _Node:
        fn = name.text
        if fn not in ("offset", "cbind", *TRANSFORMS):
            hint = ""
            if fn in ("factor", "as.factor", "C", "relevel"):
                hint = "; declare factors and their reference level with levels={...} instead"
            elif fn in ("I", "poly", "ns", "bs", "scale"):
                hint = "; compute the transformed column in the data frame first"
            raise _refuse(
                self.text,
                name.pos,
                f"calls of {fn!r} are not allowed (allowed: offset(), cbind(), and "
                f"{', '.join(sorted(TRANSFORMS))} of a column){hint}",
            )
        open_ = self.expect("(")
        self.enter(open_.pos)
        args = [self.sum()]
        while self.at(","):
            self.take()
            args.append(self.sum())
        self.expect(")")
        self.depth -= 1
        return _Node("call", name.pos, fn, tuple(args))


# ------------------------------------------------------------------------------------------
# parsed formula
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Transform:
    """A column, optionally transformed: ``t`` or ``log(t)``.

    Examples
    --------
    >>> Transform("t", "log").label
    'log(t)'
    """

    column: str
    function: str | None = None

    @property
    def label(self) -> str:
        """R's name for the value, e.g. ``log(hours)``."""
        return self.column if self.function is None else f"{self.function}({self.column})"

    def values(self, data: pd.DataFrame) -> np.ndarray:
        """The (transformed) values of the column as floats."""
        x = _numeric_column(data, self.column, self.label)
        if self.function is None:
            return x
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.asarray(TRANSFORMS[self.function](x), dtype=np.float64)
        bad = np.isfinite(x) & ~np.isfinite(out)
        if bad.any():
            raise FormulaError(
                f"{self.label} is not finite for {int(bad.sum())} row(s) (e.g. value "
                f"{x[bad][0]!r} in column {self.column!r}); fix the data or the transform."
            )
        return out


@dataclass(frozen=True)
class Response:
    """The left-hand side: one column (maybe transformed), or ``cbind(successes, failures)``.

    ``failures`` may itself be ``n - successes``: ``minus`` then names ``n`` (R's
    ``cbind(s, n - s)``).
    """

    value: Transform
    failures: Transform | None = None
    failures_from_total: bool = False

    @property
    def label(self) -> str:
        """R's text of the response."""
        if self.failures is None:
            return self.value.label
        second = (
            f"{self.failures.label} - {self.value.label}"
            if self.failures_from_total
            else self.failures.label
        )
        return f"cbind({self.value.label}, {second})"

    @property
    def columns(self) -> tuple[str, ...]:
        """Data columns the response reads."""
        cols = [self.value.column] + ([self.failures.column] if self.failures else [])
        return tuple(dict.fromkeys(cols))


@dataclass(frozen=True)
class Bar:
    """One random-effects term as written, ``(terms | group)`` or ``(terms || group)``."""

    terms: tuple[str, ...]
    intercept: bool
    group: str
    correlated: bool = True

    @property
    def label(self) -> str:
        """lme4's text, e.g. ``(1 + Days | Subject)``."""
        parts = (["1"] if self.intercept else ["0"]) + list(self.terms)
        return f"({' + '.join(parts)} {'|' if self.correlated else '||'} {self.group})"

    def random_effect(self) -> RandomEffect:
        """The engine's term (``correlated=False`` for ``||``; the engine splits it)."""
        effects = ("1",) if self.intercept else ("0",)
        return RandomEffect(self.group, effects + self.terms, correlated=self.correlated)


@dataclass(frozen=True)
class ParsedFormula:
    """A formula read into data (see :func:`parse_formula`).

    Attributes
    ----------
    text : str
        The formula as given.
    response : Response
    fixed : tuple of str
        Fixed-effect term labels in R's order (main effects, then two-way interactions...;
        variables in a term in order of first appearance), e.g. ``("treatment", "day",
        "treatment:day")``.
    intercept : bool
        Whether the fixed part has an intercept (``0 +`` or ``- 1`` removes it).
    bars : tuple of Bar
        Random-effects terms as written (``a/b`` already expanded to ``a`` and ``b:a``).
    offsets : tuple of Transform
        ``offset(...)`` terms, added to the linear predictor.
    variables : tuple of str
        Every data column the formula reads, in order of appearance.
    """

    text: str
    response: Response
    fixed: tuple[str, ...]
    intercept: bool
    bars: tuple[Bar, ...]
    offsets: tuple[Transform, ...]
    variables: tuple[str, ...]

    @property
    def random(self) -> list[RandomEffect]:
        """The random effects as the engine's :class:`~studykit.models.lmm.RandomEffect` list."""
        return [bar.random_effect() for bar in self.bars]

    @property
    def groups(self) -> tuple[str, ...]:
        """Grouping factors (``"b:a"`` for an interaction), in order of appearance."""
        return tuple(dict.fromkeys(b.group for b in self.bars))

    @property
    def slope_variables(self) -> tuple[str, ...]:
        """Variables with random slopes."""
        return tuple(dict.fromkeys(v for b in self.bars for t in b.terms for v in t.split(":")))

    @property
    def fixed_variables(self) -> tuple[str, ...]:
        """Variables of the fixed-effect terms."""
        return tuple(dict.fromkeys(v for t in self.fixed for v in t.split(":")))


class _Expander:
    """Turn the syntax tree into R's terms (sets of variables) with an intercept flag."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.order: dict[str, int] = {}
        self.bars: list[Bar] = []
        self.offsets: list[Transform] = []

    def see(self, name: str) -> None:
        self.order.setdefault(name, len(self.order))

    def label(self, term: frozenset[str]) -> str:
        return ":".join(sorted(term, key=self.order.__getitem__))

    # a model part: (terms, intercept flag or None for "default")
    def terms(self, node: _Node, *, top: bool) -> tuple[list[frozenset[str]], bool | None]:
        k = node.kind
        if k == "name":
            self.see(node.value)
            return [frozenset([node.value])], None
        if k == "num":
            if node.value in ("0", "1"):
                return [], node.value == "1"
            raise _refuse(
                self.text, node.pos, f"the number {node.value} is not a term (use 0 or 1)"
            )
        if k == "paren":
            return self.terms(node.args[0], top=top)
        if k == "neg":
            terms, icpt = self.terms(node.args[0], top=False)
            if terms:
                raise _refuse(self.text, node.pos, "a formula cannot start by removing terms")
            return [], (not icpt) if icpt is not None else None
        if k == "bar":
            if not top:
                raise _refuse(
                    self.text, node.pos, "a random-effects term (x | g) cannot be inside * : / or ^"
                )
            self.bars.extend(self.bar(node))
            return [], None
        if k == "call":
            if node.value == "offset":
                if not top:
                    raise _refuse(self.text, node.pos, "offset() cannot be part of an interaction")
                if len(node.args) != 1:
                    raise _refuse(self.text, node.pos, "offset() takes one argument")
                self.offsets.append(self.transform(node.args[0]))
                return [], None
            raise _refuse(
                self.text,
                node.pos,
                f"{node.value}() is only allowed "
                + (
                    "on the left of '~'"
                    if node.value == "cbind"
                    else "inside offset() or as the response"
                )
                + "; transform columns in the data frame before fitting",
            )
        if k == "bin":
            op = node.value
            left, right = node.args
            if op in ("+", "-"):
                lt, li = self.terms(left, top=top)
                rt, ri = self.terms(right, top=top and op == "+")
                if op == "+":
                    return _union(lt, rt), ri if ri is not None else li
                removed = set(rt)
                icpt = li if ri is None else not ri
                return [t for t in lt if t not in removed], icpt
            if op == "^":
                lt, _ = self.terms(left, top=False)
                n = int(right.value)
                out = lt
                for _ in range(n - 1):
                    out = _union(out, _union(lt, _products(out, lt)))
                return out, None
            lt, li = self.terms(left, top=False)
            rt, ri = self.terms(right, top=False)
            if li is not None or ri is not None or not lt or not rt:
                raise _refuse(self.text, node.pos, f"{op!r} needs variables on both sides, not 0/1")
            if op == ":":
                return _products(lt, rt), None
            if op == "*":
                return _union(_union(lt, rt), _products(lt, rt)), None
            # "/": a/b = a + (all variables of a):b
            allvars = frozenset().union(*lt)
            return _union(lt, _products([allvars], rt)), None
        raise _refuse(self.text, node.pos, "unexpected expression")  # pragma: no cover

    def transform(self, node: _Node) -> Transform:
        if node.kind == "name":
            self.see(node.value)
            return Transform(node.value)
        if node.kind == "paren":
            return self.transform(node.args[0])
        if node.kind == "call" and node.value in TRANSFORMS:
            if len(node.args) != 1 or node.args[0].kind != "name":
                raise _refuse(self.text, node.pos, f"{node.value}() takes one column name")
            self.see(node.args[0].value)
            return Transform(node.args[0].value, node.value)
        raise _refuse(
            self.text,
            node.pos,
            f"expected a column or {'/'.join(TRANSFORMS)} of a column (e.g. offset(log(hours)))",
        )

    def group(self, node: _Node) -> list[str]:
        """Grouping factors of a bar: ``g``, ``a:b``, ``a/b`` (-> ``a``, ``b:a``)."""
        if node.kind == "name":
            self.see(node.value)
            return [node.value]
        if node.kind == "paren":
            return self.group(node.args[0])
        if node.kind == "bin" and node.value == ":":
            left = self.group(node.args[0])
            right = self.group(node.args[1])
            if len(left) != 1 or len(right) != 1:
                raise _refuse(self.text, node.pos, "write nested grouping as a/b, not with ':'")
            return [f"{left[0]}:{right[0]}"]
        if node.kind == "bin" and node.value == "/":
            outer = self.group(node.args[0])
            inner = self.group(node.args[1])
            if len(inner) != 1:
                raise _refuse(self.text, node.pos, "the right of '/' must be one grouping factor")
            # lme4: a/b -> a + b:a ; a/b/c -> a + b:a + c:b:a
            return outer + [f"{inner[0]}:{outer[-1]}"]
        if node.kind == "bin" and node.value == "+":
            raise _refuse(
                self.text,
                node.pos,
                "one grouping factor per bar: write crossed effects as (1 | a) + (1 | b)",
            )
        raise _refuse(
            self.text, node.pos, "a grouping factor is a column name, a:b or a/b (nested)"
        )

    def bar(self, node: _Node) -> list[Bar]:
        lhs, grp = node.args
        terms, icpt = self.terms(lhs, top=False) if lhs.kind != "bin" else self._bar_lhs(lhs)
        intercept = True if icpt is None else icpt
        labels = tuple(self.label(t) for t in _r_order(terms))
        if not intercept and not labels:
            raise _refuse(
                self.text, node.pos, "a random-effects term needs an intercept or a slope"
            )
        groups = self.group(grp)
        return [Bar(labels, intercept, g, node.value == "|") for g in groups]

    def _bar_lhs(self, node: _Node) -> tuple[list[frozenset[str]], bool | None]:
        # the left of a bar is a small model: allow +/- with 0/1 but no nested bars/offsets
        return self.terms(node, top=False)


def _union(a: list[frozenset[str]], b: list[frozenset[str]]) -> list[frozenset[str]]:
    return list(dict.fromkeys(a + b))


def _products(a: list[frozenset[str]], b: list[frozenset[str]]) -> list[frozenset[str]]:
    return list(dict.fromkeys(x | y for x in a for y in b))


def _r_order(terms: list[frozenset[str]]) -> list[frozenset[str]]:
    """R's term order: by interaction order, then by appearance (a stable sort)."""
    return sorted(terms, key=len)


def parse_formula(text: str) -> ParsedFormula:
    """Read an lme4 formula without evaluating anything.

    Parameters
    ----------
    text : str
        E.g. ``"Reaction ~ Days + (Days | Subject)"``, ``"kss ~ treatment * day +
        (1 | participant_id)"``, ``"cbind(events, trials - events) ~ arm + (1 | site/id)"``.

    Returns
    -------
    ParsedFormula

    Raises
    ------
    FormulaError
        Syntax errors and anything that is not formula language (code), with the position.

    Examples
    --------
    >>> f = parse_formula("Reaction ~ Days + (Days | Subject)")
    >>> f.response.label, f.fixed, f.intercept
    ('Reaction', ('Days',), True)
    >>> [r.label for r in f.random]
    ['(1 + Days | Subject)']
    >>> parse_formula("y ~ a*b - 1").fixed, parse_formula("y ~ a*b - 1").intercept
    (('a', 'b', 'a:b'), False)
    >>> [r.label for r in parse_formula("y ~ x + (x || g) + (1 | site/id)").random]
    ['(1 + x || g)', '(1 | site)', '(1 | id:site)']
    >>> parse_formula("y ~ __import__('os')")
    Traceback (most recent call last):
    ...
    studykit.errors.FormulaError: Formula refused at position 4: dunder names such as '__import__' are not allowed.
    y ~ __import__('os')
        ^

    Notes
    -----
    Terms follow R's ``terms.formula``: ``a*b`` is ``a + b + a:b``, ``a/b`` is ``a + a:b``,
    ``(a + b + c)^2`` is all main effects and two-way interactions, ``-`` removes terms, and
    ``0 +`` / ``- 1`` remove the intercept. Terms are ordered by interaction order, variables
    within a term by first appearance in the formula (as R labels them). Random effects follow
    lme4: ``(x | g)`` correlated intercept and slope, ``(x || g)`` independent ones,
    ``(1 | a/b)`` is ``(1 | a) + (1 | b:a)`` and ``(1 | a:b)`` groups by the combination.
    """
    if not isinstance(text, str):
        raise FormulaError(f"A formula must be a string, got {type(text).__name__}.")
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"Formula is {len(text)} characters long; the limit is {MAX_LENGTH}.")
    if not text.strip():
        raise FormulaError("The formula is empty; write e.g. 'y ~ x + (1 | id)'.")
    lhs, rhs = _Parser(text).formula()
    ex = _Expander(text)
    response = _response(ex, lhs, text)
    terms, icpt = ex.terms(rhs, top=True)
    fixed = tuple(ex.label(t) for t in _r_order(terms))
    variables = tuple(ex.order)
    return ParsedFormula(
        text=text,
        response=response,
        fixed=fixed,
        intercept=True if icpt is None else icpt,
        bars=tuple(ex.bars),
        offsets=tuple(ex.offsets),
        variables=variables,
    )


def _response(ex: _Expander, node: _Node, text: str) -> Response:
    if node.kind == "call" and node.value == "cbind":
        if len(node.args) != 2:
            raise _refuse(text, node.pos, "cbind() takes two columns: successes and failures")
        first = ex.transform(node.args[0])
        second_node = node.args[1]
        if second_node.kind == "bin" and second_node.value == "-":
            total = ex.transform(second_node.args[0])
            minus = ex.transform(second_node.args[1])
            if minus != first:
                raise _refuse(
                    text,
                    second_node.pos,
                    "write the failures as cbind(s, n - s) with the same successes column",
                )
            return Response(first, total, failures_from_total=True)
        return Response(first, ex.transform(second_node))
    if node.kind in ("name", "call", "paren"):
        return Response(ex.transform(node))
    raise _refuse(text, node.pos, "the response is a column, a transform of one, or cbind(s, f)")


# ------------------------------------------------------------------------------------------
# binding a formula to data
# ------------------------------------------------------------------------------------------
def _numeric_column(data: pd.DataFrame, column: str, what: str) -> np.ndarray:
    col = data[column]
    if pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=float, na_value=np.nan)
    if not pd.api.types.is_numeric_dtype(col):
        raise FormulaError(f"{what} needs numbers, but column {column!r} holds {col.dtype} values.")
    return col.to_numpy(dtype=float, na_value=np.nan)


def factor_levels(values: pd.Series, override: Sequence[object] | None = None) -> list[str]:
    """Levels of a factor as R's ``factor()`` would make them, reference first.

    ``override`` (the user's ``levels=``) wins; a pandas ``Categorical`` keeps its category
    order (categories absent from ``values`` dropped, as ``lmer``'s ``drop.unused.levels``);
    booleans are ``False, True``; anything else is sorted.

    Examples
    --------
    >>> factor_levels(pd.Series(["placebo", "ketamine", "placebo"]))
    ['ketamine', 'placebo']
    >>> factor_levels(pd.Series(pd.Categorical(["b", "a"], categories=["b", "a", "c"])))
    ['b', 'a']
    >>> factor_levels(pd.Series(["x", "y"]), ["y", "x"])
    ['y', 'x']
    """
    if override is not None:
        return [str(x) for x in override]
    present = values.dropna()
    if isinstance(values.dtype, pd.CategoricalDtype):
        seen = set(present.astype(str))
        return [str(c) for c in values.cat.categories if str(c) in seen]
    if pd.api.types.is_bool_dtype(values):
        return [str(x) for x in (False, True) if (present == x).any()]
    return sorted({str(x) for x in present})


def _is_factor(col: pd.Series) -> bool:
    """R's rule: numbers are covariates; strings, categoricals and booleans are factors."""
    if isinstance(col.dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(col):
        return True
    return not pd.api.types.is_numeric_dtype(col)


@dataclass
class ModelFrame:
    """A formula bound to data: the complete rows and everything the engines need.

    Attributes
    ----------
    formula : ParsedFormula
    data : pandas.DataFrame
        Complete rows only, with added columns for a transformed response (named as R,
        e.g. ``log(y)``) and the summed offsets (``offset``).
    outcome : str
        Column of ``data`` with the response (successes for ``cbind``).
    trials : numpy.ndarray or None
        Successes + failures per row for ``cbind`` responses.
    levels : dict
        Factor -> levels (reference first) for every factor in the fixed and slope terms.
    offset : str or None
        Column of ``data`` holding the offset.
    n_excluded : int
        Rows dropped for a missing value in a model variable.
    excluded_columns : list of str
        The variables that had missing values.
    """

    formula: ParsedFormula
    data: pd.DataFrame
    outcome: str
    trials: np.ndarray | None
    levels: dict[str, list[str]]
    offset: str | None
    n_excluded: int
    excluded_columns: list[str] = field(default_factory=list)

    @property
    def fixed(self) -> list[str]:
        """Fixed-effect term labels."""
        return list(self.formula.fixed)

    @property
    def random(self) -> list[RandomEffect]:
        """Random-effect terms for the engine."""
        return self.formula.random

    @property
    def exclusion_note(self) -> str | None:
        """A sentence about dropped rows, or None."""
        if not self.n_excluded:
            return None
        return (
            f"{self.n_excluded} of {self.n_excluded + len(self.data)} rows excluded for missing "
            f"values in {self.excluded_columns[:10]}."
        )


def model_frame(
    formula: str | ParsedFormula,
    data: pd.DataFrame,
    *,
    levels: Mapping[str, Sequence[object]] | None = None,
) -> ModelFrame:
    """Bind a formula to a data frame: complete rows, factors and their levels, offsets.

    Parameters
    ----------
    formula : str or ParsedFormula
    data : pandas.DataFrame
        Not modified.
    levels : mapping, optional
        Factor -> levels with the reference first; overrides the default order and makes a
        numeric column a factor.

    Returns
    -------
    ModelFrame

    Examples
    --------
    >>> df = pd.DataFrame({"y": [1.0, 2, 3, None], "arm": ["p", "k", "p", "k"],
    ...                    "id": ["a", "a", "b", "b"], "hours": [7.0, 8, 6, 7]})
    >>> mf = model_frame("y ~ arm + offset(log(hours)) + (1 | id)", df)
    >>> mf.levels, mf.n_excluded, mf.offset
    ({'arm': ['k', 'p']}, 1, 'offset')
    >>> model_frame("y ~ arm + (1 | id)", df, levels={"arm": ["p", "k"]}).levels
    {'arm': ['p', 'k']}

    Notes
    -----
    As R's ``model.frame`` with ``na.action = na.omit``: a row with a missing value in any
    variable the formula reads is dropped (and counted). A variable is a factor when its column
    is a pandas ``Categorical``, boolean or text (R's ``factor`` / ``character`` / ``logical``),
    or when ``levels`` names it; numeric columns are covariates. Default levels are R's:
    category order for a ``Categorical``, otherwise sorted, and the first level is the reference.
    """
    parsed = parse_formula(formula) if isinstance(formula, str) else formula
    if not isinstance(data, pd.DataFrame):
        raise FormulaError(f"data must be a pandas DataFrame, got {type(data).__name__}.")
    missing = [v for v in parsed.variables if v not in data.columns]
    if missing:
        raise FormulaError(
            f"Formula {parsed.text!r} names {missing[:10]}, which are not columns of the data. "
            f"Columns: {', '.join(map(str, data.columns[:30]))}."
        )
    levels = dict(levels or {})
    unknown = [k for k in levels if k not in parsed.variables]
    if unknown:
        raise FormulaError(
            f"levels= names {unknown[:10]}, which the formula does not use "
            f"(its variables: {list(parsed.variables)})."
        )
    sub = data.loc[:, list(parsed.variables)]
    complete = sub.notna().all(axis=1).to_numpy()
    bad_cols = [str(c) for c in sub.columns if sub[c].isna().any()]
    frame = sub.loc[complete].copy()
    n_excluded = int((~complete).sum())
    if len(frame) == 0:
        raise FormulaError(
            f"No complete rows for {parsed.text!r}: every row misses a value in {bad_cols[:10]}."
        )
    out_levels: dict[str, list[str]] = {}
    for v in dict.fromkeys(parsed.fixed_variables + parsed.slope_variables):
        if v in levels or _is_factor(frame[v]):
            lv = factor_levels(frame[v], levels.get(v))
            if len(lv) != len(set(lv)):
                raise FormulaError(f"levels of {v!r} repeat a value: {lv}.")
            out_levels[v] = lv
    # response
    resp = parsed.response
    outcome = resp.value.label
    trials: np.ndarray | None = None
    if resp.failures is not None:
        s = resp.value.values(frame)
        other = resp.failures.values(frame)
        f = other - s if resp.failures_from_total else other
        trials = s + f
        if resp.value.function is not None or resp.failures.function is not None:
            raise FormulaError("cbind() takes counts, not transformed columns.")
        bad = (s < 0) | (f < 0) | (s != np.floor(s)) | (f != np.floor(f))
        if bad.any():
            raise FormulaError(
                f"{resp.label} needs whole non-negative successes and failures; "
                f"{int(bad.sum())} row(s) are not (first at row {frame.index[bad][0]!r})."
            )
    elif resp.value.function is not None:
        frame[outcome] = resp.value.values(frame)
    # offsets
    offset: str | None = None
    if parsed.offsets:
        total = np.zeros(len(frame))
        for o in parsed.offsets:
            total = total + o.values(frame)
        offset = "offset"
        if offset in frame.columns:
            offset = "offset_"
        frame[offset] = total
    return ModelFrame(
        formula=parsed,
        data=frame,
        outcome=outcome,
        trials=trials,
        levels=out_levels,
        offset=offset,
        n_excluded=n_excluded,
        excluded_columns=bad_cols,
    )
