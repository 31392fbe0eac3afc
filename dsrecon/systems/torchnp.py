"""A NumPy-compatible namespace whose functions run on torch tensors.

dysts writes every vector field as a plain Python function of NumPy scalars (``np.sin(x)``,
``np.heaviside(u, 0)``, ...), most of them compiled with numba. To evaluate the *same source* on
torch tensors (any device, with autograd) we re-bind the function's global name ``np`` to
:data:`TORCH_NP` (see :mod:`dsrecon.systems.vectorfield`). Every function here dispatches on its
arguments: if any argument is a ``torch.Tensor`` the torch operation is used, otherwise the
call is forwarded to NumPy unchanged, so constant sub-expressions such as ``np.sqrt(2)`` or
``np.sinh(np.pi * b / a)`` with scalar parameters keep NumPy semantics.

Only the subset of NumPy used by dysts 0.96 (flows and maps) is provided; an attribute that is
missing raises ``AttributeError``, which the vector-field probe turns into a per-row fallback.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["TORCH_NP", "is_tensor"]


def is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _any_tensor(args) -> torch.Tensor | None:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
        if isinstance(a, (list, tuple)):
            t = _any_tensor(a)
            if t is not None:
                return t
    return None


def _as_tensor(x: Any, like: torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=like.dtype, device=like.device)


def _unary(tfn: Callable, nfn: Callable) -> Callable:
    def f(x, *args, **kwargs):
        if isinstance(x, torch.Tensor):
            return tfn(x)
        return nfn(x, *args, **kwargs)

    f.__name__ = nfn.__name__
    return f


def _binary(tfn: Callable, nfn: Callable) -> Callable:
    def f(a, b, *args, **kwargs):
        t = _any_tensor((a, b))
        if t is None:
            return nfn(a, b, *args, **kwargs)
        return tfn(_as_tensor(a, t), _as_tensor(b, t))

    f.__name__ = nfn.__name__
    return f


def _heaviside(x, h0):
    t = _any_tensor((x, h0))
    if t is None:
        return np.heaviside(x, h0)
    x = _as_tensor(x, t)
    # torch.heaviside has no derivative; this form has the a.e. derivative 0, like the step
    return torch.where(x > 0, torch.ones_like(x), torch.where(x == 0, _as_tensor(h0, t).expand_as(x), torch.zeros_like(x)))


def _sign(x):
    # np.sign(0) == 0 like torch.sign; the derivative is zero almost everywhere in both
    return torch.sign(x) if isinstance(x, torch.Tensor) else np.sign(x)


def _reduce(tname: str, nfn: Callable) -> Callable:
    def f(x, axis=None, **kwargs):
        t = _any_tensor((x,))
        if t is None:
            return nfn(x, axis=axis, **kwargs)
        x = _stack_like(x, t)
        return getattr(torch, tname)(x) if axis is None else getattr(torch, tname)(x, dim=axis)

    f.__name__ = nfn.__name__
    return f


def _stack_like(x, t: torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (list, tuple)):
        parts = [_as_tensor(v, t) for v in x]
        shape = torch.broadcast_shapes(*[p.shape for p in parts])
        return torch.stack([p.expand(shape) for p in parts])
    return _as_tensor(x, t)


def _array(x, dtype=None, **kwargs):
    t = _any_tensor((x,))
    if t is None:
        return np.array(x, dtype=dtype, **kwargs)
    return _stack_like(x, t)


def _asarray(x, dtype=None, **kwargs):
    t = _any_tensor((x,))
    if t is None:
        return np.asarray(x, dtype=dtype, **kwargs)
    return _stack_like(x, t)


def _concat(name: str, nfn: Callable, dim_fn: Callable[[int], int]) -> Callable:
    def f(seq, *args, **kwargs):
        t = _any_tensor(tuple(seq))
        if t is None:
            return nfn(seq, *args, **kwargs)
        parts = [_as_tensor(v, t) for v in seq]
        if name == "stack":
            return torch.stack(parts, dim=kwargs.get("axis", 0))
        if name == "concatenate":
            return torch.cat(parts, dim=kwargs.get("axis", 0))
        return torch.cat(parts, dim=dim_fn(parts[0].ndim))

    f.__name__ = name
    return f


def _dot(a, b):
    t = _any_tensor((a, b))
    if t is None:
        return np.dot(a, b)
    a, b = _as_tensor(a, t), _as_tensor(b, t)
    if a.ndim <= 1 and b.ndim <= 1:
        return torch.dot(a, b) if a.ndim == 1 else a * b
    return torch.matmul(a, b)


def _where(c, a, b):
    t = _any_tensor((c, a, b))
    if t is None:
        return np.where(c, a, b)
    return torch.where(_as_tensor(c, t).bool() if not isinstance(c, torch.Tensor) else c, _as_tensor(a, t), _as_tensor(b, t))


def _like(tfn: Callable, nfn: Callable) -> Callable:
    def f(x, *args, **kwargs):
        return tfn(x) if isinstance(x, torch.Tensor) else nfn(x, *args, **kwargs)

    f.__name__ = nfn.__name__
    return f


def _clip(x, lo, hi):
    if isinstance(x, torch.Tensor):
        return torch.clamp(x, min=lo, max=hi)
    return np.clip(x, lo, hi)


_u = _unary
TORCH_NP = SimpleNamespace(
    pi=math.pi, e=math.e, inf=math.inf, nan=math.nan, newaxis=None,
    float64=np.float64, float32=np.float32, ndarray=np.ndarray,
    sin=_u(torch.sin, np.sin), cos=_u(torch.cos, np.cos), tan=_u(torch.tan, np.tan),
    arcsin=_u(torch.asin, np.arcsin), arccos=_u(torch.acos, np.arccos),
    arctan=_u(torch.atan, np.arctan), sinh=_u(torch.sinh, np.sinh), cosh=_u(torch.cosh, np.cosh),
    tanh=_u(torch.tanh, np.tanh), arcsinh=_u(torch.asinh, np.arcsinh),
    exp=_u(torch.exp, np.exp), expm1=_u(torch.expm1, np.expm1), log=_u(torch.log, np.log),
    log1p=_u(torch.log1p, np.log1p), log10=_u(torch.log10, np.log10), sqrt=_u(torch.sqrt, np.sqrt),
    cbrt=_u(lambda x: torch.sign(x) * torch.abs(x) ** (1.0 / 3.0), np.cbrt),
    abs=_u(torch.abs, np.abs), absolute=_u(torch.abs, np.abs), sign=_sign,
    floor=_u(torch.floor, np.floor), ceil=_u(torch.ceil, np.ceil), square=_u(torch.square, np.square),
    arctan2=_binary(torch.atan2, np.arctan2), power=_binary(torch.pow, np.power),
    maximum=_binary(torch.maximum, np.maximum), minimum=_binary(torch.minimum, np.minimum),
    mod=_binary(torch.remainder, np.mod), remainder=_binary(torch.remainder, np.remainder),
    fmod=_binary(torch.fmod, np.fmod), heaviside=_heaviside, clip=_clip, where=_where,
    matmul=_binary(torch.matmul, np.matmul), dot=_dot,
    sum=_reduce("sum", np.sum), mean=_reduce("mean", np.mean), prod=_reduce("prod", np.prod),
    min=_reduce("amin", np.min), max=_reduce("amax", np.max),
    array=_array, asarray=_asarray,
    copy=_like(torch.clone, np.copy), zeros_like=_like(torch.zeros_like, np.zeros_like),
    ones_like=_like(torch.ones_like, np.ones_like), real=_like(lambda x: x, np.real),
    stack=_concat("stack", np.stack, lambda n: 0),
    concatenate=_concat("concatenate", np.concatenate, lambda n: 0),
    hstack=_concat("hstack", np.hstack, lambda n: 0 if n == 1 else 1),
    vstack=_concat("vstack", np.vstack, lambda n: 0),
    arange=np.arange, linspace=np.linspace, zeros=np.zeros, ones=np.ones,
)
