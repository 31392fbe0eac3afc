"""Run dysts' own vector-field source on batches and on torch tensors.

dysts 0.96 stores each right-hand side as a static method ``_rhs(x, y, z, t, *params)`` of
scalars (mostly numba-``njit``-ed; a few are plain Python), or, for ~17 flows, as an instance
method ``rhs(self, X, t)`` that unpacks ``X`` and reads parameters from ``self``. Neither is
batched, and numba functions reject torch tensors. This module makes the *same source code*
usable in three ways, without copying any equation:

* :func:`unwrap` turns a numba dispatcher back into its Python function (``.py_func``), so
  it runs on NumPy arrays elementwise (one call for a whole batch: pass column arrays);
* :func:`rebind` re-creates a function with its global ``np`` replaced by a namespace, e.g.
  :data:`dsrecon.systems.torchnp.TORCH_NP`, so ``np.sin`` becomes ``torch.sin`` on tensors;
* :class:`InstanceProxy` stands in for a dysts instance inside ``rhs(self, ...)`` methods:
  attribute reads return parameters converted for the backend (tensors on the right device)
  and methods re-bound the same way; writes stay on the proxy and are undone after each
  evaluation (dysts instances never change; evaluations are stateless).

Whether a re-bound function really computes the same numbers on a batch is *checked*, not
assumed: see the probe in :mod:`dsrecon.systems.vectorfield`.
"""

from __future__ import annotations

import inspect
import types
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["unwrap", "rebind", "InstanceProxy", "to_backend"]

_MISSING = object()
_REBIND_CACHE: dict[tuple[int, int], Callable] = {}


def unwrap(obj: Any) -> Any:
    """Strip ``staticmethod`` wrappers and numba dispatchers down to the Python function."""
    for _ in range(8):
        if isinstance(obj, staticmethod):
            obj = obj.__func__
        elif hasattr(obj, "py_func") and callable(obj):  # numba CPUDispatcher
            obj = obj.py_func
        else:
            break
    return obj


def rebind(fn: Callable, namespace: Any) -> Callable:
    """``fn`` (unwrapped) with every global bound to the numpy module replaced by ``namespace``."""
    fn = unwrap(fn)
    if namespace is np or not isinstance(fn, types.FunctionType):
        return fn
    key = (id(fn), id(namespace))
    hit = _REBIND_CACHE.get(key)
    if hit is not None:
        return hit
    glb = dict(fn.__globals__)
    for name, value in fn.__globals__.items():
        if value is np:
            glb[name] = namespace
    new = types.FunctionType(fn.__code__, glb, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    _REBIND_CACHE[key] = new
    return new


def to_backend(value: Any, device: torch.device | None, dtype: torch.dtype | None) -> Any:
    """Convert a parameter for the torch backend (``device is None``: leave NumPy values).

    Python and NumPy scalars become Python numbers (cheap to combine with tensors); float
    arrays become tensors of ``dtype`` on ``device``; anything else is returned unchanged.
    """
    if device is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return value.item()
        if value.dtype.kind in "fiu":
            return torch.as_tensor(value.astype(np.float64), dtype=dtype, device=device)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=dtype, device=device)
    return value


class InstanceProxy:
    """A stand-in ``self`` for dysts instance methods evaluated on another backend.

    Parameters
    ----------
    inst : dysts.base.BaseDyn
        The real instance (never modified).
    namespace : module-like
        What ``np`` means inside re-bound methods (``numpy`` itself or ``TORCH_NP``).
    device, dtype : torch device / dtype or None
        Parameter conversion target (None: NumPy backend, values unchanged).
    """

    def __init__(self, inst: Any, namespace: Any, device=None, dtype=None) -> None:
        object.__setattr__(self, "_inst", inst)
        object.__setattr__(self, "_ns", namespace)
        object.__setattr__(self, "_device", device)
        object.__setattr__(self, "_dtype", dtype)
        object.__setattr__(self, "_written", set())

    def __getattr__(self, name: str) -> Any:
        inst = object.__getattribute__(self, "_inst")
        ns = object.__getattribute__(self, "_ns")
        if name.startswith("__"):
            raise AttributeError(name)
        if name in inst.__dict__:
            value = to_backend(inst.__dict__[name], self._device, self._dtype)
        else:
            static = _MISSING
            for klass in type(inst).__mro__:
                if name in klass.__dict__:
                    static = klass.__dict__[name]
                    break
            if static is _MISSING:
                value = to_backend(getattr(inst, name), self._device, self._dtype)
            elif isinstance(static, staticmethod) or hasattr(static, "py_func"):
                value = rebind(static, ns)
            elif isinstance(static, types.FunctionType):
                value = types.MethodType(rebind(static, ns), self)
            elif isinstance(static, (property, classmethod)) or inspect.isdatadescriptor(static):
                value = to_backend(getattr(inst, name), self._device, self._dtype)
            else:
                value = to_backend(static, self._device, self._dtype)
        object.__setattr__(self, name, value)  # cache (not recorded as a write)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        """A dysts method assigning to ``self`` (e.g. BlinkingVortexMap flipping ``b`` at every
        call) writes here; :meth:`reset` forgets such writes so evaluations stay stateless."""
        self._written.add(name)
        object.__setattr__(self, name, value)

    def reset(self) -> None:
        """Drop attributes written by methods (cached conversions are kept)."""
        for name in self._written:
            self.__dict__.pop(name, None)
        self._written.clear()
