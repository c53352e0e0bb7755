"""Exact multi-label metrics: jittable, mask-aware, equal to scikit-learn.

Inputs: `labels` 0/1 `[N, K]`, `scores` in [0, 1] `[N, K]` (a `[N]` array is
one binary output, `[N, 1]`), optional `mask` 0/1 `[N, K]`. A label is
predicted where `score > threshold`; `threshold` is a scalar or a `[K]` vector.

Conventions (each checked against scikit-learn in tests/evaluation/test_metrics.py):

* A masked entry is left out everywhere, whatever its label or score holds
  (NaN, -1, ...). A row with every entry masked is absent: it counts in no
  sample-wise mean. Threshold metrics over entries (hamming, micro averages)
  use the unmasked entries; per-class metrics use each column's unmasked rows;
  sample-wise and ranking metrics rank each row among its unmasked labels.
* precision / recall / F1 follow scikit-learn's defaults with
  `zero_division=0`: an undefined ratio counts as 0, in macro and sample
  averages alike (macro averages over all K classes, as scikit-learn does).
  `per_class` reports those undefined values as NaN instead, so that a report
  never shows an undefined value as 0.
* `average_precision_macro` and `roc_auc_macro` average over the classes that
  have at least one positive and one negative (unmasked); the other classes
  are NaN in `per_class` and never enter a mean. NaN if no class qualifies.
  `*_micro` rank all unmasked entries together (scikit-learn's "micro").
* Ties follow scikit-learn: average precision uses the precision at the end
  of a tie group, ROC AUC counts a tied positive/negative pair as 1/2,
  `label_ranking_loss` counts it as a wrong pair, LRAP and coverage rank a
  label after every label scored at least as high. Rows whose unmasked labels
  are all 0 or all 1 score LRAP 1 and ranking loss 0; a row without a
  positive has coverage 0 (all as scikit-learn).
* The @k metrics, k in (1, 3, 5), rank each row's unmasked labels by score
  and average over rows (ranking.py has the formulas). `precision_at_k`:
  (#positives among the k top-scored labels) / k; `recall_at_k`: the same
  over the row's #positives; `ndcg_at_k`: DCG@k (discount 1 / log2(1 + rank))
  over the ideal DCG of min(k, #positives) positives (= scikit-learn's
  `ndcg_score`). Rows without a positive score 0 in all three. Ties at the
  k-th score are split evenly (the expected value over a random order of the
  tied labels), so no result depends on column order. A row with fewer than k
  unmasked labels takes all of them and divides by their number.
  `one_error` is 1 - `precision_at_1`.
* Propensity-scored `psp_at_k` and `psndcg_at_k` (Jain, Prabhu and Varma,
  KDD 2016): as P@k and DCG@k with each positive l's gain 1 / p_l, PSnDCG@k
  divided by sum_{j<=k} 1 / log2(1 + j), where p_l = 1 / (1 + C (N_l + B)^-A),
  C = (ln N - 1) (B + 1)^A, N_l the positives of label l among N rows of the
  train split (`propensities`; A = 0.55, B = 1.5 by default). Not normalized
  by the best achievable value (some tools report PSP / best PSP).
* `label_accuracy` = 1 - `hamming_loss`: the fraction of unmasked (row, label)
  entries predicted right. `subset_accuracy` is the fraction of rows with every
  unmasked label right. For one label (K = 1) both are the plain accuracy.
* One label (K = 1): the metrics that rank a row's labels against each other
  (`RANKING_KEYS`: LRAP, coverage, ranking loss, one-error and every @k metric)
  say nothing with a single label per row and are not reported (`keys(1)`).

Scores are compared in float32; they must lie in [0, 1] because the ranking
metrics (ranking.py) sort packed int32 keys of (score bits, label bit).

`compute` and `per_class` run streaming.py's `Accumulator` over the arrays as
one batch: the same exact code evaluates a split of any size batch by batch
(the threshold counts are counts.py's `ThresholdCounts`: `init`, `update`,
`finalize`).
"""

