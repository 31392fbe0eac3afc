"""Batched float64 view of a piecewise-linear model: region patterns and their affine maps.

Glossary: B batch, M latent dim, L hidden units of the shallow canonical form, S bits of a
pattern (the symbols the searches in :mod:`scyfi` / :mod:`enumeration` work with), R length of
the model's own ``region_code``.

Fixed-point and cycle searches over a piecewise-linear (PWL) map need, for many candidate regions
at once, the affine map ``F(z) = W_s z + h_s`` that holds inside region s. Two views provide it:

* :class:`ShallowView` (fast, used whenever the model implements ``shallow_form``): every model of
  the PLRNN family is ``F(z) = a*z + W1 act(W2 z + h2) + h1`` (act = ReLU on ``relu_mask`` units,
  identity elsewhere), or the clipped form ``a*z + W1 (relu(W2 z + h2) - relu(W2 z)) + h1``
  (:class:`dsrecon.models.base.PiecewiseLinearModel`). A pattern is the on/off state of the ReLU
  units (S = number of ReLU units), and for the clipped form the on/off states of both ReLUs of
  every hidden unit (S = 2L). ``W_s = diag(a) + W1 diag(d_s) W2`` and
  ``h_s = h1 + W1 (on_s * h2)`` are formed for a whole batch with two matrix products.
* :class:`ProtocolView` (generic): patterns are the model's ``region_code`` and the maps come from
  ``affine_piece``, cached per distinct code.

Patterns may be finer than the model's region codes (for an AL-RNN both coincide; for a PLRNN too).
All arrays are NumPy float64 on CPU: the linear algebra is on many tiny matrices and is
overhead-bound, whatever device the model lives on.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from dsrecon.errors import ConfigError
from dsrecon.models.base import PiecewiseLinearModel


def float64_copy(model: torch.nn.Module, device: str | torch.device | None = "cpu") -> torch.nn.Module:
    """A frozen float64 copy of a model on ``device`` (the original is untouched)."""
    m = copy.deepcopy(model)
    m = m.to(device=torch.device(device) if device is not None else None, dtype=torch.float64)
    m.eval()
    m.requires_grad_(False)
    return m


class PWLView:
    """Interface: ``bits(z)``, ``pieces(bits)``, ``step(z)``, ``region_code(z)``; NumPy float64.

    Attributes
    ----------
    M : int
        State dimension.
    n_bits : int
        S, the pattern length.
    """

    M: int
    n_bits: int

    def bits(self, z: np.ndarray) -> np.ndarray:
        """Pattern of each state: (B, M) -> (B, S) bool."""
        raise NotImplementedError

    def margins(self, z: np.ndarray) -> np.ndarray:
        """Signed distance-like margin of every bit (its pre-activation): (B, M) -> (B, S)."""
        raise NotImplementedError

    def pieces(self, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Affine maps of patterns: (B, S) bool -> (W (B, M, M), h (B, M))."""
        raise NotImplementedError

    def step(self, z: np.ndarray) -> np.ndarray:
        """The map: (B, M) -> (B, M)."""
        raise NotImplementedError

    def region_code(self, z: np.ndarray) -> np.ndarray:
        """The model's own region codes: (B, M) -> (B, R) bool."""
        raise NotImplementedError


