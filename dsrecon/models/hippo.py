"""Continuous-time linear state-space layers: HiPPO-LegS matrices, discretisation, kernels.

Glossary (teaching size)
------------------------
B   batch
T   time steps (sequence / kernel length)
D   model width = number of independent SSM channels (the LSSL paper's H)
S   SSM state size per channel (the LSSL / S4 papers' N; S here so that N stays the
    observed dimension of the toolkit)
dt  step size of the discretisation, one per channel (D,)

The continuous-time SSM of one channel is x'(t) = A x(t) + B u(t), y(t) = C x(t) + D u(t) with
x (S,), scalar u and y. This module provides

* :func:`legs` - the HiPPO-LegS pair (A, B) (Gu et al. 2020; S4 paper eq. (2), with the sign
  convention of S4 where A has negative diagonal)::

      A[n, k] = -sqrt(2n+1) sqrt(2k+1)   if n > k
                -(n + 1)                  if n = k
                 0                        if n < k
      B[n]    =  sqrt(2n+1)

  x(t) then holds the coefficients of the optimal projection of the input history u([0, t])
  onto the scaled Legendre polynomials (for the time-varying system x' = A x / t + B u / t);
  for the time-invariant layer used here (LSSL), A is simply an excellent initialisation.
* :func:`bilinear` - the bilinear (Tustin) discretisation used by the LSSL paper::

      dA = (I - dt/2 A)^{-1} (I + dt/2 A),    dB = (I - dt/2 A)^{-1} dt B

  (A-stable: it maps the left half plane into the unit disc, so dA of a stable A is stable).
* :func:`zoh` - zero-order hold via the matrix exponential (the exact discretisation for
  piecewise-constant input), used as the reference in the tests.
* :func:`krylov_kernel` - the convolution kernel K = (C dB, C dA dB, ..., C dA^{T-1} dB) by
  *repeated squaring*: the Krylov block X_[0:L] = [dB, dA dB, ..., dA^{L-1} dB] is doubled by
  X_[0:2L] = [X_[0:L], dA^L X_[0:L]] with dA^{2L} = (dA^L)^2, i.e. ceil(log2 T) batched matrix
  products of total cost O(D S^2 T). Every entry is a product of at most log2 T matrices, so
  rounding errors grow like log T (not T as in the running product); all powers of a stable dA
  stay bounded. :func:`krylov_kernel_ref` is the explicit-powers reference.
* :func:`causal_fft_conv` - y = K * u (causal convolution including the current input) by FFT,
  zero-padded to 2T so that the circular convolution equals the linear one.

References
----------
A. Gu, T. Dao, S. Ermon, A. Rudra, C. Re, "HiPPO: Recurrent memory with optimal polynomial
projections", NeurIPS 2020.
A. Gu, I. Johnson, K. Goel, K. Saab, T. Dao, A. Rudra, C. Re, "Combining recurrent,
convolutional, and continuous-time models with linear state-space layers", NeurIPS 2021 (LSSL).
A. Gu, K. Goel, C. Re, "Efficiently modeling long sequences with structured state spaces",
ICLR 2022 (S4; HiPPO-LegS and its normal-plus-low-rank structure, eq. (2) and Thm. 1).
"""

from __future__ import annotations

import math

import torch

from dsrecon.errors import ConfigError


def legs(S: int, *, dtype: torch.dtype = torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS matrices: A (S, S) lower triangular with diagonal -1..-S, B (S,)."""
    if int(S) < 1:
        raise ConfigError(f"the HiPPO state size must be >= 1, got {S}")
    n = torch.arange(S, dtype=torch.float64)
    r = torch.sqrt(2 * n + 1)  # (S,)
    A = -torch.tril(r[:, None] * r[None, :], diagonal=-1) - torch.diag(n + 1)  # (S, S)
    return A.to(dtype=dtype, device=device), r.to(dtype=dtype, device=device)


def legs_nplr_p(S: int, *, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The low-rank factor P (S,) with A_LegS + P P^T = -I/2 + skew-symmetric (S4, Thm. 1)."""
    n = torch.arange(S, dtype=torch.float64)
    return torch.sqrt(n + 0.5).to(dtype=dtype, device=device)


def bilinear(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear discretisation per channel. A (S, S), B (S,), dt (D,) -> dA (D, S, S), dB (D, S)."""
    S = A.shape[-1]
    eye = torch.eye(S, dtype=A.dtype, device=A.device)  # (S, S)
    half = (dt / 2)[:, None, None]  # (D, 1, 1)
    left = eye - half * A  # (D, S, S)
    right = eye + half * A  # (D, S, S)
    dA = torch.linalg.solve(left, right)  # (D, S, S)
    dB = torch.linalg.solve(left, (dt[:, None] * B)[..., None])[..., 0]  # (D, S)
    return dA, dB


def zoh(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order hold via one augmented matrix exponential (Van Loan).

    A (S, S), B (S,), dt (D,) -> dA = exp(dt A) (D, S, S), dB = int_0^dt exp(s A) ds B (D, S).
    """
    S = A.shape[-1]
    aug = A.new_zeros(dt.shape[0], S + 1, S + 1)  # (D, S+1, S+1)
    aug[:, :S, :S] = A
    aug[:, :S, S] = B
    E = torch.linalg.matrix_exp(dt[:, None, None] * aug)  # (D, S+1, S+1)
    return E[:, :S, :S], E[:, :S, S]


def krylov(dA: torch.Tensor, dB: torch.Tensor, T: int) -> torch.Tensor:
    """Krylov block X[d, :, k] = dA[d]^k dB[d] by repeated squaring. dA (D,S,S), dB (D,S) -> (D,S,T)."""
    if int(T) < 1:
        raise ConfigError(f"kernel length must be >= 1, got {T}")
    X = dB[..., None]  # (D, S, 1)  Krylov block [dB]
    P = dA  # (D, S, S)  dA^L for the current block length L
    while X.shape[-1] < T:
        X = torch.cat([X, P @ X], dim=-1)  # (D, S, 2L)
        if X.shape[-1] < T:
            P = P @ P  # (D, S, S)  dA^{2L}
    return X[..., :T]  # (D, S, T)


def krylov_kernel(dA: torch.Tensor, dB: torch.Tensor, C: torch.Tensor, T: int) -> torch.Tensor:
    """Kernel K[d, k] = C[d] dA[d]^k dB[d] by repeated squaring. dA (D,S,S), dB, C (D,S) -> (D, T)."""
    return torch.einsum("ds,dst->dt", C, krylov(dA, dB, T))  # (D, T)


def krylov_kernel_ref(dA: torch.Tensor, dB: torch.Tensor, C: torch.Tensor, T: int) -> torch.Tensor:
    """Reference kernel by explicit successive powers: (D, T)."""
    x = dB  # (D, S)
    out = []
    for _ in range(T):
        out.append((C * x).sum(-1))  # (D,)
        x = (dA @ x[..., None])[..., 0]  # (D, S)
    return torch.stack(out, dim=-1)


def causal_fft_conv(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """y[..., d, t] = sum_{j<=t} K[d, j] u[..., d, t-j]. u (B, D, T), K (D, T) -> (B, D, T)."""
    T = u.shape[-1]
    n = 1 << int(math.ceil(math.log2(2 * T)))  # >= 2T: no wrap-around
    Uf = torch.fft.rfft(u, n=n)  # (B, D, n/2+1)
    Kf = torch.fft.rfft(K, n=n)  # (D, n/2+1)
    return torch.fft.irfft(Uf * Kf, n=n)[..., :T]  # (B, D, T)
