"""The one exception hierarchy of dsrecon (DESIGN.md section 7).

Every error a user can trigger with bad input derives from :class:`DsreconError`. Messages say
what was wrong *and* what to do. The CLI turns any ``DsreconError`` into one line on stderr and
exit code 2.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class DsreconError(Exception):
    """Base class of every error raised deliberately by dsrecon."""


class ConfigError(DsreconError, ValueError):
    """An argument, option or hyper-parameter is invalid (wrong value, range or combination)."""


class DataError(DsreconError, ValueError):
    """Input data are unusable: wrong rank, non-finite values, too short, unreadable file."""


class UnknownNameError(DsreconError, LookupError):
    """A name (system, model, solver, metric, ...) is not in its registry."""

    def __str__(self) -> str:  # LookupError/KeyError would repr() the message; keep it plain
        return str(self.args[0]) if self.args else ""


class IntegrationError(DsreconError, RuntimeError):
    """Numerical integration failed (blow-up, step-size underflow, max steps)."""


class TrainingError(DsreconError, RuntimeError):
    """Training could not continue (repeated NaN/explosion after roll-backs, ...)."""


class RunDirError(DsreconError, OSError):
    """A run directory is missing, incomplete, or would be overwritten without permission."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """Build an :class:`UnknownNameError` that suggests close matches.

    >>> str(unknown_name("system", "lornz", ["Lorenz", "Rossler"]))
    "unknown system 'lornz'; did you mean: Lorenz? (see the full list with `dsrecon systems list`)"
    """
    known = list(known)
    lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(lower), n=5, cutoff=0.5)
    hint = f"; did you mean: {', '.join(lower[c] for c in close)}?" if close else ""
    listing = {
        "system": " (see the full list with `dsrecon systems list`)",
    }.get(kind, f" (known: {', '.join(sorted(known))})" if len(known) <= 20 else "")
    return UnknownNameError(f"unknown {kind} {name!r}{hint}{listing}")
