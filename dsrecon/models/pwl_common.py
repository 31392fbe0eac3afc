"""Shared code of the piecewise-linear RNN family (PLRNN, dendPLRNN, shPLRNN, AL-RNN).

Glossary: B batch, N observed dim, M latent dim, L' hidden units of the shallow canonical form,
R length of a region code, K ensemble members.

Every model of the family can be written in the *shallow canonical form*
(:class:`dsrecon.models.base.PiecewiseLinearModel`)::

    F(z) = a * z + W1 @ act(W2 @ z + h2) + h1           act = relu where relu_mask, else identity
    clipped:  F(z) = a * z + W1 @ (relu(W2 z + h2) - relu(W2 z)) + h1

This module holds

* the initialisations of DESIGN.md section 3 (:func:`normalized_positive_definite` after
  Talathi & Vartak 2016, :func:`uniform_init`, :func:`gaussian_init`);
* generic evaluators of the canonical form (:func:`shallow_step`, :func:`shallow_jacobian`,
  :func:`shallow_affine_piece`) -- the slow reference every model's analytic ``step`` /
  ``jacobian`` / ``affine_piece`` is tested against, and what a fused kernel must reproduce;
* region enumeration helpers (:func:`enumerate_codes`, :func:`unique_codes`);
* :class:`PWLRNN`, the base class of the family: observation handling (:mod:`.observation`),
  input validation, the regularisers, and a ``forward`` that dispatches to protocol methods so
  that ``torch.func.functional_call`` can run any of them on stacked ensemble parameters.

References: Durstewitz (2017) PLoS Comput Biol 13:e1005542; Koppe et al. (2019) PLoS Comput Biol
15:e1007263; Schmidt et al. (2021) ICLR (manifold-attractor regularisation); Brenner et al. (2022)
ICML (dendPLRNN); Hess et al. (2023) ICML (shPLRNN, GTF); Brenner et al. (2024) NeurIPS (AL-RNN).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import torch

from dsrecon.errors import ConfigError, DataError
from dsrecon.models.base import PiecewiseLinearModel
from dsrecon.models.observation import make_observation

#: the most bits :func:`enumerate_codes` will enumerate (2**20 codes)
MAX_ENUMERATE_BITS = 20


def check_int(value: Any, name: str, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in [lo, hi]; ConfigError (naming ``name``) otherwise."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
    if ok:
        v = int(value)
        ok = v >= lo and (hi is None or v <= hi)
    if not ok:
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{name} must be an integer {rng}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------- initialisation
def normalized_positive_definite(M: int) -> torch.Tensor:
    """K = R^T R / M + I scaled to spectral radius 1, R ~ N(0, 1) (M, M); returns (M, M).

    Talathi & Vartak (2016), arXiv:1511.03771, as in the DurstewitzLab reference code
    (``normalized_positive_definite``). Draws from the global torch RNG in the default dtype;
    the scaling is computed in float64. K is symmetric positive definite, so its spectral radius
    is its largest eigenvalue and every diagonal entry lies in (0, 1].
    """
    R = torch.randn(M, M)
    K = R.double().T @ R.double() / M + torch.eye(M, dtype=torch.float64)
    lam = torch.linalg.eigvalsh(K).abs().max()
    return (K / lam).to(torch.get_default_dtype())


def uniform_init(*shape: int) -> torch.Tensor:
    """U(-1/sqrt(d), 1/sqrt(d)) with d = shape[-1] (the reference ``uniform_init``)."""
    r = 1.0 / math.sqrt(shape[-1])
    return torch.empty(*shape).uniform_(-r, r)


def gaussian_init(*shape: int, std: float = 0.01) -> torch.Tensor:
    """N(0, std^2) entries (the AL-RNN reference ``gaussian_init``, std 0.01)."""
    return torch.randn(*shape) * std


def offdiagonal(W: torch.Tensor) -> torch.Tensor:
    """W with its diagonal set to zero, differentiably (no in-place op): (..., M, M)."""
    return W - torch.diag_embed(torch.diagonal(W, dim1=-2, dim2=-1))


# ------------------------------------------------------- shallow canonical form
def _act(u: torch.Tensor, relu_mask: torch.Tensor) -> torch.Tensor:
    return torch.where(relu_mask, torch.relu(u), u)


def shallow_step(form: dict[str, torch.Tensor], z: torch.Tensor, clipped: bool) -> torch.Tensor:
    """Evaluate the canonical form at z: (..., M) -> (..., M) (reference implementation)."""
    u = z @ form["W2"].T  # (..., L')
    if clipped:
        phi = torch.relu(u + form["h2"]) - torch.relu(u)
    else:
        phi = _act(u + form["h2"], form["relu_mask"])
    return form["a"] * z + phi @ form["W1"].T + form["h1"]


def shallow_slopes(form: dict[str, torch.Tensor], z: torch.Tensor, clipped: bool) -> torch.Tensor:
    """Derivative of the hidden nonlinearity at z: (..., M) -> (..., L'), relu'(0) = 0."""
    u = z @ form["W2"].T
    on = (u + form["h2"] > 0).to(z.dtype)
    if clipped:
        return on - (u > 0).to(z.dtype)
    return torch.where(form["relu_mask"], on, torch.ones_like(on))


def shallow_jacobian(form: dict[str, torch.Tensor], z: torch.Tensor, clipped: bool) -> torch.Tensor:
    """dF/dz of the canonical form: (..., M) -> (..., M, M) = diag(a) + W1 diag(d) W2."""
    d = shallow_slopes(form, z, clipped)  # (..., L')
    return torch.diag_embed(form["a"].expand(z.shape)) + (form["W1"] * d[..., None, :]) @ form["W2"]


def shallow_affine_piece(
    form: dict[str, torch.Tensor], on: torch.Tensor, off: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine map of the canonical form for given hidden-unit patterns.

    Parameters
    ----------
    on : (..., L') bool
        Which hidden units are in their linear (non-zero) branch: ``W2 z + h2 > 0`` on ReLU units,
        True on identity units.
    off : (..., L') bool, optional
        Clipped form only: the pattern ``W2 z > 0`` of the subtracted ``relu(W2 z)``.

    Returns
    -------
    W (..., M, M), h (..., M) with F(z) = W z + h inside that region.
    """
    dt = form["a"].dtype
    d1 = on.to(dt)
    d = d1 - off.to(dt) if off is not None else d1
    W = torch.diag_embed(form["a"].expand(*d.shape[:-1], -1)) + (form["W1"] * d[..., None, :]) @ form["W2"]
    h = form["h1"] + (d1 * form["h2"]) @ form["W1"].T
    return W, h


# --------------------------------------------------------------- region codes
def enumerate_codes(R: int, *, device: str | torch.device | None = None) -> torch.Tensor:
    """All 2**R region codes in binary order (code k has bit r = (k >> r) & 1): (2**R, R) bool."""
    if R < 0 or R > MAX_ENUMERATE_BITS:
        raise ConfigError(
            f"cannot enumerate 2**{R} region codes (at most 2**{MAX_ENUMERATE_BITS}); "
            "collect the codes visited by a trajectory with unique_codes(model.region_code(z)) instead"
        )
    k = torch.arange(2**R, device=device)
    return ((k[:, None] >> torch.arange(R, device=device)) & 1).bool()


def unique_codes(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct region codes and how often each occurs: (B, R) bool -> ((U, R) bool, (U,) int)."""
    if codes.dim() != 2 or codes.dtype != torch.bool:
        raise DataError(f"codes must be a (B, R) bool tensor, got {tuple(codes.shape)} {codes.dtype}")
    uniq, counts = torch.unique(codes, dim=0, return_counts=True)
    return uniq, counts


def l2_penalty(t: torch.Tensor) -> torch.Tensor:
    return (t * t).sum()


def l1_penalty(t: torch.Tensor) -> torch.Tensor:
    return t.abs().sum()


# ------------------------------------------------------------------ base class
class PWLRNN(PiecewiseLinearModel):
    """Base class of the PLRNN family: observation model, validation, dispatch, regularisers.

    Subclasses set their parameters (always including ``A`` (M,)), implement ``step``,
    ``jacobian``, ``region_code``, ``affine_piece``, ``shallow_form``, ``code_length`` and
    ``_reg_terms`` / ``_mar_terms``.

    Parameters
    ----------
    obs_dim, latent_dim : int
        N and M.
    obs : {"identity", "affine"}
        Observation model, see :mod:`dsrecon.models.observation`.
    l_init : {"glorot", "uniform"}
        Initialisation of the identity model's initial-state matrix L.
    """

    #: methods ``forward(..., method=name)`` may dispatch to (for torch.func.functional_call)
    DISPATCH: ClassVar[frozenset[str]] = frozenset(
        {"step", "init_state", "observe", "data_state", "force", "jacobian", "region_code",
         "affine_piece", "shallow_form", "latent_regularization", "observation_regularization",
         "observation_map", "rollout"}
    )
    #: penalty used by the default latent regulariser (l2 in the GTF-shPLRNN code)
    penalty: ClassVar[str] = "l2"

    def __init__(
        self, obs_dim: int, latent_dim: int, *, obs: str = "identity", l_init: str = "glorot",
        unknown: dict[str, Any] | None = None,
    ) -> None:
        if unknown:
            skip = ("self", "obs_dim", "latent_dim", "unknown")
            known = [p for p in inspect.signature(type(self).__init__).parameters if p not in skip]
            raise ConfigError(
                f"model {self.name!r} has no hyper-parameter(s) {sorted(unknown)}; it accepts {known}"
            )
        super().__init__(obs_dim, latent_dim)
        self.obs_kind = str(obs).lower()
        self.obs = make_observation(self.obs_kind, self.obs_dim, self.latent_dim, l_init=l_init)

    # ------------------------------------------------------------- dispatch
    def forward(self, *args: Any, method: str = "step", **kwargs: Any) -> Any:
        """Run a protocol method (default ``step``); lets ``functional_call`` reach all of them.

        ``torch.func.functional_call(model, params, (z,))`` runs ``step``;
        ``functional_call(model, params, (x,), {"method": "init_state"})`` runs ``init_state``.
        """
        if method not in self.DISPATCH:
            raise ConfigError(
                f"forward(method={method!r}) is not a protocol method; use one of {sorted(self.DISPATCH)}"
            )
        return getattr(self, method)(*args, **kwargs)

    # ----------------------------------------------------------- validation
    def _check_z(self, z: Any) -> None:
        if not isinstance(z, torch.Tensor):
            raise DataError(
                f"latent state must be a torch.Tensor of shape (B, M={self.latent_dim}), got {type(z).__name__}"
            )
        if z.dim() < 1 or z.shape[-1] != self.latent_dim:
            raise DataError(
                f"latent state must have shape (B, M={self.latent_dim}), got {tuple(z.shape)}; "
                "map observations to latent states with init_state(x) first"
            )
        if z.dtype != self.A.dtype:
            raise DataError(
                f"latent state has dtype {z.dtype} but the model is {self.A.dtype}; "
                f"convert one of them (z.to({self.A.dtype}) or model.to({z.dtype}))"
            )

    def _check_code(self, code: Any) -> torch.Tensor:
        R = self.code_length
        if not isinstance(code, torch.Tensor) or code.dim() < 1 or code.shape[-1] != R:
            shape = tuple(code.shape) if isinstance(code, torch.Tensor) else type(code).__name__
            raise DataError(f"region code must be a bool tensor of shape (R={R},), got {shape}; use region_code(z)")
        if code.dtype != torch.bool:
            if code.is_floating_point() or code.is_complex() or bool(((code != 0) & (code != 1)).any()):
                raise DataError(f"region code must be bool (or integer 0/1), got dtype {code.dtype}")
            code = code.bool()
        return code.to(self.A.device)

    # ------------------------------------------------- observation model
    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        """Latent state from data: x (B, N) or context (B, C, N) (last step used) -> (B, M)."""
        return self.obs.init_state(x)

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        """Observation model: (B, M) -> (B, N)."""
        return self.obs.observe(z)

    def data_state(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Data-inferred state for teacher forcing: (B, N), (B, M) -> (B, M) (see observation.py)."""
        return self.obs.data_state(x, z)

    def observation_regularization(self) -> torch.Tensor:
        """The reference's observation-model regulariser (``obs_model_regularization``); scalar."""
        return self.obs.regularization(self.A)

    def observation_map(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The observation model as an affine map x = B z + b: (B (N, M), b (N,))."""
        return self.obs.affine_map(self.A)

    # ------------------------------------------------------- regularisation
    @property
    def code_length(self) -> int:
        """R, the length of a region code."""
        raise NotImplementedError

    def _reg_terms(self) -> list[torch.Tensor]:
        """Tensors the latent regulariser pulls to 0 (``1 - A`` first)."""
        raise NotImplementedError

    def _mar_terms(self, n_reg: int) -> list[torch.Tensor]:
        """MAR: (1 - A, incoming weights, bias) restricted to the last n_reg units."""
        raise NotImplementedError

    def latent_regularization(self, mar_ratio: float | None = None) -> torch.Tensor:
        """Latent-model regulariser (scalar tensor); the trainer multiplies it by lambda.

        Default (``mar_ratio=None``): the reference's ``lat_model_regularization`` -- the penalty
        of ``1 - A`` plus the penalty of every latent-model weight and bias (all units; L2 = sum
        of squares for PLRNN / dendPLRNN / shPLRNN as in GTF-shPLRNN ``regularize``, L1 for the
        AL-RNN as in ALRNN-DSR ``regularize``). See each model's ``_reg_terms``.

        ``mar_ratio = kappa`` in (0, 1]: manifold-attractor regularisation (Schmidt et al. 2021,
        reference ``mar_loss``): only the last floor(kappa M) units are regularised,
        ``||1 - A_r||_2 + ||W_r||_2 + ||h_r||_2`` (Euclidean / Frobenius norms, not squared),
        W_r the rows of the recurrent weights into those units.
        """
        if mar_ratio is None:
            pen = l1_penalty if self.penalty == "l1" else l2_penalty
            terms = self._reg_terms()
            total = pen(terms[0])
            for t in terms[1:]:
                total = total + pen(t)
            return total
        kappa = float(mar_ratio)
        if not 0.0 < kappa <= 1.0:
            raise ConfigError(f"mar_ratio must be in (0, 1], got {mar_ratio}")
        n_reg = int(math.floor(kappa * self.latent_dim))
        if n_reg == 0:
            return self.A.new_zeros(())
        terms = self._mar_terms(n_reg)
        total = torch.linalg.vector_norm(terms[0])
        for t in terms[1:]:
            total = total + torch.linalg.vector_norm(t)
        return total

    def extra_repr(self) -> str:
        h = ", ".join(f"{k}={v}" for k, v in self.hyper.items())
        return f"obs_dim={self.obs_dim}, latent_dim={self.latent_dim}, {h}"
