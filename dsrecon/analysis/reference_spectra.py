"""Re-estimate the Lyapunov spectra of the dysts flows and compare them with dysts' metadata.

Glossary: N state dimension.

dysts stores ``maximum_lyapunov_estimated`` and ``lyapunov_spectrum_estimated`` for every flow;
they are not always consistent with each other or with the equations (DESIGN.md section 5).
:func:`recompute_reference_spectra` recomputes each spectrum with the variational equations
(:func:`dsrecon.analysis.lyapunov_spectrum`, batched over initial conditions, RK4 at the step of
:func:`dsrecon.analysis.lyapunov_ode.default_flow_dt`, J Q by directional differences) and flags disagreements: relative
difference of lambda_max above ``rel_tol`` (and above twice our convergence spread), or a sign
disagreement (chaotic vs not). A modest
accuracy (10^4 steps) is enough to find the gross errors this is meant for.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import numpy as np

from dsrecon.analysis.lyapunov import lyapunov_spectrum
from dsrecon.analysis.lyapunov_ode import default_flow_dt
from dsrecon.errors import DsreconError


def _sign(v: float, tol: float) -> int:
    return 0 if abs(v) <= tol else (1 if v > 0 else -1)


def compare_row(name: str, ours: np.ndarray, conv: float, dysts_max: float | None,
                dysts_spec: np.ndarray | None, rel_tol: float) -> dict[str, Any]:
    """Disagreement flags of one system (see module docstring)."""
    lam = float(ours[0])
    # "zero" within 3x the convergence spread or 0.1% of the spectrum's scale
    zero_tol = max(3.0 * conv, 1e-3 * max(1.0, float(np.max(np.abs(ours)))))
    reasons = []
    for label, ref in (("maximum_lyapunov_estimated", dysts_max),
                       ("lyapunov_spectrum_estimated[0]", None if dysts_spec is None else float(dysts_spec[0]))):
        if ref is None or not np.isfinite(ref):
            continue
        rel = abs(lam - ref) / max(abs(lam), abs(ref), 1e-12)
        significant = abs(lam - ref) > 2.0 * conv  # beyond our own convergence spread
        if _sign(lam, zero_tol) != _sign(ref, zero_tol) and _sign(ref, zero_tol) != 0 and _sign(lam, zero_tol) != 0:
            reasons.append(f"sign of lambda_max: ours {lam:.4g}, {label} {ref:.4g}")
        elif rel > rel_tol and max(abs(lam), abs(ref)) > zero_tol and significant:
            reasons.append(f"lambda_max differs by {100 * rel:.0f}% from {label} ({ref:.4g})")
    return {"name": name, "disagrees": bool(reasons), "reasons": reasons}


def recompute_reference_spectra(
    names: Iterable[str] | None = None,
    *,
    n_steps: int = 10_000,
    transient: int = 2_000,
    n_initial_conditions: int = 4,
    method: str = "rk4",
    jacobian: str = "fd",
    seed: int | None = 0,
    rel_tol: float = 0.2,
    confirm: bool = True,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Recompute the spectra of dysts flows; one plain-JSON row per system.

    Parameters
    ----------
    names : iterable of str, optional
        Flow names (default: every non-delay flow of :func:`dsrecon.systems.list_systems`).
    n_steps, transient, n_initial_conditions, method, jacobian, seed :
        Passed to :func:`dsrecon.analysis.lyapunov_spectrum` (integration step: the default).
        ``jacobian="fd"`` (directional differences of the vector field) is the default because
        many dysts flows have no analytic Jacobian and an autograd one costs milliseconds per call.
    rel_tol : float
        Relative difference of lambda_max that counts as a disagreement.
    confirm : bool
        Re-run flagged (or failed) systems at a quarter of the step; a flagged estimate that
        changes by more than ``rel_tol`` is replaced by the finer one and marked
        "step-size sensitive" in ``dt_check``.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    list of dict: name, dim, dt, exponents, convergence, kaplan_yorke, dysts_max, dysts_spectrum,
    disagrees, reasons, dt_check (None when not re-checked), error (str or None), seconds.
    """
    from dsrecon.systems import get, list_systems

    if names is None:
        names = [n for n in list_systems(kind="flow") if not getattr(get(n), "is_delay", False)]
    names = list(names)
    rows = []
    it: Iterable[str] = names
    if progress:
        from tqdm import tqdm

        it = tqdm(names, desc="spectra")
    for name in it:
        sysm = get(name)
        row: dict[str, Any] = {"name": name, "dim": int(sysm.dim), "dysts_max": sysm.maximum_lyapunov_estimated,
                               "dysts_spectrum": None if sysm.lyapunov_spectrum is None
                               else np.asarray(sysm.lyapunov_spectrum).tolist(), "dt_check": None}
        t0 = time.perf_counter()
        kw = dict(n_steps=n_steps, transient=transient, jacobian=jacobian, n_initial_conditions=n_initial_conditions,
                  method=method, seed=seed)
        res, err = _estimate(sysm, None, kw)
        if confirm and (err is not None or _compare(name, res, sysm, rel_tol)["disagrees"]):
            # re-run at a quarter of the step: a flagged estimate must not depend on the step size
            dt0 = res.dt if res is not None else default_flow_dt(sysm, sysm.initial_condition[None])
            fine, err_f = _estimate(sysm, dt0 / 4.0, kw)
            if res is None:
                res, err = fine, err_f
                row["dt_check"] = "default step failed; estimate at a quarter of it"
            elif fine is not None:
                a, b = float(res.exponents[0]), float(fine.exponents[0])
                tol_ab = max(rel_tol * max(abs(a), abs(b)), 2.0 * float(fine.convergence[0]), 1e-3)
                row["dt_check"] = "ok" if abs(a - b) <= tol_ab else f"step-size sensitive ({a:.4g} vs {b:.4g} at dt/4)"
                res = fine if abs(a - b) > tol_ab else res
            else:
                row["dt_check"] = f"quarter step failed: {err_f}"
        if res is not None:
            row.update(exponents=res.exponents.tolist(), convergence=res.convergence.tolist(), dt=res.dt,
                       kaplan_yorke=res.kaplan_yorke, error=None)
            cmp = _compare(name, res, sysm, rel_tol)
            row.update(disagrees=cmp["disagrees"], reasons=cmp["reasons"])
        else:
            row.update(exponents=None, convergence=None, dt=None, kaplan_yorke=None, error=err,
                       disagrees=None, reasons=[])
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    return rows


