"""AL-RNN on the ALRNN-DSR Roessler example with that repository's own settings.

A check of dsrecon's AL-RNN and sparse-teacher-forcing training on the data and settings of the
reference implementation (DurstewitzLab/ALRNN-DSR, ``settings/rossler.json``: M = 20, P = 1,
identity observation, STF tau = 8, sequences of 300, batch 16, 50 batches per epoch, RAdam
5e-3 -> 1e-5, 3000 epochs, Gaussian noise 0.05, no regularisation; Brenner et al., NeurIPS 2024).
The data file ``../shared/data/dsr-paper/rossler.npy`` (100 000 x 3, z-scored, dt ~ 0.08) is
split in halves: the first trains, the second is the test series of the paper protocol
(:func:`dsrecon.metrics.evaluate_model`; T = 50 000). Model selection: D_stsp of a 20 000-step
trajectory against the training half every 100 epochs. Choice (not in the reference): the
halves split, so that the test series is never seen in training.

Usage::

    python analysis/alrnn_rossler.py --ensemble 4 --seed 300 --out runs_quality/rossler_p1_k4

Prints and writes ``OUT/rossler.json``: the floor (D_stsp / D_H of the training half against the
test half) and every member's best epoch, D_stsp, D_H and PE(20).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dsrecon.metrics import evaluate_model, hellinger_distance, state_space_divergence
from dsrecon.training import TrainConfig, fit_ensemble

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsr-paper" / "rossler.npy"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ensemble", type=int, default=4, help="seeds trained in one vectorised pass")
    ap.add_argument("--seed", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=3000)
    ap.add_argument("--n-pwl", type=int, default=1, help="P (reference: 1)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    x = np.load(args.data).astype(np.float32)
    half = len(x) // 2
    train, test = x[:half], x[half:]
    floor = {"dstsp": state_space_divergence(test, train).value, "dh": hellinger_distance(test, train).value}
    cfg = TrainConfig.preset("alrnn", epochs=args.epochs, forcing="stf", tau=8, seq_len=300, lr=5e-3,
                             lr_end=1e-5, lambda_reg=0.0, input_noise=0.05, eval_every=100,
                             eval_steps=20_000, seed=args.seed)
    t0 = time.perf_counter()
    res = fit_ensemble("alrnn", train, cfg, seeds=[args.seed + k for k in range(args.ensemble)], latent_dim=20,
                       model_hyper={"n_pwl": args.n_pwl}, out=args.out)
    rows = []
    for k, m in enumerate(res.models):
        ev = evaluate_model(m, test, pe_steps=20, seed=0)
        rows.append({"member": k, "seed": args.seed + k, "best_epoch": res.best_epochs[k],
                     "dstsp": ev.get("dstsp"), "dh": ev.get("dh"), "pe20": ev.get("pe")})
    report = {"floor": floor, "members": rows, "train_seconds": round(time.perf_counter() - t0, 1),
              "train_config": cfg.to_dict(), "n_pwl": args.n_pwl}
    line = json.dumps(report, default=float)
    print(line, flush=True)
    Path(args.out, "rossler.json").write_text(line + "\n")
    return report


if __name__ == "__main__":
    main()
