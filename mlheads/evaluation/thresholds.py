"""Decision thresholds that maximize F1, exact over all candidate thresholds.

A label is predicted where `score > threshold`. Between two consecutive
distinct scores every threshold predicts the same set, so the candidates are
one threshold per distinct score v, predicting exactly {score >= v}: the
midpoint between v and the next lower distinct score (below the lowest score:
v / 2, or -0.5 when v is 0). Predicting nothing (F1 = 0) is the fallback.
All candidates are scored at once from one sort per class, with no loop over
rows, and the global threshold from the counts the micro averages use
(streaming.py), so both tune on a split of any size.
Among equally good candidates the highest threshold wins (fewest positives
predicted). A class with no (unmasked) positive gets 0.5, as does the global
threshold when there is no positive at all.
"""

import numpy as np

from mlheads.evaluation import metrics
from mlheads.evaluation import ranking
from mlheads.evaluation import streaming

DEFAULT = ranking.DEFAULT_THRESHOLD


def tune(labels, scores, mask=None) -> tuple[np.ndarray, float]:
  """Thresholds maximizing F1 on (labels, scores).

  Args:
    labels: 0/1 `[N, K]`.
    scores: `[N, K]` in [0, 1].
    mask: optional 0/1 `[N, K]`; masked entries are left out.

  Returns:
    (per-class thresholds `[K]` float32, each maximizing that class's F1;
    one global threshold maximizing micro F1).

  Raises:
    ValueError: on bad input (see `metrics.check_inputs`).
  """
  y, s, t, valid = metrics.check_inputs(labels, scores, DEFAULT, mask)
  acc = streaming.Accumulator(y.shape[1], len(y), thresholds={'t': t})
  acc.add(y, s, valid)
  result = acc.finish(tune=True)
  return np.asarray(result.tuned), float(result.tuned_global)