class ShallowView(PWLView):
    """View built from a model's ``shallow_form()`` (see module docstring)."""

    def __init__(self, model: PiecewiseLinearModel) -> None:
        self.model = float64_copy(model, "cpu")
        with torch.no_grad():
            form = self.model.shallow_form()
        f = {k: v.detach().cpu().numpy() for k, v in form.items()}
        self.a = f["a"].astype(np.float64)  # (M,)
        self.W1 = f["W1"].astype(np.float64)  # (M, L)
        self.W2 = f["W2"].astype(np.float64)  # (L, M)
        self.h1 = f["h1"].astype(np.float64)  # (M,)
        self.h2 = f["h2"].astype(np.float64)  # (L,)
        self.clipped = bool(getattr(model, "clipped", False))
        L = self.W2.shape[0]
        mask = f.get("relu_mask")
        self.relu_mask = np.ones(L, dtype=bool) if mask is None or self.clipped else mask.astype(bool)
        if self.a.ndim != 1 or self.W1.shape != (self.a.size, L) or self.W2.shape[1] != self.a.size:
            raise ConfigError(
                "shallow_form() returned inconsistent shapes "
                f"a {self.a.shape}, W1 {self.W1.shape}, W2 {self.W2.shape}; an ensemble model must be "
                "split into its members before analysis"
            )
        self.M, self.L = self.a.size, L
        self.relu_idx = np.flatnonzero(self.relu_mask)
        self.n_bits = 2 * L if self.clipped else self.relu_idx.size

    def margins(self, z: np.ndarray) -> np.ndarray:
        u = z @ self.W2.T  # (B, L)
        if self.clipped:
            return np.concatenate([u + self.h2, u], axis=-1)  # (B, 2L)
        return (u + self.h2)[:, self.relu_idx]  # (B, S)

    def bits(self, z: np.ndarray) -> np.ndarray:
        return self.margins(z) > 0

    def _slopes(self, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slope d and offset gate g of every hidden unit: (B, S) -> (B, L), (B, L)."""
        B = bits.shape[0]
        if self.clipped:
            on = bits[:, : self.L].astype(np.float64)
            return on - bits[:, self.L :], on
        d = np.ones((B, self.L))
        d[:, self.relu_idx] = bits
        return d, d

    def pieces(self, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d, g = self._slopes(np.asarray(bits, dtype=bool))
        W = (self.W1[None] * d[:, None, :]) @ self.W2  # (B, M, M)
        idx = np.arange(self.M)
        W[:, idx, idx] += self.a
        h = self.h1 + (g * self.h2) @ self.W1.T  # (B, M)
        return W, h

    def step(self, z: np.ndarray) -> np.ndarray:
        u = z @ self.W2.T
        if self.clipped:
            phi = np.maximum(u + self.h2, 0.0) - np.maximum(u, 0.0)
        else:
            v = u + self.h2
            phi = np.where(self.relu_mask, np.maximum(v, 0.0), v)
        return self.a * z + phi @ self.W1.T + self.h1

    def region_code(self, z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model.region_code(torch.as_tensor(z, dtype=torch.float64)).cpu().numpy().astype(bool)


class ProtocolView(PWLView):
    """View built only from ``region_code`` / ``affine_piece`` / ``step`` (any PWL model)."""

    def __init__(self, model: PiecewiseLinearModel) -> None:
        self.model = float64_copy(model, "cpu")
        self.M = int(model.latent_dim)
        probe = self.region_code(np.zeros((1, self.M)))
        self.n_bits = int(probe.shape[1])
        self._cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def bits(self, z: np.ndarray) -> np.ndarray:
        return self.region_code(z)

    def margins(self, z: np.ndarray) -> np.ndarray:
        # no pre-activations in the generic protocol: report +-1 (no boundary tolerance)
        return np.where(self.region_code(z), 1.0, -1.0)

    def pieces(self, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bits = np.asarray(bits, dtype=bool)
        uniq, inv = np.unique(bits, axis=0, return_inverse=True)
        Ws, hs = [], []
        for code in uniq:
            key = np.packbits(code).tobytes()
            if key not in self._cache:
                with torch.no_grad():
                    W, h = self.model.affine_piece(torch.as_tensor(code))
                self._cache[key] = (W.cpu().numpy().astype(np.float64), h.cpu().numpy().astype(np.float64))
            W, h = self._cache[key]
            Ws.append(W)
            hs.append(h)
        inv = np.asarray(inv).reshape(-1)
        return np.stack(Ws)[inv], np.stack(hs)[inv]

    def step(self, z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model.step(torch.as_tensor(z, dtype=torch.float64)).cpu().numpy()

    def region_code(self, z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model.region_code(torch.as_tensor(z, dtype=torch.float64)).cpu().numpy().astype(bool)


def make_view(model: PiecewiseLinearModel, prefer: str = "auto") -> PWLView:
    """The fastest view a model supports: ``"auto"`` (shallow form if implemented), ``"shallow"``,
    ``"protocol"``."""
    if not isinstance(model, PiecewiseLinearModel):
        raise ConfigError(
            f"{type(model).__name__} is not a PiecewiseLinearModel; SCYFI and exhaustive enumeration "
            "need region codes and affine pieces (use method='newton' for smooth models)"
        )
    if prefer not in ("auto", "shallow", "protocol"):
        raise ConfigError(f"prefer must be 'auto', 'shallow' or 'protocol', got {prefer!r}")
    if prefer in ("auto", "shallow"):
        try:
            return ShallowView(model)
        except NotImplementedError:
            if prefer == "shallow":
                raise ConfigError(f"{type(model).__name__} does not implement shallow_form()") from None
    return ProtocolView(model)


def cycle_maps(W: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compose k affine maps: W (B, k, M, M), h (B, k, M) -> (P (B, M, M), c (B, M)).

    ``F_k o ... o F_1 (z) = P z + c`` with ``F_j(z) = W[:, j] z + h[:, j]`` applied first for j = 0.
    """
    P = W[:, 0].copy()
    c = h[:, 0].copy()
    for j in range(1, W.shape[1]):
        P = W[:, j] @ P
        c = np.einsum("bij,bj->bi", W[:, j], c) + h[:, j]
    return P, c


def solve_cycle_points(W: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate start points of the k-cycle equation ``(I - P) z = c`` for a batch of sequences.

    W (B, k, M, M), h (B, k, M) -> z (B, M), ok (B,) bool (False where I - P is singular or
    ill-conditioned, cond > 1e12).
    """
    P, c = cycle_maps(W, h)
    B, M = c.shape
    A = np.eye(M)[None] - P
    ok = np.ones(B, dtype=bool)
    z = np.zeros((B, M))
    try:
        z = np.linalg.solve(A, c[..., None])[..., 0]
    except np.linalg.LinAlgError:  # some matrix is exactly singular: go one by one
        for i in range(B):
            try:
                z[i] = np.linalg.solve(A[i], c[i])
            except np.linalg.LinAlgError:
                ok[i] = False
    # reject near-singular systems: their solutions are not reliable cycle points
    resid = np.abs(np.einsum("bij,bj->bi", A, z) - c).max(axis=1)
    ok &= np.isfinite(z).all(axis=1) & (resid <= 1e-8 * (1.0 + np.abs(c).max(axis=1) + np.abs(z).max(axis=1)))
    return z, ok


def simulate_bits(view: PWLView, z0: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k steps from z0 (B, M): points (B, k + 1, M), patterns (B, k, S) and margins (B, k, S)."""
    B, M = z0.shape
    pts = np.empty((B, k + 1, M))
    pts[:, 0] = z0
    for j in range(k):
        pts[:, j + 1] = view.step(pts[:, j])
    flat = pts[:, :k].reshape(B * k, M)
    marg = view.margins(flat).reshape(B, k, -1)
    return pts, marg > 0, marg
