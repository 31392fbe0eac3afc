"""DSR metrics on plain arrays (DESIGN.md section 4) and the paper evaluation protocol.

Every metric returns a :class:`MetricResult` (value, T used, name, flag, details); see
:mod:`dsrecon.metrics.result` for the flags and the conventions for diverged trajectories.

=================================  ===========================================================
``state_space_divergence``         D_stsp = KL(p_true || p_gen): binned (N < 6) or GMM (N >= 6)
``hellinger_distance``             D_H: Hellinger distance of smoothed power spectra
``prediction_error``               PE(n): n-step-ahead MSE of a model from every test point
``smape`` / ``valid_prediction_time``  forecast metrics in the dysts convention
``lyapunov_exponent_error``        relative error of the largest Lyapunov exponent
``evaluate_model`` / ``evaluate_run``  the paper protocol (1.25 T generated, 0.25 T dropped)
``aggregate`` / ``aggregate_runs`` median, MAD, mean, sd over runs
=================================  ===========================================================
"""

from dsrecon.metrics.evaluation import (
    aggregate,
    aggregate_runs,
    evaluate_model,
    evaluate_run,
    merge_metrics_json,
)
from dsrecon.metrics.forecast import lyapunov_exponent_error, smape, valid_prediction_time
from dsrecon.metrics.hellinger import hellinger_distance
from dsrecon.metrics.prediction import prediction_error
from dsrecon.metrics.result import DIVERGENCE_FACTOR, FLAGS, MetricResult
from dsrecon.metrics.state_space import state_space_divergence

__all__ = [
    "DIVERGENCE_FACTOR",
    "FLAGS",
    "MetricResult",
    "aggregate",
    "aggregate_runs",
    "evaluate_model",
    "evaluate_run",
    "hellinger_distance",
    "lyapunov_exponent_error",
    "merge_metrics_json",
    "prediction_error",
    "smape",
    "state_space_divergence",
    "valid_prediction_time",
]
