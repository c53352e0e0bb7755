"""The network averaged with the logistic baseline: a deep-and-wide ensemble chosen on validation.

    p = w * p_network + (1 - w) * p_logistic,     w in WEIGHTS, per output

The logistic model is `baselines.fit`'s (TF-IDF word and character n-grams + the numbers,
fitted on the train split, C chosen on validation). Each output's `w` is chosen on validation
(`choose`): the best macro mAP, where weights within MAP_TIE (absolute) of the best are a tie,
broken by the lower validation log loss (`log_loss`: the mean binary cross-entropy of the
blended probabilities over the known labels), then by the order of WEIGHTS (the network
first). Macro mAP saturates on a small validation split (ucla: 0.9997 for every w) while the
log loss still ranks the blends; it is the usual second criterion. The thresholds are then
tuned on the blended validation probabilities, and test is scored once with both. The two
models err differently on short texts (the linear model reads every rare n-gram; the network
shares statistics across them), so their average beats either on most tables: measured in
docs/results.md. `w = 1` is the network alone, so on validation the ensemble is never more than
MAP_TIE below it in macro mAP.

`config.ensemble = True` makes a run fit it after training (from_csv's default): metrics.json's
sections are then the ensemble's, what predict gives; 'network' holds the network's own and
'ensemble' the weights and the validation mAP and log loss of each (the choice can be redone
from them). The fitted logistic model is saved beside the checkpoints as arrays and JSON,
nothing pickled (ENSEMBLE_FILE, its SHA-256 in metrics.json), with the step it was blended
with; predict applies it to that step only and refuses a file that does not match metrics.json.
"""

import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.special
from sklearn.feature_extraction.text import TfidfVectorizer

from mlheads import baselines
from mlheads import errors
from mlheads.data import base
from mlheads.data import cells as cells_lib
from mlheads.evaluation import runner
from mlheads.state import writers

ENSEMBLE_FILE = 'ensemble.npz'
WEIGHTS = (1.0, 0.75, 0.5, 0.25, 0.0)  # the network's weight; the first wins a full tie
# Validation macro mAPs this close (absolute) to the best are a tie, broken by log loss: well
# below the spread of test mAP over seeds on every table measured (0.001-0.004).
MAP_TIE = 1e-4
FORMAT = 2  # bumped when the file's contents change (2: the validation log losses)


@dataclasses.dataclass
class Linear:
  """The baseline's chosen logistic model of every target as arrays: new rows are scored
  without scikit-learn's fitted objects, and saved without pickle (B25).

  Attributes:
    vocabularies: TF-IDF block ('word', 'char') -> its terms in column order.
    idf: block -> its inverse document frequencies fitted on train `[V]`.
    text: the raw text columns, joined by a space (`splits.Rows.text`); empty: no text.
    coef: target -> `[F, K]`, the weights of `baselines.transform`'s columns.
    intercept: target -> `[K]`.
    constant: target -> `[K]`: the probability of a class whose known train labels were all
      one value (scikit-learn's one-vs-rest constant), NaN for a fitted class.
  """
  vocabularies: dict[str, list[str]]
  idf: dict[str, np.ndarray]
  text: tuple[str, ...]
  coef: dict[str, np.ndarray]
  intercept: dict[str, np.ndarray]
  constant: dict[str, np.ndarray]

  @classmethod
  def of(cls, fitted: baselines.Fitted) -> 'Linear':
    """From `baselines.fit`'s vectorizers and chosen per-class models."""
    coef, icpt, const = {}, {}, {}
    for t, models in fitted.models.items():
      fit = [not isinstance(m, baselines.Constant) for m in models]
      coef[t] = np.stack([m.coef_[0] if f else np.zeros(fitted.width)
                          for m, f in zip(models, fit)], 1)
      icpt[t] = np.array([m.intercept_[0] if f else 0.0 for m, f in zip(models, fit)])
      const[t] = np.array([np.nan if f else m.value for m, f in zip(models, fit)])
    vecs = fitted.vectorizers
    return cls({n: sorted(v.vocabulary_, key=v.vocabulary_.get) for n, v in vecs.items()},
               {n: v.idf_ for n, v in vecs.items()}, fitted.text, coef, icpt, const)

  def vectorizers(self) -> dict[str, TfidfVectorizer]:
    """The fitted vectorizers rebuilt from vocabularies and idf (the same `transform`)."""
    out = {}
    for name, vec in baselines.vectorizers().items():
      if name in self.vocabularies:
        vec.set_params(vocabulary=self.vocabularies[name])
        vec.idf_ = self.idf[name]
        out[name] = vec
    return out

  def scores(self, ds: base.Dataset, table: pd.DataFrame, inputs: Mapping[str, np.ndarray]
             ) -> dict[str, np.ndarray]:
    """Target -> probabilities `[n, K]` of new rows: `table` the raw rows (its text columns
    are read), `inputs` their encoded model inputs (the numbers are read)."""
    vecs = self.vectorizers()
    texts = cells_lib.joined_texts(table, self.text) if vecs else None
    x = baselines.transform(vecs, texts, baselines.numbers(ds, inputs))
    out = {}
    for t, coef in self.coef.items():
      p = scipy.special.expit(x @ coef + self.intercept[t])
      out[t] = np.where(np.isnan(self.constant[t]), p, self.constant[t]).astype(np.float32)
    return out

  def arrays(self) -> dict[str, np.ndarray]:
    out = {f'idf/{n}': v for n, v in self.idf.items()}
    for key in ('coef', 'intercept', 'constant'):
      out.update({f'{key}/{t}': v for t, v in getattr(self, key).items()})
    return out


