"""Model and system analysis: Lyapunov spectra, fixed points and k-cycles (float64).

Everything here talks to models only through the protocol of :mod:`dsrecon.models.base` and to
benchmark systems through :mod:`dsrecon.systems`, so one function serves every model and system:

* :func:`lyapunov_spectrum` -- QR (Benettin) method on a model's latent map, a discrete system or a
  flow's variational equations; batched over initial conditions; a list of models -> a list.
* :func:`fixed_points` -- fixed points and k-cycles with stability: SCYFI / exhaustive enumeration
  for piecewise-linear models, Newton (Levenberg-Marquardt) for smooth models and systems.
* :func:`recompute_reference_spectra` -- re-estimate the dysts flows' spectra and flag where the
  stored metadata disagree.
"""

from dsrecon.analysis.cycles import Cycle, CycleSet, classify
from dsrecon.analysis.enumeration import enumerate_cycles
from dsrecon.analysis.fixed_points import fixed_points, levenberg_marquardt
from dsrecon.analysis.lyapunov import LyapunovResult, kaplan_yorke_dimension, lyapunov_spectrum
from dsrecon.analysis.pwl_view import make_view
from dsrecon.analysis.reference_spectra import markdown_table, recompute_reference_spectra
from dsrecon.analysis.scyfi import RegionPool, scyfi

__all__ = [
    "Cycle",
    "CycleSet",
    "LyapunovResult",
    "RegionPool",
    "classify",
    "enumerate_cycles",
    "fixed_points",
    "kaplan_yorke_dimension",
    "levenberg_marquardt",
    "lyapunov_spectrum",
    "make_view",
    "markdown_table",
    "recompute_reference_spectra",
    "scyfi",
]