import numpy as np

from mlheads.evaluation import counts
from mlheads.evaluation import ranking
from mlheads.evaluation import streaming

TOP_K = ranking.TOP_K
ThresholdCounts, init, update, finalize = (counts.ThresholdCounts, counts.init, counts.update,
                                           counts.finalize)
PROPENSITY_A, PROPENSITY_B = 0.55, 1.5

KEYS = (
    'label_accuracy', 'hamming_loss', 'subset_accuracy',
    'precision_micro', 'recall_micro', 'f1_micro',
    'precision_macro', 'recall_macro', 'f1_macro',
    'precision_samples', 'recall_samples', 'f1_samples',
    'average_precision_macro', 'average_precision_micro',
    'roc_auc_macro', 'roc_auc_micro',
    'label_ranking_average_precision', 'coverage_error', 'label_ranking_loss',
    'one_error',
    *(f'{m}_at_{k}' for m in ranking.AT_K for k in TOP_K),
)

is_ranking = ranking.is_ranking
RANKING_KEYS = tuple(k for k in KEYS if is_ranking(k))


def keys(num_classes: int) -> tuple[str, ...]:
  """The metric names `compute` reports for `num_classes` labels (`KEYS`, less
  `RANKING_KEYS` for one label)."""
  return tuple(k for k in KEYS if num_classes != 1 or not is_ranking(k))


def propensities(positives, rows: int, a: float = PROPENSITY_A, b: float = PROPENSITY_B
                 ) -> np.ndarray:
  """Jain et al.'s label propensities `[K]` float32 from a split's positives per label `[K]`
  among `rows` rows: 1 / (1 + C (N_l + B)^-A), C = (ln N - 1) (B + 1)^A (C = 0, every
  propensity 1, below N = e, where the formula would leave (0, 1])."""
  n_l = np.asarray(positives, np.float64)
  c = max(np.log(max(rows, 1)) - 1.0, 0.0) * (b + 1.0) ** a
  return (1.0 / (1.0 + c * (n_l + b) ** -a)).astype(np.float32)


def check_inputs(labels, scores, threshold=0.5, mask=None):
  """Validates and converts inputs for the jitted cores.

  Only unmasked entries are checked: a masked entry may hold anything.

  Args:
    labels: 0/1 `[N, K]` or `[N]`.
    scores: `[N, K]` or `[N]`, finite, in [0, 1].
    threshold: scalar or `[K]`.
    mask: optional 0/1, shaped like `labels`.

  Returns:
    (labels int8, scores float32, threshold float32 `[K]`, mask bool), each
    `[N, K]` with masked entries zeroed.

  Raises:
    ValueError: naming the first bad value and its position.
  """
  labels, scores = np.asarray(labels), np.asarray(scores)
  if labels.shape != scores.shape:
    raise ValueError(f'labels {labels.shape} and scores {scores.shape} differ')
  if labels.ndim == 1:
    labels, scores = labels[:, None], scores[:, None]
    mask = None if mask is None else np.asarray(mask)[:, None]
  if labels.ndim != 2 or labels.shape[0] == 0 or labels.shape[1] == 0:
    raise ValueError(f'expected non-empty [N, K] arrays, got {labels.shape}')
  # Fast path without a mask: no np.where passes over [N, K] (this runs on
  # the host for every `compute` call).
  valid = None if mask is None else np.asarray(mask)
  if valid is not None:
    if valid.shape != labels.shape:
      raise ValueError(f'mask {valid.shape} and labels {labels.shape} differ')
    _first_bad('mask', valid, _not01(valid), 'not 0/1')
    valid = valid == 1
  _first_bad('labels', labels, _and_valid(_not01(labels), valid), 'not 0/1')
  scores32 = scores.astype(np.float32, copy=False)
  with np.errstate(invalid='ignore'):
    bad = ~((scores32 >= 0) & (scores32 <= 1))
  _first_bad('scores', scores, _and_valid(bad, valid),
             'not a finite number in [0, 1]')
  if valid is None:
    labels = labels.astype(np.int8, copy=False)
    valid = np.ones(labels.shape, bool)
  else:
    labels = np.where(valid, labels == 1, 0).astype(np.int8)
    scores32 = np.where(valid, scores32, np.float32(0))
  k = labels.shape[1]
  threshold = np.asarray(threshold, np.float32)
  if threshold.ndim > 1 or threshold.size not in (1, k):
    raise ValueError(f'threshold must be a scalar or [{k}], got '
                     f'{threshold.shape}')
  if not np.all(np.isfinite(threshold)):
    raise ValueError(f'threshold {threshold} is not finite')
  return (labels, scores32, np.broadcast_to(threshold, (k,)).astype(
      np.float32), valid)