@dataclasses.dataclass
class Ensemble:
  """A fitted ensemble.

  Attributes:
    step: the network checkpoint step it was blended with.
    weights: output -> the network's weight w.
    targets: output -> its target key (the logistic model is per target).
    thresholds: output -> {'per_class': [K]}, tuned on the blended validation probabilities.
    calibration: output -> {'method', 'a', 'b'}, fitted on them (predict applies it).
    linear: the logistic model, for new rows.
    validation_map: output -> {w: validation macro mAP}.
    validation_log_loss: output -> {w: validation log loss} (`log_loss`).
  """
  step: int
  weights: dict[str, float]
  targets: dict[str, str]
  thresholds: dict
  calibration: dict
  linear: Linear
  validation_map: dict[str, dict[float, float]]
  validation_log_loss: dict[str, dict[float, float]]

  def blend(self, net_scores: Mapping[str, np.ndarray], ds: base.Dataset, table: pd.DataFrame,
            inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each output's blended probabilities `[n, K]` for new rows (see `Linear.scores`)."""
    lin = self.linear.scores(ds, table, inputs)
    out = dict(net_scores)
    for name, w in self.weights.items():
      out[name] = mix(net_scores[name], lin[self.targets[name]], w)
    return out

  def describe(self) -> dict:
    """metrics.json's 'ensemble' section."""
    by_w = lambda d: {o: {f'{w:g}': v for w, v in m.items()} for o, m in d.items()}
    return {'rule': ('w * network + (1 - w) * logistic, w per output by validation macro mAP; '
                     f'mAPs within {MAP_TIE:g} of the best tie, broken by the lower validation '
                     'log loss, then by the larger w'),
            'step': self.step, 'weights': self.weights,
            'validation_map': by_w(self.validation_map),
            'validation_log_loss': by_w(self.validation_log_loss)}


def mix(net: np.ndarray, linear: np.ndarray, w: float) -> np.ndarray:
  """`w * net + (1 - w) * linear`, float32 `[n, K]`."""
  return (w * net.astype(np.float64) + (1.0 - w) * linear).astype(np.float32)


def _mixed(head, net: dict, lin: dict, w: float) -> dict:
  """A `runner.predict_split` dict with the blended scores (and the loss of those)."""
  return baselines.predictions(head, mix(net['scores'], lin['scores'], w), net['labels'],
                               net['mask'])


def _validation_map(name: str, head, preds: dict) -> float:
  evals = runner.evaluate_predictions({name: head}, {name: preds})
  return runner.metrics_of(evals)[name]['average_precision_macro']


def log_loss(preds: Mapping[str, np.ndarray]) -> float:
  """The mean binary cross-entropy over the known labels of a `runner.predict_split` dict:
  'scores' `[n, K]` (probabilities, clipped to [eps, 1 - eps] as `baselines.predictions`
  clips them), 'labels' and 'mask' `[n, K]`; NaN if no label is known."""
  p = np.clip(preds['scores'].astype(np.float64), baselines.EPS, 1.0 - baselines.EPS)
  y, known = preds['labels'].astype(np.float64), preds['mask'].astype(bool)
  bce = -(y * np.log(p) + (1.0 - y) * np.log1p(-p))
  return float(bce[known].mean()) if known.any() else float('nan')


def choose(val_map: Mapping[float, float], val_loss: Mapping[float, float]) -> float:
  """The weight: of those whose validation macro mAP is within MAP_TIE of the best, the one of
  lowest validation log loss (the first in `val_map`'s order of equal ones); 1.0 (the network
  alone) if no mAP is finite. NaN mAPs or losses never win."""
  finite = {w: v for w, v in val_map.items() if np.isfinite(v)}
  if not finite:
    return 1.0
  best = max(finite.values())
  tied = [w for w, v in finite.items() if v >= best - MAP_TIE]
  loss = lambda w: val_loss[w] if np.isfinite(val_loss[w]) else np.inf
  return min(tied, key=loss)  # min keeps the first of equal losses


def choose_weights(heads: Mapping, net: Mapping[str, dict], lin: Mapping[str, dict]):
  """Each output's network weight on validation (`choose`).

  Args:
    heads: output -> head.
    net, lin: output -> the network's / the logistic model's validation predictions
      (`runner.predict_split` dicts, the same rows in the same order).

  Returns:
    ({output: w}, {output: {w: validation mAP}}, {output: {w: validation log loss}}).
  """
  weights, val_map, val_loss = {}, {}, {}
  for name, head in heads.items():
    if not np.array_equal(net[name]['labels'], lin[name]['labels']):
      raise errors.UsageError(f'ensemble: output {name!r}: the baseline\'s validation rows are '
                              'not the network\'s (different order or data)')
    mixed = {w: _mixed(head, net[name], lin[name], w) for w in WEIGHTS}
    val_map[name] = {w: _validation_map(name, head, m) for w, m in mixed.items()}
    val_loss[name] = {w: log_loss(m) for w, m in mixed.items()}
    weights[name] = choose(val_map[name], val_loss[name])
  return weights, val_map, val_loss


def fit(config, heads: Mapping, ds: base.Dataset, train_arrays, net_preds: Mapping,
        fitted: baselines.Fitted, step: int, columns: int = 0):
  """Chooses each output's weight on validation, blends both splits and evaluates the blend
  as the run's final evaluation does (`baselines.evaluate`).

  Args:
    config: the run's config (its evaluation settings).
    heads: the run's heads (binary targets; `baselines.check_fittable` checked them).
    ds, train_arrays: the data set and its train split (label propensities).
    net_preds: split ('validation', 'test') -> output -> the network's `runner.predict_split`
      dict.
    fitted: `baselines.fit` on the run's config (the same splits, in the same order).
    step: the network's checkpoint step.
    columns: classes whose columns the test evaluation keeps (the report's PR curves).

  Returns:
    (the Ensemble, metrics.json's sections of the blend, the blend's test `OutputEval`s).
  """
  lin_preds = fitted.predictions['logistic']
  weights, val_map, val_loss = choose_weights(heads, net_preds['validation'],
                                              lin_preds['validation'])
  blended = {s: {name: _mixed(head, net_preds[s][name], lin_preds[s][name], weights[name])
                 for name, head in heads.items()} for s in ('validation', 'test')}
  sections, calibration, test = baselines.evaluate(config, heads, ds, train_arrays, blended,
                                                   columns)
  targets = {name: head.target for name, head in heads.items()}
  ens = Ensemble(step, weights, targets, sections['thresholds'], calibration,
                 Linear.of(fitted), val_map, val_loss)
  return ens, sections, test


def _meta(ens: Ensemble) -> dict:
  lin = ens.linear
  return {'format': FORMAT, 'step': ens.step, 'weights': ens.weights, 'targets': ens.targets,
          'thresholds': ens.thresholds, 'calibration': ens.calibration, 'text': list(lin.text),
          'vocabularies': lin.vocabularies,
          **{key: {o: [[w, v] for w, v in m.items()] for o, m in getattr(ens, key).items()}
             for key in ('validation_map', 'validation_log_loss')}}


def save(workdir: str, ens: Ensemble) -> str:
  """Writes ENSEMBLE_FILE atomically (`writers.atomic_write`); returns its SHA-256.

  One .npz: the arrays, and the rest as JSON bytes under 'meta' (np.load reads it back with
  allow_pickle=False)."""
  meta = np.frombuffer(json.dumps(writers.jsonable(_meta(ens))).encode('utf-8'), np.uint8)
  buf = io.BytesIO()
  np.savez(buf, meta=meta, **ens.linear.arrays())
  writers.atomic_write(os.path.join(workdir, ENSEMBLE_FILE), buf.getvalue())
  return hashlib.sha256(buf.getvalue()).hexdigest()


def load(workdir: str, expected_sha256: str | None) -> Ensemble | None:
  """The run's ensemble, or None if it has none.

  `expected_sha256`: metrics.json's record of the file. A file that does not match it
  (changed after the run, or left by a resumed run that has not finished) is refused rather
  than silently blended; so is a missing file that metrics.json names.
  """
  path = os.path.join(workdir, ENSEMBLE_FILE)
  if not os.path.exists(path):
    if expected_sha256:
      raise errors.UsageError(f'{path} is missing, but metrics.json says the run blends it '
                              '(copy it with the run folder)')
    return None
  with open(path, 'rb') as f:
    data = f.read()
  got = hashlib.sha256(data).hexdigest()
  if got != expected_sha256:
    raise errors.UsageError(f'{path}: its SHA-256 {got[:12]} is not the one metrics.json '
                            f'recorded ({(expected_sha256 or "none")[:12]}); run the training '
                            'command again to finish the run')
  with np.load(io.BytesIO(data), allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files}
  meta = json.loads(arrays.pop('meta').tobytes().decode('utf-8'))
  if meta.get('format') != FORMAT:
    raise errors.UsageError(f'{path} was written by another mlheads (format '
                            f'{meta.get("format")}, this one reads {FORMAT}); train again')
  part = lambda key: {k.split('/', 1)[1]: v for k, v in arrays.items() if k.startswith(key + '/')}
  linear = Linear(meta['vocabularies'], part('idf'), tuple(meta['text']), part('coef'),
                  part('intercept'), part('constant'))
  by_w = lambda key: {o: {w: v for w, v in m} for o, m in meta[key].items()}
  return Ensemble(meta['step'], meta['weights'], meta['targets'], meta['thresholds'],
                  meta['calibration'], linear, by_w('validation_map'),
                  by_w('validation_log_loss'))
