"""``dsrecon fit``: train a model (or a vectorised ensemble) on a file or a benchmark system.

Settings are layered: reference defaults < ``--preset`` < ``--config FILE.toml`` < flags. The
TOML file may hold the training settings at top level or in ``[train]``, the model in
``[model]`` (``name``, ``latent_dim`` and hyper-parameters) and the data in ``[data]``
(``path`` or ``system``, ``steps``, ``val``). ``--resume`` alone continues a run with the
settings recorded in its config.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dsrecon.cli.common import add_command
from dsrecon.errors import ConfigError, DataError

#: flag -> TrainConfig field
_TRAIN_FLAGS = {
    "forcing": "forcing", "alpha": "alpha", "tau": "tau", "epochs": "epochs",
    "batches_per_epoch": "batches_per_epoch", "batch_size": "batch_size", "seq_len": "seq_len",
    "lr": "lr", "lr_end": "lr_end", "lambda_reg": "lambda_reg", "input_noise": "input_noise",
    "grad_clip": "grad_clip", "eval_every": "eval_every", "eval_steps": "eval_steps",
    "checkpoint_every": "checkpoint_every", "device": "device", "seed": "seed", "fused": "fused",
}
#: flag -> model hyper-parameter
_MODEL_FLAGS = {"hidden_dim": "hidden_dim", "pwl_units": "n_pwl", "n_bases": "n_bases", "obs": "obs"}


def register(sub) -> argparse.ArgumentParser:
    p = add_command(
        sub, "fit",
        help="train a reconstruction model with teacher forcing; writes a run directory",
        example=("dsrecon fit --data lorenz63_on0.05_train.npy --model clipped-shplrnn --latent-dim 3 "
                 "--hidden-dim 50 --forcing agtf --out runs/l63"),
        description=(
            "Train a model (DESIGN.md section 3) on a data file (.npy/.npz/.csv, shape (T, N) or (B, T, N), "
            "used as given) or on a benchmark system simulated by dsrecon.systems (standardised). "
            "Writes RUN_DIR with config.json, model.json + model.safetensors (best by D_stsp), "
            "history.csv, metrics.json and checkpoints/. An existing RUN_DIR is never replaced "
            "without --overwrite; --resume continues a killed run from its last checkpoint."
        ),
    )
    g = p.add_argument_group("data and output")
    g.add_argument("--data", metavar="FILE|SYSTEM", help="training data file, or a system name (dsrecon systems list)")
    g.add_argument("--val-data", metavar="FILE", help="validation series for D_stsp / D_H (default: the training data)")
    g.add_argument("--steps-data", type=int, default=None, metavar="N",
                   help="time steps to simulate when --data is a system (default 100000)")
    g.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    g.add_argument("--config", metavar="FILE.toml", help="settings file ([train], [model], [data] tables)")
    g.add_argument("--preset", choices=("gtf-shplrnn", "alrnn"), help="reference training settings of a paper")
    g.add_argument("--resume", action="store_true", help="continue RUN_DIR from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace an existing RUN_DIR")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    m = p.add_argument_group("model")
    m.add_argument("--model", metavar="NAME", help="model name (plrnn, dendplrnn, shplrnn, clipped-shplrnn, alrnn, ...)")
    m.add_argument("--latent-dim", type=int, metavar="M", help="latent dimension M (default: N, or derived from the hyper-parameters)")
    m.add_argument("--hidden-dim", type=int, metavar="L", help="hidden width L of the shPLRNN")
    m.add_argument("--pwl-units", type=int, metavar="P", help="number of ReLU units P of the AL-RNN")
    m.add_argument("--n-bases", type=int, metavar="B", help="number of bases of the dendPLRNN")
    m.add_argument("--obs", choices=("identity", "affine"), help="observation model (default identity)")
    m.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="further model hyper-parameter (VALUE parsed as JSON), repeatable")
    m.add_argument("--ensemble", type=int, metavar="K", help="train K seeds in one vectorised pass (PLRNN family)")
    t = p.add_argument_group("training (defaults: the reference settings, see TrainConfig)")
    t.add_argument("--forcing", choices=("gtf", "agtf", "stf", "free"), help="forcing strategy (default agtf)")
    t.add_argument("--alpha", type=float, metavar="A", help="GTF alpha in [0, 1] (gtf default 0.1; agtf start, default 1)")
    t.add_argument("--tau", type=int, metavar="T", help="sparse TF interval (default 16)")
    t.add_argument("--epochs", type=int, metavar="E", help="epochs (default 5000; AL-RNN preset 2000)")
    t.add_argument("--batches-per-epoch", type=int, metavar="N", help="optimiser steps per epoch (default 50)")
    t.add_argument("--batch-size", type=int, metavar="B", help="windows per batch (default 16)")
    t.add_argument("--seq-len", type=int, metavar="T", help="window length (default 200)")
    t.add_argument("--lr", type=float, metavar="LR", help="initial learning rate (default 1e-3)")
    t.add_argument("--lr-end", type=float, metavar="LR", help="final learning rate (default 1e-6)")
    t.add_argument("--lambda-reg", type=float, metavar="L", help="latent regularisation weight (default 1e-5)")
    t.add_argument("--input-noise", type=float, metavar="SD", help="Gaussian input noise sd (default 0)")
    t.add_argument("--grad-clip", type=float, metavar="NORM", help="gradient-norm clipping (default 0 = off)")
    t.add_argument("--eval-every", type=int, metavar="E", help="epochs between D_stsp/D_H evaluations (default 25)")
    t.add_argument("--eval-steps", type=int, metavar="N", help="generated steps per evaluation (default 10000)")
    t.add_argument("--checkpoint-every", type=int, metavar="E", help="epochs between checkpoints (default 10)")
    t.add_argument("--fused", choices=("auto", "on", "off"), help="fused rollout kernel (default auto)")
    t.add_argument("--seed", type=int, metavar="S", help="random seed (default: drawn and recorded)")
    t.add_argument("--device", metavar="DEV", help="cpu (default) or cuda")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from dsrecon.training import TrainConfig, fit, fit_ensemble
    from dsrecon.training.config import read_toml
    from dsrecon.training.rundir import check_run_dir, read_json

    check_run_dir(args.out, resume=args.resume, overwrite=args.overwrite)  # before any work
    stored = read_json(Path(args.out) / "config.json") if args.resume else None
    toml = read_toml(args.config) if args.config else {}
    model_spec, data_spec = _specs(args, toml, stored)

    train: dict[str, Any] = {} if stored is None else dict(stored["train"])
    if args.preset:
        from dsrecon.training.config import PRESETS

        train.update(PRESETS[args.preset])
    train.update(_train_table(toml))
    for flag, key in _TRAIN_FLAGS.items():
        if getattr(args, flag) is not None:
            train[key] = getattr(args, flag)
    cfg = TrainConfig.from_dict(train)  # alpha None resolves for the chosen forcing
    if cfg.seed is None:
        import numpy as np

        cfg = cfg.replace(seed=int(np.random.SeedSequence().entropy % 2**31))
    data = _load_data(data_spec, cfg.seed)
    val = data_spec.get("val")
    common = dict(out=args.out, val_data=val, progress=not args.no_progress, resume=args.resume,
                  overwrite=args.overwrite)
    hyper = dict(model_spec["hyper"])
    K = model_spec.get("ensemble")
    if K:
        res = fit_ensemble(model_spec["name"], data, cfg, n_members=int(K), latent_dim=model_spec["latent_dim"],
                           model_hyper=hyper, **common)  # latent_dim None: N
        for k, mt in enumerate(res.metrics):
            print(_summary(f"member {k} (seed {res.seeds[k]})", mt))
        print(f"ensemble of {len(res.models)} {model_spec['name']} models written to {res.run_dir}")
        return 0
    from dsrecon.models import build

    N = _obs_dim(data)
    M = model_spec["latent_dim"] if model_spec["latent_dim"] is not None else _default_latent(model_spec["name"], N)
    model = build(model_spec["name"], obs_dim=N, latent_dim=M, seed=cfg.seed, **hyper)
    res = fit(model, data, cfg, **common)
    print(_summary(f"{model_spec['name']} (seed {cfg.seed})", res.metrics))
    print(f"run written to {res.run_dir}")
    return 0


# ------------------------------------------------------------------------ helpers
def _train_table(toml: dict[str, Any]) -> dict[str, Any]:
    """Training settings of a parsed TOML file: the [train] table, else the top-level keys."""
    if "train" in toml:
        if not isinstance(toml["train"], dict):
            raise ConfigError("'train' in the config file must be a table ([train])")
        return dict(toml["train"])
    return {k: v for k, v in toml.items() if not isinstance(v, dict)}


def _specs(args, toml: dict[str, Any], stored: dict[str, Any] | None) -> tuple[dict, dict]:
    """The model spec {name, latent_dim, hyper, ensemble} and data spec {path|system, steps, val}."""
    model: dict[str, Any] = {"name": None, "latent_dim": None, "hyper": {}, "ensemble": None}
    data: dict[str, Any] = {"data": None, "steps": None, "val": None, "stored": None}
    if stored is not None:  # resume: what the run was trained with
        mc = dict(stored["models"][0])
        model["name"], model["latent_dim"] = mc.pop("name"), mc.pop("latent_dim")
        mc.pop("obs_dim", None)
        model["hyper"] = mc
        model["ensemble"] = (stored.get("ensemble") or {}).get("n_members")
        data["stored"] = stored["data"]
        data["val"] = (stored.get("val_data") or {}).get("path")
    tm = dict(toml.get("model", {}))
    if tm:
        model["name"] = tm.pop("name", model["name"])
        model["latent_dim"] = tm.pop("latent_dim", model["latent_dim"])
        model["ensemble"] = tm.pop("ensemble", model["ensemble"])
        model["hyper"].update(tm)
    td = dict(toml.get("data", {}))
    data["data"] = td.get("path") or td.get("system")
    data["steps"], data["val"] = td.get("steps"), td.get("val", data["val"])
    # flags win
    if args.model:
        model["name"] = args.model
    if args.latent_dim is not None:
        model["latent_dim"] = args.latent_dim
    if args.ensemble is not None:
        model["ensemble"] = args.ensemble
    for flag, key in _MODEL_FLAGS.items():
        if getattr(args, flag) is not None:
            model["hyper"][key] = getattr(args, flag)
    for item in args.model_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--model-arg expects KEY=VALUE, got {item!r}")
        try:
            model["hyper"][key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            model["hyper"][key.strip().replace("-", "_")] = value
    if args.data:
        data["data"] = args.data
    if args.steps_data is not None:
        data["steps"] = args.steps_data
    if args.val_data:
        data["val"] = args.val_data
    if not model["name"]:
        raise ConfigError("no model given: pass --model NAME (or [model] name in --config)")
    if data["data"] is None and data["stored"] is None:
        raise ConfigError("no training data given: pass --data FILE|SYSTEM (or [data] in --config)")
    if model["ensemble"] is not None and int(model["ensemble"]) < 1:
        raise ConfigError(f"--ensemble must be >= 1, got {model['ensemble']}")
    return model, data


def _load_data(spec: dict[str, Any], seed: int):
    """A Trajectory from a file or a simulated, standardised benchmark system."""
    from dsrecon.data import load_trajectory

    src = spec["data"]
    if src is None:  # resume without --data: what config.json recorded
        rec = spec["stored"] or {}
        if rec.get("path"):
            src = rec["path"]
        else:
            cli = (rec.get("meta") or {}).get("cli_source") or {}
            if not cli.get("system"):
                raise ConfigError("the run's training data were passed as an array; pass --data again to resume")
            return _simulate(cli["system"], cli["steps"], cli["seed"])
    p = Path(src).expanduser()
    if p.exists() or p.suffix.lower() in (".npy", ".npz", ".csv", ".tsv", ".txt"):
        return load_trajectory(p)
    return _simulate(str(src), spec["steps"] or 100_000, seed)


def _simulate(name: str, steps: int, seed: int):
    try:
        from dsrecon import systems
    except ImportError:  # pragma: no cover - the systems layer is part of every build
        raise DataError(f"--data {name!r} is not an existing file and dsrecon.systems is unavailable") from None
    try:
        systems.get(name)
    except Exception as exc:  # UnknownNameError with suggestions
        raise DataError(f"--data {name!r} is neither an existing file nor a known system: {exc}") from None
    traj = systems.simulate(name, int(steps), seed=int(seed), standardize=True)
    traj.meta = {**(traj.meta or {}), "cli_source": {"system": name, "steps": int(steps), "seed": int(seed)}}
    return traj


def _default_latent(name: str, N: int) -> int | None:
    """M when --latent-dim is not given: None for models that derive it (LSSL, Mamba, ...), else N."""
    import inspect

    from dsrecon.models import model_class

    p = inspect.signature(model_class(name).__init__).parameters.get("latent_dim")
    return None if p is not None and p.default is None else N


def _obs_dim(data) -> int:
    return int(data.dim if hasattr(data, "dim") else data.shape[-1])


def _summary(who: str, m: dict[str, Any]) -> str:
    def f(v):
        return "inf" if v is None else f"{v:.4g}"

    return (f"{who}: best epoch {m.get('best_epoch')}, D_stsp={f(m.get('dstsp'))}, D_H={f(m.get('dh'))}, "
            f"PE({m.get('pe_steps', 20)})={f(m.get('pe'))} (T={m.get('T')})")
