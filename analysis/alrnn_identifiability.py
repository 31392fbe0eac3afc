"""Teacher-student control: does sparse-teacher-forcing training pin down an AL-RNN's attractor?

A trained AL-RNN (the *teacher*, e.g. M = 20, P = 2 fitted to Lorenz-63) is itself a chaotic
system that lies exactly in the AL-RNN model class. This study generates data from it with the
same observation noise as the paper's Lorenz-63 file, trains *students* of the same architecture
with the same protocol (sparse teacher forcing, Mikhaeil et al. 2022; Brenner et al. 2024), and
compares, on the same noisy windows, the training objective of the students with that of the true
parameters, and the students' attractors with the teacher's (paper protocol, DESIGN.md section 4).

If the students reach the teacher's loss (or a lower one) while their attractors stay far from the
teacher's, the objective itself does not identify the attractor geometry at that noise level and
forcing interval -- no optimiser setting can then be expected to close the gap -- whereas a
student loss well above the teacher's would point at the optimisation.

Usage (the teacher is one member of a run directory written by ``dsrecon fit`` or
``benchmarks/quality_lorenz63.py``)::

    python analysis/alrnn_identifiability.py --teacher runs_quality/alrnn_p2_k8_s100/member_02 \\
        --students 4 --epochs 1000 --out runs_quality/teacher_student_p2

It prints and writes ``OUT/identifiability.json``: the floors (noisy training series vs clean
test series of the teacher), every student's best epoch, final STF loss, D_stsp, D_H, PE(20), and
the STF loss of teacher and students on 512 common windows -- for the teacher also after
re-fitting only its initial-state map L on its own series (:func:`refit_initial_map`: the
students learn their L on these data, the teacher learned its L on other data).

Choices (documented, not from a paper): the teacher's trajectory starts from ``init_state`` of the
first Lorenz-63 test point, 10 000 transient steps are dropped, the rest is z-scored with its own
mean and standard deviation (a diagonal affine change of the observed, linear units, so the
standardised system is still an AL-RNN of the same M and P); training uses the first 100 000 points
plus white noise of standard deviation ``--noise`` (0.05, as in ``lorenz63_on0.05_train.npy``),
testing the clean points 120 000-220 000.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsrecon.metrics import evaluate_model, hellinger_distance, state_space_divergence
from dsrecon.models import load
from dsrecon.training import SparseTF, TrainConfig, batch_loss, fit_ensemble

LORENZ_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsr-paper" / "lorenz63_test.npy"


class Standardised:
    """The teacher seen in z-scored observation coordinates (x_std = (x - mu) / sd).

    Implements the part of the model protocol that :func:`generic_rollout` and the loss use:
    ``init_state``, ``force``, ``step`` (B, M) -> (B, M) and ``observe`` (B, M) -> (B, N).
    """

    def __init__(self, model: Any, mu: torch.Tensor, sd: torch.Tensor) -> None:
        self.model, self.mu, self.sd = model, mu, sd

    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.init_state(x * self.sd + self.mu)

    def force(self, z: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
        return self.model.force(z, x * self.sd + self.mu, alpha)

    def step(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.step(z)

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        return (self.model.observe(z) - self.mu) / self.sd


def teacher_series(teacher: Any, x0: np.ndarray, n_steps: int = 230_000,
                   transient: int = 10_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z-scored trajectory (n_steps - transient, N) of the teacher, with its mean and sd (N,)."""
    with torch.no_grad():
        traj = teacher.generate(torch.as_tensor(x0[None], dtype=torch.float64), n_steps)[0].numpy()
    traj = traj[transient:]
    mu, sd = traj.mean(axis=0), traj.std(axis=0)
    return (traj - mu) / sd, mu, sd


def stf_objective(model: Any, x: torch.Tensor, x_in: torch.Tensor, tau: int) -> torch.Tensor:
    """The trainer's STF objective without regularisation (:func:`dsrecon.training.batch_loss`, the
    generic rollout): forcing / initial state from ``x_in`` (B, T+1, N), MSE of the unforced
    predictions against ``x[:, 1:]``. Differentiable."""
    alpha = SparseTF(tau).alpha_matrix(x.shape[1] - 1)[0]
    return batch_loss(model, x, x_in, alpha, mask=None, lambda_reg=0.0)


def stf_loss(model: Any, x: torch.Tensor, x_in: torch.Tensor, tau: int) -> float:
    """:func:`stf_objective` as a number (no autograd)."""
    with torch.no_grad():
        return float(stf_objective(model, x, x_in, tau))


