"""Tangent dynamics of flows for Lyapunov spectra: the variational equations, batched.

Glossary: B initial conditions, N state dimension.

For dx/dt = f(x, t) a tangent frame Q (B, N, N) evolves by dQ/dt = J(x, t) Q, J = df/dx
(the *variational equations*). Integrating state and frame together and re-orthonormalising Q
every few steps (Benettin et al. 1980, Meccanica 15:9; Shimada & Nagashima 1979, Prog Theor Phys
61:1605) gives the Lyapunov spectrum; :mod:`dsrecon.analysis.lyapunov` does the QR bookkeeping,
this module only advances (x, Q):

* ``"rk4"``: classical Runge-Kutta of the combined system with J evaluated at every stage state
  (4 vector-field and 4 Jacobian evaluations per step), NumPy float64 on CPU or torch float64 on
  ``device``;
* ``"dop853"``: the adaptive 8th-order Dormand-Prince integrator of :mod:`dsrecon.systems` on the
  flattened (N + N^2)-dimensional system (each trajectory with its own step size), sampled every
  ``dt``.

Also :func:`default_flow_dt`, a step size for fixed-step RK4 from the system's period and the
stiffness (spectral radius of J) along a short trajectory.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from dsrecon.errors import ConfigError, IntegrationError

FLOW_METHODS = ("rk4", "dop853")


def autograd_jacobian(fun: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Jacobian of a row-wise batched function by reverse mode: x (B, N) -> (B, N_out, N).

    Rows must not interact (true for vector fields and maps evaluated on a batch of states).
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = fun(x)
        rows = []
        for i in range(y.shape[1]):
            (g,) = torch.autograd.grad(y[:, i].sum(), x, retain_graph=i + 1 < y.shape[1], allow_unused=True)
            rows.append(torch.zeros_like(x) if g is None else g)
    return torch.stack(rows, dim=1).detach()


class FlowTangent:
    """Advance states and tangent frames of a flow system.

    Parameters
    ----------
    system : System
        A flow from :func:`dsrecon.systems.get` (anything with ``rhs(x, t)``, ``jacobian(x, t)``).
    dt : float
        Step (rk4) or sampling interval (dop853).
    method : {"rk4", "dop853"}
    jacobian : {"analytic", "autograd", "fd"}
        The system's Jacobian; reverse-mode autograd of ``rhs`` on torch tensors; or "fd": the
        products J Q directly by central differences of ``rhs`` along the columns of Q, all in one
        batched call (step 6e-6 (1 + |x|) / |q|, relative error ~1e-10) -- much cheaper than a
        Jacobian obtained by autograd when the system has no analytic one.
    device : torch device or None
        None / "cpu" with rk4 -> NumPy float64; otherwise torch float64 on that device.
    rtol, atol : float
        Tolerances of dop853.
    """

    def __init__(
        self,
        system: Any,
        dt: float,
        *,
        method: str = "rk4",
        jacobian: str = "analytic",
        device: str | torch.device | None = None,
        rtol: float = 1e-10,
        atol: float = 1e-12,
    ) -> None:
        if method not in FLOW_METHODS:
            raise ConfigError(f"flow method must be one of {FLOW_METHODS}, got {method!r}")
        self.system, self.dt, self.method = system, float(dt), method
        self.use_torch = jacobian == "autograd" or (device is not None and torch.device(device).type != "cpu")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.rtol, self.atol = rtol, atol
        self.t = 0.0
        if jacobian not in ("analytic", "autograd", "fd"):
            raise ConfigError(f"jacobian must be 'analytic', 'autograd' or 'fd', got {jacobian!r}")
        self.jacobian_mode = jacobian
        if jacobian == "analytic":
            self.jac = system.jacobian
        else:  # "fd" keeps autograd as the full-Jacobian fallback (used by dop853's flattened system)
            self.jac = lambda x, t=0.0: autograd_jacobian(lambda xx: system.rhs(xx, t), x)
        self.use_torch = self.use_torch and not (jacobian == "fd" and self.device.type == "cpu")

    def jq(self, x: Any, Q: Any, t: Any) -> Any:
        """J(x, t) Q: (B, N), (B, N, N) -> (B, N, N); t a float or per-row times (B,)."""
        if self.jacobian_mode != "fd":
            return self.jac(x, t) @ Q
        B, N = x.shape
        if isinstance(x, torch.Tensor):
            xa = x.abs().amax(dim=1)
            qn = torch.linalg.vector_norm(Q, dim=1).clamp_min(1e-300)  # (B, N) column norms
            cat = torch.cat
        else:
            xa = np.abs(x).max(axis=1)
            qn = np.maximum(np.linalg.norm(Q, axis=1), 1e-300)
            cat = np.concatenate
        eps = 6e-6 * (1.0 + xa)[:, None] / qn  # (B, N): a step per column
        D = Q.transpose(1, 2) * eps[:, :, None] if isinstance(Q, torch.Tensor) else \
            np.swapaxes(Q, 1, 2) * eps[:, :, None]  # (B, N_col, N) displacements
        X = x[:, None, :]
        if np.ndim(t) > 0:  # per-row times (adaptive solver): one per displaced state
            t = torch.repeat_interleave(t, N).repeat(2) if isinstance(t, torch.Tensor) else np.tile(np.repeat(t, N), 2)
        Y = self.system.rhs(cat([(X + D).reshape(B * N, N), (X - D).reshape(B * N, N)], 0), t)
        diff = (Y[: B * N] - Y[B * N :]).reshape(B, N, N) / (2.0 * eps[:, :, None])  # (B, col, N)
        return diff.transpose(1, 2) if isinstance(diff, torch.Tensor) else np.swapaxes(diff, 1, 2)

    # ---------------------------------------------------------------- arrays
    def asarray(self, x: np.ndarray) -> Any:
        if self.use_torch:
            return torch.as_tensor(np.asarray(x), dtype=torch.float64, device=self.device)
        return np.asarray(x, dtype=np.float64)

    def eye(self, B: int, N: int) -> Any:
        if self.use_torch:
            return torch.eye(N, dtype=torch.float64, device=self.device).expand(B, N, N).clone()
        return np.broadcast_to(np.eye(N), (B, N, N)).copy()

    # ----------------------------------------------------------------- steps
    def advance_state(self, x: Any, n: int) -> Any:
        """n steps of the state alone (the transient): (B, N) -> (B, N)."""
        f, h = self.system.rhs, self.dt
        if self.method == "dop853":
            x = self._dop853(x, None, n)[0]
            return x
        for _ in range(n):
            t = self.t
            k1 = f(x, t)
            k2 = f(x + (0.5 * h) * k1, t + 0.5 * h)
            k3 = f(x + (0.5 * h) * k2, t + 0.5 * h)
            k4 = f(x + h * k3, t + h)
            x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
            self.t = t + h
        return x

    def advance(self, x: Any, Q: Any, n: int) -> tuple[Any, Any]:
        """n steps of state and frame: (B, N), (B, N, N) -> same."""
        if self.method == "dop853":
            return self._dop853(x, Q, n)
        f, JQ, h = self.system.rhs, self.jq, self.dt
        for _ in range(n):
            t = self.t
            k1 = f(x, t)
            K1 = JQ(x, Q, t)
            x2 = x + (0.5 * h) * k1
            k2 = f(x2, t + 0.5 * h)
            K2 = JQ(x2, Q + (0.5 * h) * K1, t + 0.5 * h)
            x3 = x + (0.5 * h) * k2
            k3 = f(x3, t + 0.5 * h)
            K3 = JQ(x3, Q + (0.5 * h) * K2, t + 0.5 * h)
            x4 = x + h * k3
            k4 = f(x4, t + h)
            K4 = JQ(x4, Q + h * K3, t + h)
            x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
            Q = Q + (h / 6.0) * (K1 + 2.0 * K2 + 2.0 * K3 + K4)
            self.t = t + h
        return x, Q

    def _dop853(self, x: Any, Q: Any | None, n: int) -> tuple[Any, Any]:
        from dsrecon.systems import integrate

        B, N = x.shape
        sysf, jac = self.system.rhs, self.jac
        if Q is None:
            def f(t, y):
                return sysf(y, t)

            y0 = x
        else:
            cat = torch.cat if self.use_torch else np.concatenate

            def f(t, y):
                xs, Qs = y[:, :N], y[:, N:].reshape(-1, N, N)
                return cat([sysf(xs, t), self.jq(xs, Qs, t).reshape(-1, N * N)], 1)

            y0 = cat([x, Q.reshape(B, N * N)], 1)
        res = integrate(f, y0, n + 1, self.dt, method="dop853", rtol=self.rtol, atol=self.atol, t0=self.t)
        if res.failed.any():
            i = int(np.flatnonzero(res.failed)[0])
            raise IntegrationError(
                f"integrating {getattr(self.system, 'name', 'the system')} failed for initial condition {i}: "
                f"{res.reasons[i]}; try other initial conditions or method='rk4' with a smaller dt"
            )
        self.t += n * self.dt
        y = res.values[:, -1]
        if Q is None:
            return y, None
        return y[:, :N], y[:, N:].reshape(B, N, N)


def default_flow_dt(system: Any, x: np.ndarray, *, n_probe: int = 200) -> float:
    """A fixed RK4 step for Lyapunov spectra of a flow.

    ``min(period / 100, 0.5 / rho)`` where ``rho`` is the largest spectral radius of J along a
    short probe trajectory from x (B, N) (RK4 with 5 times the dysts step, ``n_probe`` steps):
    a step well inside RK4's stability region (|h lambda| < 2.78) that resolves the fastest time
    scale. Falls back to the dysts step ``system.dt`` when the probe fails.
    """
    base = float(getattr(system, "dt", None) or 1e-3)
    period = getattr(system, "period", None)
    xs = np.asarray(x, dtype=np.float64)
    rho = 0.0
    try:
        probe = FlowTangent(system, base * 5)
        for _ in range(4):
            J = np.asarray(system.jacobian(xs))
            rho = max(rho, float(np.max(np.abs(np.linalg.eigvals(J)))))
            xs = probe.advance_state(xs, n_probe // 4)
        if not np.isfinite(rho):
            return base
    except (IntegrationError, FloatingPointError, np.linalg.LinAlgError):
        return base
    h = 0.5 / rho if rho > 0 else np.inf
    if period:
        h = min(h, float(period) / 100.0)
    return float(h) if np.isfinite(h) and h > 0 else base
