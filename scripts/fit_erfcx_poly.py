#!/usr/bin/env python3
"""Fits the erfcx polynomial of the CPU GELU kernel (backends/cpu/pointwise.cc, kErfcxPoly).

erfcx(a) = exp(a^2) erfc(a) is approximated as P(t), t = 1 / (1 + p a), P of degree 9, p = 0.3,
for a in [0, 10] (beyond, exp(-a^2) underflows float32), minimizing the largest relative error:
weighted least squares on Chebyshev nodes in t, reweighted by Lawson's rule towards the minimax
fit. Prints the coefficients (constant term first) and the largest relative error on a dense grid.
Needs numpy and mpmath (PyTorch's sympy brings mpmath).

Usage: python3 scripts/fit_erfcx_poly.py
"""
import mpmath
import numpy as np

mpmath.mp.dps = 30
P, DEGREE, A_MAX, NODES, ITERATIONS = 0.3, 9, 10.0, 1500, 60


def erfcx(a):
    return float(mpmath.erfc(a) * mpmath.exp(a * a))


def fit():
    t_min = 1 / (1 + P * A_MAX)
    k = np.arange(NODES)
    t = (1 + t_min) / 2 + (1 - t_min) / 2 * np.cos(np.pi * (k + 0.5) / NODES)
    f = np.array([erfcx(a) for a in (1 / t - 1) / P])
    vandermonde = np.vander(t, DEGREE + 1, increasing=True)
    weights = np.ones(NODES)
    for _ in range(ITERATIONS):
        w = weights / f  # relative error
        coefficients, *_ = np.linalg.lstsq(vandermonde * w[:, None], f * w, rcond=None)
        residual = (vandermonde @ coefficients - f) / f
        weights = weights * np.abs(residual) ** 0.5 + 1e-30
        weights /= weights.max()
    return coefficients


def main():
    coefficients = fit()
    a = np.linspace(0, A_MAX, 2001)
    exact = np.array([erfcx(v) for v in a])
    relative = np.abs(np.polyval(coefficients[::-1], 1 / (1 + P * a)) - exact) / exact
    print("coefficients (t^0 first):", ", ".join(repr(float(c)) for c in coefficients))
    print(f"largest relative error on [0, {A_MAX}]: {relative.max():.3g}")


if __name__ == "__main__":
    main()
