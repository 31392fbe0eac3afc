"""The benchmark-systems layer: every dysts flow and map by name, batched vector fields and
Jacobians (NumPy and torch), fast batched integrators, and dataset generation with caching.

Public API::

    get(name, kind=None) -> System          list_systems(kind=None) -> list[str]
    integrate(f, x0, n_steps, dt, *, method="dop853", ...) -> IntegrationResult
    simulate(name, n_steps, *, dt=None, pts_per_period=None, n_trajectories=1, noise=0.0,
             dynamical_noise=0.0, seed=None, ...) -> dsrecon.data.Trajectory
    make_splits(name, n_steps, *, n_train=1, n_val=1, n_test=1, seed=None, ...) -> (train, val, test)
    dysts_time_grid(system, n_steps, pts_per_period=100)   # dysts' make_trajectory sample times

Reference: Gilpin (2021), NeurIPS Datasets & Benchmarks (dysts); Hairer, Norsett & Wanner (1993)
*Solving Ordinary Differential Equations I* (DOP853, DOPRI5, step-size control, dense output).
"""

from dsrecon.systems.initial import dysts_time_grid
from dsrecon.systems.integrate import METHODS, IntegrationResult, integrate
from dsrecon.systems.registry import System, get, list_systems
from dsrecon.systems.simulate import make_splits, simulate

__all__ = [
    "METHODS",
    "IntegrationResult",
    "System",
    "dysts_time_grid",
    "get",
    "integrate",
    "list_systems",
    "make_splits",
    "simulate",
]