def refit_initial_map(view: Standardised, train: np.ndarray, tau: int, input_noise: float, *,
                      steps: int = 300, batch: int = 64, lr: float = 1e-2, seed: int = 0) -> int:
    """Fit only the teacher's initial-state map (its ``obs.L``, the free units' ``L x_1``) to the
    STF objective on ``train``, all dynamics parameters frozen. Returns the number of fitted
    parameters (0 when the model has no such map, e.g. M = N).

    Why: a student learns its L on the teacher's data, the teacher learned its L on other data;
    the loss comparison is fair only once the teacher's L is fitted to its own series too.
    """
    params = [p for n, p in view.model.named_parameters() if n.split(".")[-1] == "L"]
    if not params:
        return 0
    for p in view.model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(train) - 201, batch)
        x = torch.as_tensor(np.stack([train[i:i + 201] for i in idx]), dtype=torch.float64)
        x_in = x + input_noise * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        loss = stf_objective(view, x, x_in, tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)
    return sum(p.numel() for p in params)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", required=True, help="run directory (or member directory) of the teacher")
    ap.add_argument("--students", type=int, default=4, help="students K, trained in one vectorised pass")
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--tau", type=int, default=16)
    ap.add_argument("--noise", type=float, default=0.05, help="observation noise of the training series")
    ap.add_argument("--input-noise", type=float, default=0.05, help="TrainConfig.input_noise")
    ap.add_argument("--seed", type=int, default=500)
    ap.add_argument("--x0-file", default=str(LORENZ_TEST), help="first row = the teacher's initial observation")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    teacher = load(args.teacher).to(torch.float64).eval()
    x0 = np.load(args.x0_file)[0].astype(np.float64)
    series, mu, sd = teacher_series(teacher, x0)
    train_clean, test = series[:100_000], series[120_000:220_000]
    rng = np.random.default_rng(args.seed)
    train = (train_clean + args.noise * rng.standard_normal(train_clean.shape)).astype(np.float32)
    floors = {"dstsp_noisy_train": state_space_divergence(test, train).value,
              "dstsp_clean_train": state_space_divergence(test, train_clean).value,
              "dh_noisy_train": hellinger_distance(test, train).value}

    name, hyper = teacher.config["name"], dict(teacher.hyper)  # same architecture as the teacher
    cfg = TrainConfig.preset("alrnn", epochs=args.epochs, forcing="stf", tau=args.tau, lambda_reg=0.0,
                             input_noise=args.input_noise, eval_every=100, eval_steps=50_000, seed=args.seed)
    t0 = time.perf_counter()
    res = fit_ensemble(name, train, cfg, seeds=[args.seed + k for k in range(args.students)],
                       latent_dim=teacher.latent_dim, model_hyper=hyper, out=args.out)
    train_s = time.perf_counter() - t0

    # common windows: targets from the noisy training series, forcing with extra input noise
    idx = rng.integers(0, len(train) - 201, 512)
    x = torch.as_tensor(np.stack([train[i:i + 201] for i in idx]), dtype=torch.float64)  # (512, 201, N)
    x_in = x + args.input_noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(args.seed),
                                              dtype=x.dtype)
    view = Standardised(teacher, torch.as_tensor(mu), torch.as_tensor(sd))
    loss_teacher = stf_loss(view, x, x_in, args.tau)
    n_refit = refit_initial_map(view, train, args.tau, args.input_noise, seed=args.seed + 1)
    loss_teacher_refit = stf_loss(view, x, x_in, args.tau)
    students = []
    for k, m in enumerate(res.models):
        ev = evaluate_model(m, test.astype(np.float32), pe_steps=20, seed=0)
        students.append({"member": k, "seed": args.seed + k, "best_epoch": res.best_epochs[k],
                         "dstsp": ev.get("dstsp"), "dh": ev.get("dh"), "pe20": ev.get("pe"),
                         "stf_loss_common": stf_loss(m.to(torch.float64).eval(), x, x_in, args.tau)})
    report = {"teacher": str(args.teacher), "teacher_model": name, "teacher_hyper": hyper, "floors": floors,
              "stf_loss_teacher_common": loss_teacher, "stf_loss_teacher_refit_L": loss_teacher_refit,
              "teacher_refit_parameters": n_refit, "students": students, "train_seconds": round(train_s, 1),
              "train_config": cfg.to_dict()}
    line = json.dumps(report, default=float)
    print(line, flush=True)
    Path(args.out, "identifiability.json").write_text(line + "\n")
    return report


if __name__ == "__main__":
    main()
