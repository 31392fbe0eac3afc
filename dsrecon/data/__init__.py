"""Data layer: trajectory containers, file IO, splits, standardisation, windows, delay embedding.

Glossary: B trajectories, T time steps, N observed dimensions.
"""

from dsrecon.data.embedding import delay_embed, partial_observation
from dsrecon.data.io import (
    ARRAY_SUFFIXES,
    as_batch,
    as_series,
    check_finite,
    file_sha256,
    load_array,
    load_trajectory,
    save_array,
    save_trajectory,
    validate_array,
)
from dsrecon.data.noise import add_observation_noise
from dsrecon.data.splits import split_time, split_trajectories, standardize_splits
from dsrecon.data.trajectory import Trajectory
from dsrecon.data.windows import WindowSampler, all_windows

__all__ = [
    "ARRAY_SUFFIXES",
    "Trajectory",
    "WindowSampler",
    "add_observation_noise",
    "all_windows",
    "as_batch",
    "as_series",
    "check_finite",
    "delay_embed",
    "file_sha256",
    "load_array",
    "load_trajectory",
    "partial_observation",
    "save_array",
    "save_trajectory",
    "split_time",
    "split_trajectories",
    "standardize_splits",
    "validate_array",
]
