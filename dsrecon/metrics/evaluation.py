"""The paper evaluation protocol for trained models, metrics.json, and aggregation over runs.

Glossary: T test steps, N observed dim, K initial conditions.

Protocol (Hess et al., ICML 2023; Brenner et al., ICML 2022; reference Julia code
DurstewitzLab/GTF-shPLRNN, ``src/evaluation.jl``): from the first test point, generate
``floor(1.25 T)`` steps with the model (``generate`` = ``init_state`` then free steps), drop the
first ``floor(0.25 T)`` as transient and compare the rest with the *whole* test series by
D_stsp and D_H; PE(20) is computed over the test series. With ``n_initial_conditions = K > 1``
the trajectories start from the test points ``floor(k T / K)``, k = 0..K-1 (the first is the
paper's), each is compared with the whole series, and the reported value is the median over the
K runs (every run is kept in ``per_initial_condition``). Runs are summarised by median and MAD
(the papers' convention), plus mean and sd.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from dsrecon.data.io import file_sha256, load_array
from dsrecon.errors import ConfigError, DataError, RunDirError, unknown_name
from dsrecon.metrics._checks import constant_columns, positive_int, true_series
from dsrecon.metrics._torch import eval_mode, model_device_dtype, on_device
from dsrecon.metrics.hellinger import hellinger_distance, min_length
from dsrecon.metrics.prediction import prediction_error
from dsrecon.metrics.result import MetricResult, json_safe
from dsrecon.metrics.state_space import AUTO_BINNED_MAX_DIM, state_space_divergence

#: metrics the protocol can compute
PROTOCOL_METRICS = ("dstsp", "dh", "pe")
METRICS_FILE = "metrics.json"
EVALUATION_KEY = "evaluation"


def evaluate_model(
    model: Any,
    x_test: Any,
    *,
    n_generate: int | None = None,
    transient: int | None = None,
    n_initial_conditions: int = 1,
    pe_steps: int = 20,
    metrics: Iterable[str] = PROTOCOL_METRICS,
    seed: int | None = 0,
    dstsp_method: str = "auto",
    smoothing: float = 20,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Evaluate a model on a test series with the paper protocol.

    Parameters
    ----------
    model : dsrecon.models.DynamicalModel
    x_test : array (T, N)
        Test series in the model's observation coordinates (finite).
    n_generate : int, optional
        Steps to generate per initial condition (default ``floor(1.25 T)``).
    transient : int, optional
        Leading generated steps to drop (default ``floor(0.25 T)``); must be < n_generate.
    n_initial_conditions : int
        K; trajectories start at test points ``floor(k T / K)``.
    pe_steps : int
        n of PE(n).
    metrics : iterable of {"dstsp", "dh", "pe"}
    seed : int or None
        Seed of the GMM D_stsp's Monte-Carlo samples.
    dstsp_method, smoothing : passed to D_stsp (``method``) and D_H.
    device : optional
        Where to run the model (default: where it is; a copy is made if it must move).

    Returns
    -------
    dict (plain JSON): ``{metric: value}`` for each requested metric (median over the K initial
    conditions; ``None`` stands for ``+inf``, see :meth:`MetricResult.to_dict`), ``"flags"``
    (metric -> list of flags raised), ``"per_initial_condition"`` (list of
    ``{"start_index", metric: MetricResult dict}``), ``"pe_result"`` and ``"protocol"`` (T, n_generate,
    transient, compared length, start indices, pe_steps, seed).
    """
    names = _metric_names(metrics)
    xt = true_series(x_test, "x_test", min_steps=2)
    t_len = len(xt)
    n_gen = int(math.floor(1.25 * t_len)) if n_generate is None else positive_int(n_generate, "n_generate")
    trans = int(math.floor(0.25 * t_len)) if transient is None else positive_int(transient, "transient", 0)
    if trans >= n_gen:
        raise ConfigError(f"transient ({trans}) must be smaller than n_generate ({n_gen})")
    k = positive_int(n_initial_conditions, "n_initial_conditions")
    if k > t_len:
        raise ConfigError(f"n_initial_conditions ({k}) exceeds the test length T = {t_len}")
    if "pe" in names:
        pe_steps = positive_int(pe_steps, "pe_steps")
        if pe_steps >= t_len:
            raise DataError(f"PE({pe_steps}) needs a test series longer than {pe_steps} steps, got T = {t_len}")
    if dstsp_method not in ("auto", "binned", "gmm"):
        raise ConfigError(f"dstsp_method must be 'auto', 'binned' or 'gmm', got {dstsp_method!r}")
    if "dh" in names:  # check D_H's minimum length before generating anything
        ok = isinstance(smoothing, (int, float)) and math.isfinite(smoothing) and smoothing >= 0
        need = min_length(float(smoothing)) if ok else None
        if need is None:
            raise ConfigError(f"smoothing must be a number >= 0, got {smoothing!r}")
        if min(t_len, n_gen - trans) < need:
            raise DataError(
                f"D_H with smoothing={smoothing:g} needs at least {need} compared steps, but T = {t_len} and "
                f"n_generate - transient = {n_gen - trans}; use longer series or a smaller smoothing"
            )
    binned = dstsp_method == "binned" or (dstsp_method == "auto" and xt.shape[1] <= AUTO_BINNED_MAX_DIM)
    const = constant_columns(xt)
    if const.any() and ("dh" in names or ("dstsp" in names and binned)):
        raise DataError(
            f"x_test is constant in dimension(s) {np.flatnonzero(const).tolist()}; D_H and the binned "
            "D_stsp are undefined for it: drop constant dimensions from the test data"
        )
    starts = [int(i * t_len // k) for i in range(k)]
    out: dict[str, Any] = {}
    per_ic: list[dict[str, Any]] = [{"start_index": s} for s in starts]
    flags: dict[str, list[str]] = {m: [] for m in names}
    state_metrics = [m for m in names if m in ("dstsp", "dh")]
    if state_metrics:
        x_gen = _generate(model, xt[starts], n_gen, device)[:, trans:]  # (K, n_gen - trans, N)
        for m in state_metrics:
            results = []
            for i in range(k):
                if m == "dstsp":
                    r = state_space_divergence(xt, x_gen[i], method=dstsp_method, seed=seed)
                else:
                    r = hellinger_distance(xt, x_gen[i], smoothing=smoothing)
                results.append(r)
                per_ic[i][m] = r.to_dict()
                if r.flag:
                    flags[m].append(r.flag)
            out[m] = json_safe(float(np.median([r.value for r in results])))
    if "pe" in names:
        pe = prediction_error(model, xt, pe_steps, device=device)
        out["pe"] = json_safe(pe.value)
        out["pe_result"] = pe.to_dict()
        if pe.flag:
            flags["pe"].append(pe.flag)
    out["flags"] = flags
    if state_metrics:
        out["per_initial_condition"] = per_ic
    out["protocol"] = {
        "n_test": t_len,
        "n_generate": n_gen,
        "transient": trans,
        "n_compared": n_gen - trans,
        "initial_conditions": starts,
        "pe_steps": pe_steps if "pe" in names else None,
        "dstsp_method": dstsp_method,
        "smoothing": smoothing,
        "seed": seed,
        "metrics": list(names),
    }
    return out


def _metric_names(metrics: Iterable[str]) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    names = tuple(dict.fromkeys(str(m).lower() for m in metrics))
    if not names:
        raise ConfigError(f"metrics is empty; choose from {PROTOCOL_METRICS}")
    for m in names:
        if m not in PROTOCOL_METRICS:
            raise unknown_name("metric", m, PROTOCOL_METRICS)
    return names


@torch.no_grad()
def _generate(model, x0: np.ndarray, n_steps: int, device) -> np.ndarray:
    """Free runs from the rows of x0 (K, N): (K, n_steps, N) float64 (NaN/inf kept as they are)."""
    obs_dim = getattr(model, "obs_dim", None)
    if obs_dim is not None and int(obs_dim) != x0.shape[1]:
        raise DataError(f"x_test has {x0.shape[1]} dimensions but the model observes {obs_dim}")
    model = on_device(model, device)
    dev, dtype = model_device_dtype(model)
    with eval_mode(model):
        out = model.generate(torch.as_tensor(x0, dtype=dtype, device=dev), n_steps)
    return out.detach().to("cpu", torch.float64).numpy()


# ----------------------------------------------------------------------------------- runs
def evaluate_run(run_dir: str | Path, test: str | Path | Any, *, write: bool = True, **kwargs: Any) -> dict[str, Any]:
    """Load the model of a run directory, evaluate it (:func:`evaluate_model`), write metrics.json.

    Parameters
    ----------
    run_dir : path
        A run directory readable by :func:`dsrecon.models.load`.
    test : path or array (T, N)
        Test series (``.npy``/``.npz``/``.csv``, read by :func:`dsrecon.data.io.load_array`) or
        an array. It must be in the coordinates the model was trained in.
    write : bool
        Merge the result into ``run_dir/metrics.json`` under the key ``"evaluation"`` (other keys
        are kept; a previous evaluation is replaced).
    **kwargs
        Passed to :func:`evaluate_model`.

    Returns
    -------
    The evaluation dict, with ``protocol["test"]`` (the file path and its SHA-256, when a path).
    """
    from dsrecon.models import load

    run = Path(run_dir)
    if isinstance(test, (str, os.PathLike)):
        x = load_array(test)
        source: dict[str, Any] = {"path": str(Path(test).resolve()), "sha256": file_sha256(test)}
    else:
        x, source = test, {"path": None, "sha256": None}
    if np.ndim(x) == 3:
        if np.shape(x)[0] != 1:
            raise DataError(f"the test data hold {np.shape(x)[0]} series; evaluate with one (T, N) series")
        x = np.asarray(x)[0]
    model = load(run, device=kwargs.get("device") or "cpu")
    result = evaluate_model(model, x, **kwargs)
    result["protocol"]["test"] = source
    if write:
        merge_metrics_json(run, {EVALUATION_KEY: result})
    return result


def merge_metrics_json(run_dir: str | Path, update: Mapping[str, Any]) -> Path:
    """Merge top-level keys of ``update`` into ``run_dir/metrics.json`` (atomic write).

    Existing keys not in ``update`` are kept. A metrics.json that is not a JSON object is an
    error (RunDirError), never silently replaced.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"{run} is not a directory; pass an existing run directory")
    path = run / METRICS_FILE
    current: dict[str, Any] = {}
    if path.exists():
        try:
            current = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunDirError(f"{path} exists but is not valid JSON ({exc}); fix or remove it") from exc
        if not isinstance(current, dict):
            raise RunDirError(f"{path} holds a {type(current).__name__}, not a JSON object; fix or remove it")
    current.update(json_safe(dict(update)))
    fd, tmp = tempfile.mkstemp(prefix=".metrics.", suffix=".tmp", dir=run)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(current, fh, indent=2, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ----------------------------------------------------------------------------- aggregation
def aggregate(values: Iterable[Any], *, nonfinite: str = "drop") -> dict[str, Any]:
    """Summary statistics of one metric over runs: median, MAD, mean, sd, n.

    Parameters
    ----------
    values : iterable of float, MetricResult or None
        ``None`` (a ``+inf`` written to JSON), NaN and inf are *non-finite* values.
    nonfinite : {"drop", "worst"}
        ``"drop"`` (the reference Julia code's convention): non-finite values are left out of
        every statistic and counted in ``n_nonfinite``. ``"worst"``: they count as ``+inf`` in
        the median and MAD (a diverged run is the worst run), and mean and sd are ``inf`` / None
        if there are any.

    Returns
    -------
    dict with ``median``, ``mad`` (median absolute deviation from the median, *unscaled*: no
    1.4826 factor, as ``mad(x, normalize=false)`` in the reference), ``mean``, ``sd`` (n - 1
    denominator), ``n`` (values used), ``n_nonfinite``. Statistics that are undefined (no
    values; sd with fewer than 2) are None.
    """
    if nonfinite not in ("drop", "worst"):
        raise ConfigError(f"nonfinite must be 'drop' or 'worst', got {nonfinite!r}")
    vals = np.array([_as_float(v) for v in values], dtype=np.float64).reshape(-1)
    finite = vals[np.isfinite(vals)]
    n_bad = int(len(vals) - len(finite))
    used = finite if nonfinite == "drop" else np.where(np.isfinite(vals), vals, math.inf)
    out: dict[str, Any] = {"median": None, "mad": None, "mean": None, "sd": None, "n": int(len(used)), "n_nonfinite": n_bad}
    if len(used) == 0:
        return out
    med = float(np.median(used))
    dev = np.abs(used - med) if math.isfinite(med) else np.where(np.isinf(used), 0.0, math.inf)
    out["median"], out["mad"] = med, float(np.median(dev))
    if nonfinite == "worst" and n_bad:
        out["mean"] = math.inf
        return out
    out["mean"] = float(np.mean(finite)) if len(finite) else None
    out["sd"] = float(np.std(finite, ddof=1)) if len(finite) >= 2 else None
    return out


def aggregate_runs(runs: Iterable[Mapping[str, Any]], *, nonfinite: str = "drop") -> dict[str, dict[str, Any]]:
    """:func:`aggregate` every numeric metric over a list of per-run metric dicts.

    Each item is an :func:`evaluate_model` result, a metrics.json dict (its ``"evaluation"``
    entry is used when present) or any ``{name: float | MetricResult | None}`` mapping. Keys
    whose values are not numbers (protocol, flags, ...) are skipped. Returns ``{name: stats}``;
    a metric missing from some runs is aggregated over the runs that have it.
    """
    collected: dict[str, list[Any]] = {}
    for run in runs:
        if not isinstance(run, Mapping):
            raise DataError(f"aggregate_runs expects metric dicts, got {type(run).__name__}")
        if isinstance(run.get(EVALUATION_KEY), Mapping):
            run = run[EVALUATION_KEY]
        for key, v in run.items():
            if v is None or isinstance(v, (int, float, np.number, MetricResult)) and not isinstance(v, bool):
                collected.setdefault(str(key), []).append(v)
    return {k: aggregate(v, nonfinite=nonfinite) for k, v in collected.items()}


def _as_float(v: Any) -> float:
    if v is None:
        return math.inf
    if isinstance(v, MetricResult):
        return v.value
    try:
        return float(v)
    except (TypeError, ValueError):
        raise DataError(f"cannot aggregate {v!r}: metric values must be numbers, MetricResults or None") from None
