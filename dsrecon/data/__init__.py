"""Data layer: trajectory containers, file IO, splits, standardisation, windows, delay embedding."""

from dsrecon.data.trajectory import Trajectory

__all__ = ["Trajectory"]
