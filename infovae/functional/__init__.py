"""Pure functions behind the plugins (the ``torch.nn.functional`` of infovae).

Shapes: x (n, d), y (m, d); scalars are returned as 0-dim tensors.
"""

from .distances import pairwise_sq_dists
from .mmd import mmd, resolve_bandwidth
from .stein import stein_direction, svgd_median_bandwidth
from .two_sample import PermutationTest, mmd_permutation_test
from .logistic import discretized_logistic_mixture_log_prob, sample_discretized_logistic_mixture
