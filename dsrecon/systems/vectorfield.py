"""Batched NumPy / torch evaluation of a dysts vector field (or map) and its Jacobian.

Glossary: B batch of states, N state dimension.

:class:`VectorField` wraps one dysts instance and evaluates ``f(x, t)`` for x of shape (B, N)
as a NumPy array *or* a torch tensor (any device, autograd intact), returning the same type.
For each backend it picks the fastest evaluator that is *verified* on probe states against
the per-row NumPy reference (dysts' own scalar code, one state at a time):

``vectorised``
    the dysts source called once for the whole batch (column arrays ``x[:, 0], x[:, 1], ...``
    for ``_rhs``-style systems, the (N, B) matrix for ``rhs(self, X, t)``-style ones), re-bound
    to torch for tensors (:mod:`dsrecon.systems.rebind`); for NumPy a single state goes through
    Python floats (what dysts' numba code computes on), see :attr:`VectorField.scalar_rhs`;
``vmap`` / ``torch-vmap``
    code that only works on one state, vectorised with ``torch.func.vmap`` (NumPy input is
    converted to float64 tensors for batches of 16 or more, else evaluated per row);
``per-row``
    the same source called once per state (a Python loop over B; torch autograd still works);
``numpy-per-row``
    torch input only: states copied to NumPy and back (no autograd; Jacobians then use
    central differences).

Jacobians (B, N, N): dysts' analytic ``_jac`` when it exists *and* agrees with central
differences of the vector field on the probe states (dysts' hand-written Jacobians are not all
correct); otherwise reverse-mode autograd of the torch evaluator (NumPy input is converted to
float64 tensors and back), and central differences (step eps^(1/3) max(1, |x_j|), error
O(eps^(2/3)) ~ 1e-11 relative) if the vector field cannot run on tensors.

:attr:`VectorField.modes` reports which evaluator each backend uses.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from dsrecon.errors import ConfigError, IntegrationError
from dsrecon.systems.batching import (
    agree,
    assemble,
    assemble_jacobian,
    autograd_jacobian,
    central_difference_jacobian,
)
from dsrecon.systems.fastpath import fast_columns, scalar_matrix
from dsrecon.systems.rebind import InstanceProxy
from dsrecon.systems.torchnp import TORCH_NP

__all__ = ["VectorField", "central_difference_jacobian"]

_PROBE_B = 5


class VectorField:
    """Batched evaluation of one dysts system (see the module docstring).

    Parameters
    ----------
    inst : dysts DynSys / DynMap / DynSysDelay instance
    kind : {"flow", "map", "delay"}
    dim : int
        N, the state dimension (for delay systems: 1, the scalar DDE variable).
    probe_state : ndarray (N,)
        A typical state (the default initial condition) around which evaluators are verified.
    """

    def __init__(self, inst: Any, kind: str, dim: int, probe_state: np.ndarray) -> None:
        from dysts.base import DynMap, DynSys

        self.inst, self.kind = inst, kind
        # delay equations: the input is (x(t), x(t - tau)) -> (B, 2), the output dx/dt (B, 1)
        self.dim = 2 if kind == "delay" else int(dim)
        self.n_out = 1 if kind == "delay" else int(dim)
        state = np.asarray(probe_state, dtype=np.float64).reshape(-1)
        self._probe_state = np.resize(state, self.dim) if state.size else np.zeros(self.dim)
        base = DynMap if kind == "map" else DynSys
        cls = type(inst)
        if kind == "delay":
            self._style = "delay"
        else:
            self._style = "columns" if cls.rhs is base.rhs else "matrix"
        self._has_t = kind != "map"
        self._jac_style = None
        if kind == "flow" and inst.has_jacobian():
            self._jac_style = "columns" if cls.jac is DynSys.jac else "matrix"
        self._proxies: dict[Any, InstanceProxy] = {}
        self._np_fn: Callable | None = None
        self._torch_fn: Callable | None = None
        self.modes: dict[str, str] = {}
        self._analytic_ok: bool | None = None
        self._autograd_ok: bool | None = None
        self._ref: tuple | None = None
        self._scalar: Callable | None = None

    # ------------------------------------------------------------------ plumbing
    def _proxy(self, device=None, dtype=None) -> InstanceProxy:
        key = (str(device), dtype)
        p = self._proxies.get(key)
        if p is None:
            ns = np if device is None else TORCH_NP
            p = self._proxies[key] = InstanceProxy(self.inst, ns, device, dtype)
        return p

    def _raw_call(self, proxy: InstanceProxy, x: Any, t: Any, what: str = "rhs") -> Any:
        """Call the dysts source once on x (B, N) (a batch) or x (N,) (one state, as dysts does)."""
        try:
            return self._dispatch(proxy, x, t, what)
        finally:
            if proxy._written:
                proxy.reset()

    def _dispatch(self, proxy: InstanceProxy, x: Any, t: Any, what: str) -> Any:
        xt = x if x.ndim == 1 else x.T  # (N, B) or (N,)
        if self._style == "delay":
            return proxy._rhs(xt[0], xt[1], t, *proxy.param_list)
        if what == "jac":
            if self._jac_style == "columns":
                return proxy._jac(*xt, t, *proxy.param_list)
            return proxy.jac(xt, t)
        if self._style == "matrix":
            return proxy.rhs(xt, t) if self._has_t else proxy.rhs(xt)
        if self._has_t:
            return proxy._rhs(*xt, t, *proxy.param_list)
        return proxy._rhs(*xt, *proxy.param_list)

    def _vectorised(self, use_torch: bool = False, what: str = "rhs") -> Callable:
        n = self.n_out
        assemble_fn = assemble_jacobian if what == "jac" else assemble

        def f(x, t):
            proxy = self._proxy(x.device, x.dtype) if use_torch else self._proxy()
            return assemble_fn(self._raw_call(proxy, x, t, what), x.shape[0], n, x)

        return f

    def _per_row(self, what: str = "rhs") -> Callable:
        n = self.n_out
        assemble_fn = assemble_jacobian if what == "jac" else assemble

        def f(x, t):
            is_t = isinstance(x, torch.Tensor)
            proxy = self._proxy(x.device, x.dtype) if is_t else self._proxy()
            tb = t if is_t or np.ndim(t) == 0 else np.asarray(t)
            rows = []
            for b in range(x.shape[0]):
                tt = tb if np.ndim(tb) == 0 else tb[b]
                # one state (N,) exactly as dysts/solve_ivp pass it: scalars for _rhs(x, y, ...)
                rows.append(assemble_fn(self._raw_call(proxy, x[b], tt, what), 1, n, x))
            if is_t:
                return torch.cat(rows, dim=0)
            return np.concatenate(rows, axis=0)

        return f

    def _vmapped(self) -> Callable:
        """torch.func.vmap of the one-state evaluation (vectorises code that only works per state)."""
        n = self.n_out

        def one(xb, tb):
            return assemble(self._raw_call(self._proxy(xb.device, xb.dtype), xb, tb), 1, n, xb)[0]

        def f(x, t):
            tt = t if isinstance(t, torch.Tensor) else torch.as_tensor(t, dtype=x.dtype, device=x.device)
            if tt.ndim == 0:
                return torch.func.vmap(one, in_dims=(0, None))(x, tt)
            return torch.func.vmap(one)(x, tt)

        return f

    @staticmethod
    def _via_torch(fn: Callable) -> Callable:
        """A NumPy-in/NumPy-out wrapper around a torch evaluator (CPU, float64)."""

        def f(x, t):
            tt = torch.as_tensor(np.asarray(t, dtype=np.float64))
            with torch.no_grad():
                return fn(torch.as_tensor(x, dtype=torch.float64), tt).numpy()

        return f

    def _numpy_rows_for_torch(self, what: str = "rhs") -> Callable:
        ref = self._per_row(what)

        def f(x, t):
            tn = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t
            out = ref(x.detach().cpu().numpy().astype(np.float64), tn)
            return torch.as_tensor(out, dtype=x.dtype, device=x.device)

        return f

    # ------------------------------------------------------------------ probing
    def _probe_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(20240601)
        x0 = self._probe_state
        scale = float(np.max(np.abs(x0))) if x0.size and np.max(np.abs(x0)) > 0 else 1.0
        x = x0 + 0.01 * scale * rng.standard_normal((_PROBE_B, self.dim))
        x[0] = x0
        t = rng.uniform(0.0, 2.0, _PROBE_B)
        return x, t

    def _reference(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._ref is not None:
            return self._ref
        x, t = self._probe_inputs()
        try:
            ref = self._per_row()(x, t)
        except Exception as exc:  # the dysts code itself fails
            raise IntegrationError(
                f"the dysts vector field of {type(self.inst).__name__} cannot be evaluated "
                f"({type(exc).__name__}: {exc}); this system is unusable in dysts 0.96"
            ) from exc
        self._ref = (x, t, ref)
        return self._ref

    def _setup_numpy(self) -> Callable:
        if self._np_fn is None:
            x, t, ref = self._reference()
            fn, mode = self._per_row(), "per-row"
            rows = self._per_row()
            via = self._via_torch(self._vmapped())

            def hybrid(xb, tb):  # vmap pays ~1 ms per call: worth it for batches only
                return rows(xb, tb) if xb.shape[0] < 16 else via(xb, tb)

            for cand, check, name in ((self._vectorised(), None, "vectorised"), (hybrid, via, "torch-vmap")):
                try:
                    if agree((check or cand)(x, t), ref, 1e-12 if name == "vectorised" else 1e-9):
                        fn, mode = cand, name
                        break
                except Exception:
                    continue
            if mode == "vectorised" and self._style == "columns" and self.n_out > 1:
                fn, self._scalar = fast_columns(self._proxy(), self.n_out, self._has_t, x, t, ref, fn)
            elif self._style == "matrix" and self._has_t:
                self._scalar = scalar_matrix(self._proxy(), x, t, ref)
            self._np_fn, self.modes["numpy"] = fn, mode
        return self._np_fn

    def _setup_torch(self) -> Callable:
        if self._torch_fn is None:
            x, t, ref = self._reference()
            candidates = [
                (self._vectorised(use_torch=True), "vectorised"),
                (self._vmapped(), "vmap"),
                (self._per_row(), "per-row"),
            ]
            chosen = None
            for fn, mode in candidates:
                try:
                    xt = torch.as_tensor(x).requires_grad_(True)
                    out = fn(xt, torch.as_tensor(t))
                    if not agree(out.detach().numpy(), ref, 1e-9):
                        continue
                    try:
                        if out.requires_grad:
                            (g,) = torch.autograd.grad(out.sum(), xt, allow_unused=True)
                        else:  # f does not depend on x (e.g. a purely time-driven flow)
                            g = torch.zeros_like(xt)
                        g = torch.zeros_like(xt) if g is None else g
                        grad_ok = bool(torch.isfinite(g).all()) or not np.isfinite(ref).all()
                    except Exception:
                        grad_ok = False
                    chosen = (fn, mode, grad_ok)
                    break
                except Exception:
                    continue
            if chosen is None:
                chosen = (self._numpy_rows_for_torch(), "numpy-per-row", False)
            self._torch_fn, self.modes["torch"], self._autograd_ok = chosen
        return self._torch_fn

    def _setup_jacobian(self) -> None:
        if "jacobian" in self.modes:
            return
        f_np = self._setup_numpy()
        self._setup_torch()
        x, t, _ = self._reference()
        self._analytic_ok = False
        if self._jac_style is not None:
            try:
                fd = central_difference_jacobian(f_np, x, t)
                an = self._vectorised(what="jac")(x, t)
                self._analytic_ok = agree(an, fd, 1e-5)
            except Exception:
                self._analytic_ok = False
        if self._analytic_ok:
            self.modes["jacobian"] = "analytic"
        elif self._autograd_ok:
            self.modes["jacobian"] = "autograd"
        else:
            self.modes["jacobian"] = "central-differences"
        if self._jac_style is not None and not self._analytic_ok:
            self.modes["jacobian"] += " (dysts' analytic Jacobian disagrees with its vector field; not used)"

    def probe_all(self) -> dict[str, str]:
        """Run every probe now; returns :attr:`modes`."""
        if self.kind == "delay":
            self._setup_numpy()
            self._setup_torch()
            self.modes.setdefault("jacobian", "not defined (delay equation)")
            return dict(self.modes)
        self._setup_jacobian()
        return dict(self.modes)

    # ------------------------------------------------------------------ public
    @property
    def scalar_rhs(self) -> Callable | None:
        """f(t, y) on Python floats (t float, y list of N floats) -> N floats, or None.

        Available for flows whose evaluation on Python floats passed the probe (most dysts
        flows); used by the single-trajectory fast path of :func:`dsrecon.systems.integrate`.
        """
        if self.kind != "flow":
            return None
        self._setup_numpy()
        return self._scalar

    def __call__(self, x: Any, t: Any = 0.0) -> Any:
        """f(x, t): (B, N) array or tensor -> (B, N) of the same type (t scalar or (B,))."""
        if isinstance(x, torch.Tensor):
            return self._setup_torch()(x, t)
        return self._setup_numpy()(x, t)

    def jacobian(self, x: Any, t: Any = 0.0) -> Any:
        """df/dx: (B, N) -> (B, N, N) of the same type (see the module docstring)."""
        self._setup_jacobian()
        is_t = isinstance(x, torch.Tensor)
        mode = self.modes["jacobian"]
        if mode == "analytic":
            jac = self._vectorised(use_torch=is_t, what="jac")
            try:
                return jac(x, t)
            except Exception:  # e.g. an analytic Jacobian that is numba-only on tensors
                pass
        if mode.startswith("autograd") or (mode == "analytic" and self._autograd_ok):
            xt = x if is_t else torch.as_tensor(x, dtype=torch.float64)
            tt = torch.as_tensor(t, dtype=xt.dtype, device=xt.device) if not isinstance(t, torch.Tensor) else t
            jac = autograd_jacobian(self._setup_torch(), xt, tt)
            return jac if is_t else jac.numpy()
        xn = x.detach().cpu().numpy().astype(np.float64) if is_t else x
        tn = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t
        out = central_difference_jacobian(self._setup_numpy(), xn, tn)
        return torch.as_tensor(out, dtype=x.dtype, device=x.device) if is_t else out

    def delayed(self, x: Any, x_delayed: Any, t: Any = 0.0) -> Any:
        """Delay systems: dx/dt = f(x(t), x(t - tau), t) for x, x_delayed (B,) -> (B,)."""
        if self.kind != "delay":
            raise ConfigError(f"{type(self.inst).__name__} is not a delay differential equation")
        if isinstance(x, torch.Tensor):
            return self(torch.stack([x, x_delayed], dim=-1), t)[:, 0]
        return self(np.stack([np.asarray(x, dtype=np.float64), np.asarray(x_delayed, dtype=np.float64)], axis=-1), t)[:, 0]


