"""Roll-back guard: a NaN or exploding loss never kills a long run silently (DESIGN.md section 3).

Glossary: K ensemble members.

A batch *fails* if a member's loss is non-finite, or larger than ``explosion_factor`` times the
running median of that member's recent good batch losses, or if the optimiser step leaves a
non-finite parameter. The trainer then restores the last good state (the end of the previous
successful epoch: weights, optimiser moments, forcing state, step counter, loss window),
multiplies the learning rate by ``rollback_lr_factor`` and repeats the epoch. After
``max_rollbacks`` consecutive roll-backs the next failure stops training with a
:class:`~dsrecon.errors.TrainingError` that says what happened and what to try.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import Any

import numpy as np

from dsrecon.errors import TrainingError

#: number of recent good batch losses in the running median
WINDOW = 200
#: the explosion test starts once this many good losses are known
MIN_HISTORY = 5


class RollbackGuard:
    """Detect failed batches, keep the last good state, count roll-backs.

    Parameters
    ----------
    n_members : int
        K (one loss window per member).
    explosion_factor, max_rollbacks, lr_factor : see :class:`~dsrecon.training.TrainConfig`.
    """

    def __init__(self, n_members: int, *, explosion_factor: float, max_rollbacks: int, lr_factor: float) -> None:
        self.K = int(n_members)
        self.explosion_factor = float(explosion_factor)
        self.max_rollbacks = int(max_rollbacks)
        self.lr_factor = float(lr_factor)
        self.windows = [deque(maxlen=WINDOW) for _ in range(self.K)]
        self.total = 0  # roll-backs over the whole run
        self.consecutive = 0  # roll-backs since the last successful epoch
        self.lr_scale = 1.0  # product of the roll-back factors
        self.events: list[dict[str, Any]] = []  # one record per roll-back
        self._pending: list[np.ndarray] = []
        self._snapshot: dict[str, Any] | None = None

    # ----------------------------------------------------------------- checks
    def check(self, losses: np.ndarray) -> str | None:
        """Reason why a batch with per-member losses (K,) failed, or None if it is fine."""
        for k, v in enumerate(np.asarray(losses, dtype=float).reshape(self.K)):
            who = f"member {k} " if self.K > 1 else ""
            if not math.isfinite(v):
                return f"{who}loss is {v}"
            w = self.windows[k]
            if len(w) >= MIN_HISTORY:
                med = float(np.median(np.fromiter(w, dtype=float)))
                if v > self.explosion_factor * med:
                    return f"{who}loss exploded to {v:.3g} (> {self.explosion_factor:.0e} x running median {med:.3g})"
        return None

    def record(self, losses: np.ndarray) -> None:
        """Remember a good batch's losses (committed to the window at :meth:`commit`)."""
        self._pending.append(np.asarray(losses, dtype=float).reshape(self.K))

    # ------------------------------------------------------ good state / failure
    def commit(self, snapshot: dict[str, Any]) -> None:
        """An epoch succeeded: commit its losses and keep ``snapshot`` (owned copies of the
        trainer's state) as the last good state."""
        for losses in self._pending:
            for k in range(self.K):
                self.windows[k].append(float(losses[k]))
        self._pending = []
        self.consecutive = 0
        self._snapshot = snapshot

    def fail(self, reason: str, *, epoch: int, lr: float) -> dict[str, Any]:
        """Register a failure in ``epoch``; return the last good state to restore.

        Raises TrainingError once ``max_rollbacks`` consecutive roll-backs did not help.
        """
        self._pending = []
        if self.consecutive >= self.max_rollbacks or self._snapshot is None:
            raise TrainingError(
                f"training failed in epoch {epoch}: {reason}; {self.consecutive} consecutive roll-back(s) "
                f"to the last good state, each multiplying the learning rate by {self.lr_factor} "
                f"(now {lr:.3g}), did not help. Try a smaller lr, gradient clipping (grad_clip=1.0), "
                "stronger teacher forcing (larger alpha, smaller tau, or forcing='agtf'), input noise, "
                "or a model with bounded dynamics (clipped-shplrnn)"
            )
        self.consecutive += 1
        self.total += 1
        self.lr_scale *= self.lr_factor
        self.events.append({"epoch": int(epoch), "reason": reason, "new_lr": lr * self.lr_factor})
        return copy.deepcopy(self._snapshot)

    # -------------------------------------------------------------- (de)serialise
    def state_dict(self) -> dict[str, Any]:
        return {
            "windows": [list(w) for w in self.windows],
            "total": self.total,
            "consecutive": self.consecutive,
            "lr_scale": self.lr_scale,
            "events": list(self.events),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.windows = [deque((float(v) for v in w), maxlen=WINDOW) for w in state["windows"]]
        if len(self.windows) != self.K:
            raise TrainingError(f"roll-back state has {len(self.windows)} members, expected {self.K}")
        self.total = int(state["total"])
        self.consecutive = int(state["consecutive"])
        self.lr_scale = float(state["lr_scale"])
        self.events = list(state.get("events", []))
