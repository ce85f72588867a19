"""Label restoration from shared weights (FedAvg; docs/method.md (labels under FedAvg)).

Every gradient-based label method already works on a FedAvg observation through the
pseudo-gradient (W_0 - W_T) / (eta T) (``Observation.gradient_view``), with K = N: that is the
"pseudo" route, e.g. plain ``labels=zeroshot``. This package adds methods that account for
the model moving during the T local steps, and two that combine them (:class:`Mean`,
:class:`Search`):

- :class:`Interpolated` (Dimitrov et al., TMLR 2022): statistics at the start model W_0 and at
  the end model (the observed W_T, or one simulated on dummy data), interpolated over the T
  steps; the per-step counts K p_t - K S / O_t are averaged. It wraps any label method that
  has ``counts(observation)`` (and, for ``interpolate='statistics'``, ``dummy_statistics``),
  so zero-shot and every other count-based method can use it.
- :class:`Fitted` (deepleak's): fits the classifier's T local steps to the shared classifier
  update, with one unknown feature vector and one soft label per sample; the labels that
  explain the update best give the counts. It uses the whole (C, M) update, not only its
  row sums, and holds up best where the weights travel far (DLG's initialisation, large eta).
- :class:`FittedSearch` (deepleak's): from the fitted soft counts, a local search over label
  sets, each scored by the classifier fit with its labels held fixed
  (:mod:`deepleak.labels.fedavg.classifier_fit` holds the fit, batched over candidate sets).
- :class:`ImageSearch` (deepleak's): the same kind of search from :class:`Search`'s labels,
  each label set scored by a classifier fit whose features come from free images under W_0
  and under the shared W_T (the body's training moves them; for many local steps).
- :class:`Simulated` (deepleak's): replays the client's recipe on dummy inputs labelled with a
  first estimate and reads off, per sample, how much of the pseudo-gradient's class row sums
  its own class and the other classes make as the model fits it; the counts then solve the
  resulting linear model. It keeps working where the client has fitted its data (large eta x
  steps), which the dummy statistics of the two methods above do not see.

All counts sum to N (the recipe's ``num_samples``).

One module per method, named after its config (``labels=fedavg_<module>``): interpolated,
simulated, fitted, fitted_search, image_search, mean, search; the shared pieces in
:mod:`~deepleak.labels.fedavg.common` (replaying the recipe), :mod:`~deepleak.labels.fedavg.moves`
(the label-set search) and :mod:`~deepleak.labels.fedavg.classifier_fit` (the classifier fit).
"""

from deepleak.labels.fedavg.common import _row_sums as _row_sums
from deepleak.labels.fedavg.common import simulate_training, with_weights
from deepleak.labels.fedavg.fitted import Fitted
from deepleak.labels.fedavg.fitted_search import FittedSearch
from deepleak.labels.fedavg.image_search import ImageSearch
from deepleak.labels.fedavg.interpolated import Interpolated
from deepleak.labels.fedavg.mean import Mean
from deepleak.labels.fedavg.moves import local_search
from deepleak.labels.fedavg.search import Search
from deepleak.labels.fedavg.simulated import Simulated

__all__ = [
    "Fitted", "FittedSearch", "ImageSearch", "Interpolated", "Mean", "Search", "Simulated", "local_search",
    "simulate_training", "with_weights",
]