def _not01(a):
  return np.zeros(a.shape, bool) if a.dtype == bool else (a != 0) & (a != 1)


def _and_valid(bad, valid):
  return bad if valid is None else bad & valid


def _first_bad(name, values, bad, why):
  if np.any(bad):
    pos = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(f'{name}{list(pos)} = {values[pos].item()!r}: {why}')


def _accumulate(labels, scores, threshold, mask, propensity) -> streaming.Result:
  y, s, t, valid = check_inputs(labels, scores, threshold, mask)
  if propensity is None:
    propensity = propensities(y.sum(0, where=valid, dtype=np.int64), int(valid.any(1).sum()))
  p = np.asarray(propensity, np.float32)
  if p.shape != (y.shape[1],) or not np.all((p > 0) & (p <= 1)):
    raise ValueError(f'propensity must be [{y.shape[1]}] values in (0, 1], got {p.shape}')
  acc = streaming.Accumulator(y.shape[1], len(y), thresholds={'t': t},
                              inv_propensity=1.0 / p)
  acc.add(y, s, valid)
  return acc.finish()


def sigmoid(logits) -> np.ndarray:
  """Scores from logits (`--from_logits`): the sigmoid in float64, then float32, as every
  metric compares scores. float32 holds no value between 1 - 2**-24 and 1, so logits above
  about 16.6 tie at 1.0 (below about -87 at 0): rank such outputs by scores, not logits."""
  from scipy import special  # pylint: disable=g-import-not-at-top
  return special.expit(np.asarray(logits, np.float64)).astype(np.float32)


def compute(labels, scores, threshold=0.5, mask=None, propensity=None) -> dict[str, float]:
  """All metrics (see `KEYS` and the module docstring) as Python floats.

  Args:
    labels: 0/1 `[N, K]` (or `[N]` for one binary output).
    scores: `[N, K]` in [0, 1].
    threshold: scalar or `[K]` per-class thresholds.
    mask: optional 0/1 `[N, K]`; 0 leaves an entry out.
    propensity: `[K]` label propensities in (0, 1] for PSP@k / PSnDCG@k (`propensities`
      of the train split); default: those of `labels` itself.

  Returns:
    {metric name: value} for `keys(K)`; NaN where a metric is undefined (e.g.
    macro ROC AUC with no class holding both a positive and a negative).

  Raises:
    ValueError: on bad input, naming the value and its position.
  """
  return _accumulate(labels, scores, threshold, mask, propensity).metrics['t']


def per_class(labels, scores, threshold=0.5, mask=None
             ) -> dict[str, np.ndarray]:
  """Per-class `[K]` arrays for reports; NaN where a value is undefined.

  Keys: precision (NaN without predicted positives), recall (NaN without
  positives), f1 (NaN without either), average_precision and roc_auc (NaN
  unless the class has both a positive and a negative), support (positives)
  and count (unmasked entries), all over each column's unmasked rows.
  The NaN entries of average_precision / roc_auc are the classes left out of
  the macro averages.
  """
  return _accumulate(labels, scores, threshold, mask, None).per_class['t']
