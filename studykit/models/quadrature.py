"""Per-group conditional modes, Laplace and adaptive Gauss-Hermite quadrature (GLMM, CLMM).

Models with one scalar random effect per group (spherical ``u_i ~ N(0, 1)``) integrate it out
group by group: with ``g_i(u) = log p(y_i | u) - u^2 / 2`` the group's marginal likelihood is
``int exp(g_i(u)) du / sqrt(2 pi)``. Both engines that do this (``glmm``'s per-group engine,
``clmm``) use the two pieces here:

* :func:`group_modes`: the conditional modes ``u_hat_i = argmax g_i`` for all groups at once
  (Newton's method with per-group step halving);
* :class:`GaussHermite`: the adaptive rule (Liu & Pierce 1994; Pinheiro & Bates 1995) at
  nodes ``u_hat_i + sqrt(2) tau_i x_k`` with ``tau_i = 1 / sqrt(-g_i''(u_hat_i))``. With one
  node it is the Laplace approximation ``g_i(u_hat_i) - log(-g_i''(u_hat_i)) / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

from studykit.errors import ModelError

__all__ = [
    "GaussHermite",
    "group_modes",
    "check_nagq",
    "MODE_TOL",
    "MODE_MAXIT",
    "MODE_HALVINGS",
    "MODE_DECREASE_RTOL",
    "MAX_NAGQ",
]

MODE_TOL = 1e-11  # stop when the largest Newton step on the spherical modes is below this
MODE_MAXIT = 100  # iteration cap (callers warn when it is reached)
MODE_HALVINGS = 60  # step halvings before a non-improving step is accepted as is
MODE_DECREASE_RTOL = 1e-12  # a step may lower g by this x (1 + |g|) (rounding) and be kept
MAX_NAGQ = 100  # most quadrature nodes accepted (glmer allows up to 25 for one effect)


def check_nagq(nagq: object, *, example: int) -> int:
    """``nagq`` as an int: 1 (Laplace) or 2..MAX_NAGQ nodes, else a ModelError.

    Examples
    --------
    >>> check_nagq(25, example=25)
    25
    """
    if (
        isinstance(nagq, bool)
        or not isinstance(nagq, int | np.integer)
        or not 1 <= int(nagq) <= MAX_NAGQ
    ):
        raise ModelError(
            f"Invalid nagq {nagq!r}: use 1 (Laplace) or an integer 2..{MAX_NAGQ} for adaptive "
            f"Gauss-Hermite quadrature (e.g. {example})."
        )
    return int(nagq)


def group_modes(
    objective: Callable[[np.ndarray], np.ndarray],
    derivatives: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    u0: np.ndarray,
    *,
    tol: float = MODE_TOL,
) -> tuple[np.ndarray, bool]:
    """Maximise concave per-group functions ``g_i(u_i)`` for all groups at once.

    Parameters
    ----------
    objective : callable
        ``u -> g(u)``, one value per group.
    derivatives : callable
        ``u -> (g'(u), -g''(u))`` per group (the second positive).
    u0 : numpy.ndarray
        Starting values (e.g. the last evaluation's modes).
    tol : float
        Stop when the largest Newton step is below this.

    Returns
    -------
    (numpy.ndarray, bool)
        The modes, and whether the iteration cap :data:`MODE_MAXIT` was reached.

    Examples
    --------
    >>> c = np.array([0.0, 1.0, -2.0])  # g_i(u) = -(u - c_i)^2 / 2 - u^4 / 4
    >>> u, capped = group_modes(lambda u: -0.5 * (u - c) ** 2 - u**4 / 4,
    ...                         lambda u: (c - u - u**3, 1.0 + 3.0 * u**2), np.zeros(3))
    >>> np.round(u, 6).tolist(), capped
    ([0.0, 0.682328, -1.0], False)
    """
    u = np.array(u0, dtype=float)
    g_old = objective(u)
    for _ in range(MODE_MAXIT):
        slope, curvature = derivatives(u)
        step = slope / curvature
        u_new = u + step
        g_new = objective(u_new)
        # a step is bad when it lowers g (or overflows to nan): halve it, per group
        bad = ~(g_new >= g_old - MODE_DECREASE_RTOL * (1.0 + np.abs(g_old)))
        halvings = 0
        while bad.any() and halvings < MODE_HALVINGS:
            step[bad] *= 0.5
            u_new[bad] = u[bad] + step[bad]
            g_new[bad] = objective(u_new)[bad]
            bad = ~(g_new >= g_old - MODE_DECREASE_RTOL * (1.0 + np.abs(g_old)))
            halvings += 1
        u, g_old = u_new, g_new
        if np.max(np.abs(step)) < tol:
            return u, False
    return u, True


@dataclass(frozen=True)
class GaussHermite:
    """The adaptive Gauss-Hermite rule with ``nagq`` nodes (1: the Laplace approximation).

    Examples
    --------
    >>> rule = GaussHermite.rule(5)
    >>> u, H = np.array([0.3]), np.array([2.0])
    >>> uk, tau = rule.points(u, H)
    >>> gk = -0.5 * H[:, None] * (uk - u[:, None]) ** 2  # a Gaussian g: the rule is exact
    >>> ll, _ = rule.integrate(gk, tau)
    >>> bool(np.isclose(ll[0], -0.5 * np.log(2.0)))
    True
    """

    nodes: np.ndarray  # abscissae x_k (weight function exp(-x^2))
    logw: np.ndarray  # log(w_k) + x_k^2

    @classmethod
    def rule(cls, nagq: int) -> GaussHermite:
        """The rule with ``nagq`` nodes (numpy's ``hermgauss``)."""
        nodes, weights = np.polynomial.hermite.hermgauss(nagq)
        return cls(nodes, np.log(weights) + nodes**2)

    @property
    def laplace(self) -> bool:
        """One node: the Laplace approximation."""
        return len(self.nodes) == 1

    @property
    def z(self) -> np.ndarray:
        """Node offsets in units of ``tau``: ``sqrt(2) x_k``."""
        return math.sqrt(2.0) * self.nodes

    def points(self, u: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nodes ``u_k = u_hat + tau z_k`` per group ``(G, K)`` and ``tau = H^-1/2``, where
        ``H = -g''(u_hat)``."""
        tau = 1.0 / np.sqrt(H)
        return u[:, None] + tau[:, None] * self.z[None, :], tau

    def integrate(self, gk: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log marginal likelihood per group from ``g`` at the nodes ``(G, K)``, and the
        normalised node weights (``pi``, for the gradient)."""
        a = gk + self.logw[None, :]
        lse = special.logsumexp(a, axis=1)
        pi = np.exp(a - lse[:, None])
        return -0.5 * math.log(math.pi) + np.log(tau) + lse, pi
