"""Canonical forms and forcing schedules of the fused forced rollout: building and validation.

Glossary: K ensemble members, B batch, T time, M latent dim, L hidden dim.

A *form* is the K-stacked shallow canonical form of a PLRNN-family model (see
:mod:`dsrecon.training.fused`); a forcing schedule is ``force_mask`` (M,) and ``alpha`` (T,)
(shared by all members) or (K, T) (one per member, e.g. the per-member alphas of adaptive GTF,
Hess et al., ICML 2023). Everything here runs before any rollout work, so bad input fails
early with a :class:`~dsrecon.errors.ConfigError` that says what to pass instead.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from dsrecon.errors import ConfigError

__all__ = ["stack_forms", "gtf_alpha", "stf_alpha", "check_form", "check_inputs"]

_KEYS = ("a", "W1", "W2", "h1", "h2")      # the form's tensors


def stack_forms(forms: Sequence[Mapping[str, torch.Tensor]], *, clipped: bool = False) -> dict:
    """Stack K single-model forms (``model.shallow_form()``: a (M,), W1 (M, L), ...) into one
    ensemble form (a (K, M), W1 (K, M, L), ...). Differentiable; relu_masks must agree."""
    if len(forms) == 0:
        raise ConfigError("stack_forms needs at least one form")
    mask = forms[0]["relu_mask"]
    for f in forms[1:]:
        if f["relu_mask"].shape != mask.shape or not torch.equal(f["relu_mask"], mask):
            raise ConfigError("stack_forms: all members must share the same relu_mask")
    out = {key: torch.stack([f[key] for f in forms]) for key in _KEYS}
    out["relu_mask"] = mask
    out["clipped"] = bool(clipped)
    return out


def gtf_alpha(T: int, alpha: float, *, dtype: torch.dtype = torch.float64,
              device: Any = None) -> torch.Tensor:
    """Constant forcing strength (generalised teacher forcing): (T,) filled with ``alpha``."""
    if int(T) < 1:
        raise ConfigError(f"T must be >= 1, got {T}")
    if not (0.0 <= float(alpha) <= 1.0):
        raise ConfigError(f"alpha must lie in [0, 1], got {alpha}")
    return torch.full((int(T),), float(alpha), dtype=dtype, device=device)


def stf_alpha(T: int, tau: int, *, dtype: torch.dtype = torch.float64,
              device: Any = None) -> torch.Tensor:
    """Sparse teacher forcing every ``tau`` steps: (T,) with 1 at t = 0, tau, 2 tau, ..., else 0.

    Input step t = 0 forces the first state, so the latent state is replaced by the data at
    z_1, z_{tau+1}, ... of the 1-based convention of Mikhaeil et al. (NeurIPS 2022).
    """
    if int(T) < 1:
        raise ConfigError(f"T must be >= 1, got {T}")
    if int(tau) < 1:
        raise ConfigError(f"tau must be >= 1, got {tau}")
    alpha = torch.zeros(int(T), dtype=dtype, device=device)
    alpha[:: int(tau)] = 1.0
    return alpha


def check_form(form: Mapping[str, Any]) -> tuple[dict, torch.Tensor, bool, int, int, int]:
    """Validate a stacked form; returns (tensors, relu_mask, clipped, K, M, L)."""
    if not isinstance(form, Mapping):
        raise ConfigError(f"form must be a mapping with keys {_KEYS + ('relu_mask',)}, "
                          f"got {type(form).__name__}")
    missing = [k for k in _KEYS + ("relu_mask",) if k not in form]
    if missing:
        raise ConfigError(f"form is missing {missing}; build it with stack_forms("
                          "[model.shallow_form()], clipped=model.clipped)")
    t = {k: form[k] for k in _KEYS}
    for k, v in t.items():
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise ConfigError(f"form[{k!r}] must be a floating-point tensor")
    a = t["a"]
    if a.dim() != 2:
        raise ConfigError(f"form['a'] must be (K, M) (ensemble-stacked), got {tuple(a.shape)}; "
                          "stack single-model forms with stack_forms([...])")
    K, M = a.shape
    if t["W1"].dim() != 3 or t["W1"].shape[:2] != (K, M):
        raise ConfigError(f"form['W1'] must be (K, M, L) = ({K}, {M}, L), got "
                          f"{tuple(t['W1'].shape)}")
    L = t["W1"].shape[2]
    expect = {"W2": (K, L, M), "h1": (K, M), "h2": (K, L)}
    for k, shp in expect.items():
        if tuple(t[k].shape) != shp:
            raise ConfigError(f"form[{k!r}] must have shape {shp} (K, M, L from a and W1), "
                              f"got {tuple(t[k].shape)}")
    if M < 1 or L < 1 or K < 1:
        raise ConfigError(f"form sizes must be >= 1, got K={K}, M={M}, L={L}")
    dev = a.device
    if any(v.dtype != a.dtype or v.device != dev for v in t.values()):
        raise ConfigError("form tensors must share one dtype and device, got "
                          f"{[(k, v.dtype, str(v.device)) for k, v in t.items()]}")
    mask = form["relu_mask"]
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ConfigError("form['relu_mask'] must be a bool tensor (True: relu, False: identity)")
    if tuple(mask.shape) != (L,):
        raise ConfigError(f"form['relu_mask'] must be (L,) = ({L},), got {tuple(mask.shape)}")
    clipped = form.get("clipped", False)
    if not isinstance(clipped, bool):
        raise ConfigError(f"form['clipped'] must be a bool, got {clipped!r}")
    if clipped and not bool(mask.all()):
        raise ConfigError("a clipped form needs relu_mask all True (every hidden unit is clipped)")
    return t, mask, clipped, K, M, L


def check_inputs(form, z0, zhat, force_mask, alpha):
    """Validate everything before any work; returns (tensors, relu_mask, clipped, c (K, T, M)).

    alpha may be (T,) (shared by all K members) or (K, T) (one schedule per member).
    """
    t, mask, clipped, K, M, L = check_form(form)
    ref = t["a"]
    for name, x in (("z0", z0), ("zhat", zhat)):
        if not isinstance(x, torch.Tensor) or x.dtype != ref.dtype or x.device != ref.device:
            raise ConfigError(f"{name} must be a tensor of the form's dtype and device "
                              f"({ref.dtype}, {ref.device})")
    if zhat.dim() != 4 or zhat.shape[0] != K or zhat.shape[3] != M or zhat.shape[2] < 1:
        raise ConfigError(f"zhat must be (K, B, T, M) = ({K}, B, T>=1, {M}), got "
                          f"{tuple(zhat.shape)}")
    B, T = zhat.shape[1], zhat.shape[2]
    if B < 1:
        raise ConfigError("zhat has an empty batch dimension")
    if tuple(z0.shape) != (K, B, M):
        raise ConfigError(f"z0 must be (K, B, M) = ({K}, {B}, {M}) to match zhat, got "
                          f"{tuple(z0.shape)}")
    fm = torch.as_tensor(force_mask, device=ref.device)
    if tuple(fm.shape) != (M,):
        raise ConfigError(f"force_mask must have shape (M,) = ({M},), got {tuple(fm.shape)}")
    fm = fm.to(ref.dtype)
    al = torch.as_tensor(alpha, device=ref.device)
    if tuple(al.shape) not in ((T,), (K, T)):
        raise ConfigError(f"alpha must have shape (T,) = ({T},) (one forcing schedule for all "
                          f"members; see gtf_alpha / stf_alpha) or (K, T) = ({K}, {T}) (one per "
                          f"ensemble member), got {tuple(al.shape)}")
    per_member = al.dim() == 2
    al = al.to(ref.dtype).expand(K, T)                 # (K, T)
    for name, x in (("alpha", al), ("force_mask", fm)):
        lo, hi = torch.aminmax(x)
        if not (float(lo) >= 0.0 and float(hi) <= 1.0):      # False for NaN as well
            where = ""
            if name == "alpha" and per_member:
                ok = ((x >= 0) & (x <= 1)).all(dim=1)     # (K,) False for NaN as well
                where = f" (first offending member k={int((~ok).nonzero()[0, 0])} of K={K})"
            raise ConfigError(f"{name} values must lie in [0, 1], got range "
                              f"[{float(lo)}, {float(hi)}]{where}")
    c = (al[:, :, None] * fm).detach()           # (K, T, M) weight per member, step and unit
    return t, mask, clipped, c