def _estimate(sysm: Any, dt: float | None, kw: dict[str, Any]) -> tuple[Any, str | None]:
    try:
        return lyapunov_spectrum(sysm, dt=dt, **kw), None
    except (DsreconError, FloatingPointError, np.linalg.LinAlgError, ValueError, RuntimeError) as exc:
        return None, str(exc)


def _compare(name: str, res: Any, sysm: Any, rel_tol: float) -> dict[str, Any]:
    return compare_row(name, res.exponents, float(res.convergence[0]), sysm.maximum_lyapunov_estimated,
                       sysm.lyapunov_spectrum, rel_tol)


def markdown_table(rows: list[dict[str, Any]], *, only_disagreements: bool = True) -> str:
    """A markdown table of the rows (by default only those that disagree, failed, or whose estimate
    depended on the step size)."""
    lines = ["| system | N | ours lambda_max (+- conv) | dysts maximum_lyapunov_estimated | "
             "dysts spectrum[0] | ours spectrum | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if only_disagreements and not r.get("disagrees") and not r.get("error") and r.get("dt_check") in (None, "ok"):
            continue
        fmt = (lambda v: "-" if v is None else f"{v:.4g}")
        if r.get("error"):
            lines.append(f"| {r['name']} | {r['dim']} | failed | {fmt(r['dysts_max'])} | "
                         f"{fmt(None if not r['dysts_spectrum'] else r['dysts_spectrum'][0])} | - | {r['error'][:80]} |")
            continue
        ex = r["exponents"]
        spec = ", ".join(f"{v:.3g}" for v in ex[:4]) + (", ..." if len(ex) > 4 else "")
        lines.append(
            f"| {r['name']} | {r['dim']} | {ex[0]:.4g} +- {r['convergence'][0]:.2g} | {fmt(r['dysts_max'])} | "
            f"{fmt(None if not r['dysts_spectrum'] else r['dysts_spectrum'][0])} | {spec} | {'; '.join(r['reasons'])}"
            f"{'' if r.get('dt_check') in (None, 'ok') else ' [' + r['dt_check'] + ']'} |"
        )
    return "\n".join(lines)
