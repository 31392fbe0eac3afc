"""Helpers shared by CLI commands: example epilogs, device/seed options, JSON output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_command(sub, name: str, help: str, example: str, description: str | None = None) -> argparse.ArgumentParser:
    """Add a sub-command parser whose ``--help`` ends with an example."""
    return sub.add_parser(
        name,
        help=help,
        description=description or help,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (tmp file + rename)."""
    p = Path(path)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_default))
    tmp.replace(p)
    return p


def _default(o: Any):
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
