"""Classical baselines on an experiment's own splits: the label prior and TF-IDF + logistic
regression, scored by the very metrics a run reports.

    fitted = baselines.fit(config)      # every output of the experiment's config
    fitted.summary                      # metrics.json's sections, as a run writes them

For each target the experiment's outputs predict, fitted on the train split only:
* `label_prior`: every example scored with the train split's label frequencies (over the
  known labels): what a model that ignores its inputs can do;
* `logistic`: one L2-regularized logistic regression per class (liblinear) on
  [TF-IDF of word 1-2-grams | TF-IDF of character 2-5-grams within word boundaries | the
  numbers]. It is scikit-learn's `OneVsRestClassifier(LogisticRegression(solver='liblinear'))`,
  except that each class is fitted on the train rows where its label is known (unknown labels
  are masked, as in training). C is chosen from C_GRID by validation macro mAP; test is never
  looked at to choose.

The text is the data set's raw rows (`mlheads.data.DATASETS[name].rows`: the rows its builder
encoded, in record order), not the token ids; the numbers are the records' own `features`
inputs (standardized on train, exactly as the network sees them) and `image` pixels, flattened.
The metrics are `evaluation.runner`'s, through a sigmoid head per output (threshold 0.5;
per-class thresholds tuned and calibration fitted on validation for `test_tuned` and the ECE;
propensities of the train split for PSP@k), so they are mlheads' exact numbers. A target
stored sparse (label lists) is densified; one of more than MAX_CLASSES classes is refused
(MAX_CLASSES x len(C_GRID) liblinear fits: use the networks there). The whole table is held
in memory, so a run's ensemble (mlheads.ensemble) is left out above MAX_ROWS train rows.
"""

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence

from absl import logging
import joblib
import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from mlheads import errors
from mlheads.data import base
from mlheads.data import pipeline
from mlheads.data import splits as splits_lib
from mlheads.evaluation import runner
from mlheads.model import heads as heads_lib
from mlheads.model import model as model_lib
import mlheads.data as data_lib

C_GRID = (0.25, 1.0, 4.0, 16.0)
MAX_ITER = 1000
MAX_CLASSES = 1000
# Train rows above which a run leaves its ensemble out (ensemble_or_not): the features
# of every split are held in memory at once (sparse TF-IDF, ~1-2 KB a row of short text).
MAX_ROWS = 200_000
MODELS = ('logistic', 'label_prior')
EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] for the loss column only.


def ensemble_or_not(config, train_rows: int):
  """`config`, or a copy without the ensemble when the train split has more than
  `MAX_ROWS` rows: the logistic model it blends with holds the whole table in memory,
  which a streamed run must not (logged; the checkpoints then say `ensemble: False`)."""
  if not config.ensemble or train_rows <= MAX_ROWS:
    return config
  logging.warning('ensemble left out: %s train rows > %s, and the logistic model it blends '
                  'with holds the table in memory (mlheads/baselines.py); training the network '
                  'alone', f'{train_rows:,}', f'{MAX_ROWS:,}')
  config = config.copy_and_resolve_references()
  config.ensemble = False
  return config


def vectorizers() -> dict[str, TfidfVectorizer]:
  """The text features: word 1-2-grams and char_wb 2-5-grams, min_df 2, sublinear tf."""
  return {
      'word': TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
      'char': TfidfVectorizer(analyzer='char_wb', ngram_range=(2, 5), min_df=2,
                              sublinear_tf=True),
  }


def numbers(ds: base.Dataset, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
  """The records' numeric inputs (`features`, `image`), flattened and concatenated: `[n, F]`."""
  n = len(next(iter(arrays.values())))
  cols = [arrays[k].reshape(n, -1).astype(np.float64) for k, f in ds.inputs.items()
          if f.kind in ('features', 'image')]
  return np.concatenate(cols, axis=1) if cols else np.zeros((n, 0))


def _no_rows(ds: base.Dataset) -> errors.UsageError:
  return errors.UsageError(f'data set {ds.name}: its raw text rows are not at hand (only its '
                           'token ids), so there is no TF-IDF baseline for it')


def split_texts(ds: base.Dataset, rows: splits_lib.Rows | None,
                sizes: Mapping[str, int]) -> dict[str, list[str]] | None:
  """Each split's raw text, one string per record; None if the data set has no token input.

  The rows must be the records' rows in order: the metadata says the records were written in
  row order, and every split has as many rows as records.
  """
  if not any(f.kind == 'tokens' for f in ds.inputs.values()):
    return None
  if rows is None:
    raise _no_rows(ds)
  if ds.meta.get('record_order') != base.RECORD_ORDER:
    raise errors.UsageError(f'data set {ds.name}: its records were prepared by an older mlheads '
                            'in shuffled order; delete its folder in the data dir to prepare '
                            'it again')
  got = {s: len(rows.parts[s]) for s in sizes}
  if got != dict(sizes):
    raise errors.UsageError(f'data set {ds.name}: the raw rows per split {got} are not the '
                            f'records per split {dict(sizes)}')
  if not rows.text:
    return None
  return {s: rows.texts(s) for s in sizes}


@dataclasses.dataclass
class Features:
  """The design matrices `{split: [n, F]}` (CSR), the width of each block and the vectorizers
  fitted on train (block name -> TfidfVectorizer), which `transform` applies to new rows."""
  matrices: dict[str, sp.csr_matrix]
  blocks: dict[str, int]
  vectorizers: dict[str, TfidfVectorizer]


def transform(vectorizers: Mapping[str, TfidfVectorizer], texts: Sequence[str] | None,
              nums: np.ndarray) -> sp.csr_matrix:
  """One split's design matrix `[n, F]`: [TF-IDF blocks | numbers], as `features` made them."""
  mats = [vec.transform(texts) for vec in vectorizers.values()] if texts is not None else []
  if nums.shape[1]:
    mats.append(sp.csr_matrix(nums))
  return sp.hstack(mats, format='csr', dtype=np.float64)


def features(texts: Mapping[str, Sequence[str]] | None,
             nums: Mapping[str, np.ndarray]) -> Features:
  """[TF-IDF word | TF-IDF char | numbers] per split, the vectorizers fitted on train.

  A vectorizer that finds no term in at least 2 train texts (empty vocabulary) is left out.
  """
  blocks, fitted = {}, {}
  for name, vec in (vectorizers().items() if texts is not None else ()):
    try:
      vec.fit(texts['train'])
    except ValueError:  # empty vocabulary: no term in >= min_df texts.
      logging.warning('baseline: no %s terms in at least 2 train texts; left out', name)
      continue
    blocks[name], fitted[name] = len(vec.vocabulary_), vec
  if nums['train'].shape[1]:
    blocks['numbers'] = nums['train'].shape[1]
  if not blocks:
    raise errors.UsageError('baseline: no text terms and no numbers to fit a model on')
  mats = {s: transform(fitted, texts[s] if texts is not None else None, nums[s]) for s in nums}
  return Features(mats, blocks, fitted)


@dataclasses.dataclass(frozen=True)
class Constant:
  """A class whose known train labels are all one value: that value (OvR's constant)."""
  value: float

  def predict_proba(self, x):
    return np.tile([1.0 - self.value, self.value], (x.shape[0], 1))


def fit_class(x, y: np.ndarray, known: np.ndarray, c: float):
  """One class' logistic regression on the rows where its label is known."""
  if not known.all():
    x, y = x[known], y[known]
  if len(y) == 0:
    return Constant(0.5)
  if np.unique(y).size < 2:
    return Constant(float(y[0]))
  return LogisticRegression(C=c, solver='liblinear', max_iter=MAX_ITER).fit(x, y)


def _timed_fit(*args):
  t0 = time.perf_counter()
  model = fit_class(*args)
  return model, time.perf_counter() - t0


def prior_scores(y: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
  """The train label frequencies over known labels, for `n` examples: `[n, K]`."""
  known = mask.sum(0)
  freq = np.where(known > 0, (y * mask).sum(0) / np.maximum(known, 1), 0.5)
  return np.tile(freq, (n, 1))


def predictions(head, scores, labels, mask) -> dict[str, np.ndarray]:
  """What `runner.predict_split` gives per output: scores, labels, mask and the head's loss."""
  p = np.clip(scores.astype(np.float64), EPS, 1.0 - EPS)
  logits = (np.log(p) - np.log1p(-p)).astype(np.float32)
  loss = np.asarray(head.loss_fn(logits, labels.astype(np.float32), mask.astype(np.float32)))
  return {'scores': scores.astype(np.float32), 'labels': labels, 'mask': mask, 'loss': loss}


@dataclasses.dataclass
class Fitted:
  """What `fit` returns.

  Attributes:
    heads: output name -> the sigmoid head its metrics are computed through.
    predictions: model ('logistic', 'label_prior') -> split -> output -> `runner.predict_split`'s
      dict ('scores', 'labels', 'mask', 'loss').
    summary: metrics.json: the logistic model's sections as a run writes them ('validation',
      'test', 'test_tuned', 'thresholds', 'default_thresholds'), 'label_prior' with the same
      sections, and 'baseline': what was fitted (features, C per target, validation mAP and
      fitting seconds per C summed over classes, `wall_s` for featurizing and every fit).
    class_names: output name -> its class names.
    vectorizers: the TF-IDF vectorizers fitted on train (`Features.vectorizers`).
    text: the raw text columns their texts join (`splits.Rows.text`); empty: no text.
    models: target -> its per-class models (`fit_class`'s) at the C chosen on validation.
    width: the design matrix's columns (`transform`'s).
  """
  heads: dict[str, heads_lib.Head]
  predictions: dict[str, dict[str, dict[str, dict[str, np.ndarray]]]]
  summary: dict
  class_names: dict[str, list[str]]
  vectorizers: dict[str, TfidfVectorizer]
  text: tuple[str, ...]
  models: dict[str, list]
  width: int


def output_targets(config) -> dict[str, str]:
  """Output name -> its target key; every name in the config checked, before any data is read."""
  spec = model_lib.resolve(config)
  for name, h in spec.heads.items():
    if h.cls.target_kind != 'binary':
      raise errors.UsageError(f'baseline: output {name!r} ({h.kind}) predicts '
                              f'{h.cls.target_kind} targets; the baseline fits binary targets '
                              'only')
  return {name: h.settings['target'] for name, h in spec.heads.items()}


def output_heads(targets: Mapping[str, str], ds: base.Dataset) -> dict[str, heads_lib.Head]:
  """A sigmoid head per output, sized to its target: what its metrics are computed through."""
  out = {}
  for name, target in targets.items():
    if target not in ds.targets:
      raise errors.UsageError(f'head {name!r}: target {target!r} is not in data set {ds.name}; '
                              f'its targets are {sorted(ds.targets)}')
    field = ds.targets[target]
    if field.kind != 'binary':
      raise errors.UsageError(f'baseline: output {name!r} predicts {field.kind} targets '
                              f'{target!r}; the baseline fits binary targets only')
    k = int(np.prod(field.shape))
    if k > MAX_CLASSES:
      raise errors.UsageError(f'baseline: output {name!r} has {k:,} classes; the one-vs-rest '
                              f'baseline fits at most {MAX_CLASSES:,} (one logistic regression '
                              'per class and C)')
    out[name] = heads_lib.SigmoidHead(num_classes=k, target=target)
  return out


def check_fittable(config, ds: base.Dataset) -> None:
  """Raises now what `fit` would only find after a run has trained: an output the baseline
  cannot fit, or a data set with text whose raw rows are not at hand."""
  output_heads(output_targets(config), ds)
  if any(f.kind == 'tokens' for f in ds.inputs.values()) and (
      data_lib.get(config.data.name).rows is None):
    raise _no_rows(ds)


def fit(config, *, c_grid: Sequence[float] = C_GRID, jobs: int | None = None,
        progress: Callable[[str], None] = logging.info) -> Fitted:
  """Fits both baselines on `config`'s train split, C on validation; scores every split.

  Args:
    config: an experiment config (its data and its outputs' targets are read; the trunk and the
      optimizer are not).
    c_grid: the inverse regularization strengths tried.
    jobs: threads fitting (C, class) pairs at once (liblinear releases the GIL); default: the
      cores this process may use.
    progress: called with one line per C (and per target), e.g. `logging.info` or `print`.
  """
  if not c_grid or min(c_grid) <= 0:
    raise errors.UsageError(f'baseline: C values must be > 0, got {list(c_grid)}')
  targets = output_targets(config)
  ds = data_lib.load_checked(config)  # checked when prepared; the baseline holds them whole
  arrays = {s: pipeline.read_split(ds.split(s)) for s in base.SPLITS}
  heads = output_heads(targets, ds)
  sizes = {s: len(next(iter(arrays[s].values()))) for s in base.SPLITS}
  source = data_lib.get(config.data.name)
  has_text = any(f.kind == 'tokens' for f in ds.inputs.values())
  rows = source.rows(config.data) if source.rows is not None and has_text else None
  t0 = time.perf_counter()
  texts = split_texts(ds, rows, sizes)
  feats = features(texts, {s: numbers(ds, arrays[s]) for s in sizes})
  featurize_s = time.perf_counter() - t0
  x = feats.matrices
  progress(f'baseline {ds.name}: {sizes["train"]:,} train rows, features {feats.blocks} '
           f'({featurize_s:.1f} s)')
  jobs = jobs or joblib.cpu_count()
  t_fit = time.perf_counter()

  preds = {m: {s: {} for s in ('validation', 'test')} for m in MODELS}
  info = {'features': feats.blocks, 'featurize_s': featurize_s, 'c_grid': list(c_grid),
          'rows': sizes, 'c': {}, 'validation_map': {}, 'fit_s': {}}
  chosen = {}
  for target in dict.fromkeys(h.target for h in heads.values()):
    outs = [n for n, h in heads.items() if h.target == target]
    head = heads[outs[0]]
    y, mask = {}, {}
    for s in sizes:  # [n, K] 0/1 and known, a sparse target's label lists densified
      y[s], mask[s] = (a.reshape(sizes[s], -1) for a in ds.targets[target].densify(
          arrays[s], target))
    k = y['train'].shape[1]
    for s in preds['label_prior']:
      p = prior_scores(y['train'], mask['train'], sizes[s])
      for o in outs:
        preds['label_prior'][s][o] = predictions(head, p, y[s], mask[s])

    tasks = ((c, j) for c in c_grid for j in range(k))
    # (C, class) pairs in C order, fitted `jobs` at a time; results come back in that order.
    fitted = joblib.Parallel(n_jobs=jobs, backend='threading', return_as='generator')(
        joblib.delayed(_timed_fit)(x['train'], y['train'][:, j], mask['train'][:, j] > 0, c)
        for c, j in tasks)
    best, val_map, fit_s = None, {}, {}
    for c in c_grid:
      models, seconds = zip(*[next(fitted) for _ in range(k)])
      fit_s[c] = float(sum(seconds))  # fitting time summed over the classes (threads overlap)
      scores = {s: np.stack([m.predict_proba(x[s])[:, 1] for m in models], 1)
                for s in ('validation', 'test')}
      val = predictions(head, scores['validation'], y['validation'], mask['validation'])
      val_map[c] = runner.metrics_of(runner.evaluate_predictions(
          {target: head}, {target: val}))[target]['average_precision_macro']
      progress(f'baseline {ds.name}: {target} ({k} classes), C={c:g}: validation mAP '
               f'{val_map[c]:.4f} ({fit_s[c]:.1f} s of fitting)')
      score = val_map[c] if np.isfinite(val_map[c]) else -np.inf
      if best is None or score > best[0]:
        best = (score, c, scores, list(models))
    _, c, scores, chosen[target] = best
    info['c'][target], info['validation_map'][target], info['fit_s'][target] = c, val_map, fit_s
    progress(f'baseline {ds.name}: {target}: C={c:g} chosen on validation')
    for s in preds['logistic']:
      for o in outs:
        preds['logistic'][s][o] = predictions(head, scores[s], y[s], mask[s])

  info['wall_s'] = featurize_s + time.perf_counter() - t_fit
  sections = {m: evaluate(config, heads, ds, arrays['train'], preds[m])[0] for m in MODELS}
  summary = {
      'experiment': config.experiment or ds.name,
      'model': 'TF-IDF (word 1-2-grams, char_wb 2-5-grams) + numbers -> one-vs-rest logistic '
               'regression (liblinear), C on validation macro mAP',
      **sections['logistic'],
      'label_prior': sections['label_prior'],
      'baseline': info,
  }
  names = {o: ds.class_names(h.target) for o, h in heads.items()}
  return Fitted(heads=heads, predictions=preds, summary=summary, class_names=names,
                vectorizers=feats.vectorizers, text=tuple(rows.text) if texts else (),
                models=chosen, width=x['train'].shape[1])


def evaluate(config, heads, ds, train_arrays, preds, columns: int = 0):
  """One model's `preds` (split -> output -> arrays) evaluated as a run's final evaluation
  does it: thresholds tuned and calibration fitted on validation, applied to test.

  Returns (metrics.json's sections, the calibration {output: {'method', 'a', 'b'}}, the test
  split's `runner.OutputEval`s, keeping `columns` classes' columns for the report)."""
  e = config.evaluation
  propensity = runner.propensities(heads, ds, train_arrays, e.propensity_a, e.propensity_b)
  val = runner.evaluate_predictions(heads, preds['validation'], propensity=propensity,
                                    calibrate=e.calibration)
  thresholds, calibration = runner.tuned_thresholds(val), runner.calibrations(val, e.calibration)
  test = runner.evaluate_predictions(heads, preds['test'], propensity=propensity,
                                     thresholds=thresholds, calibration=calibration,
                                     columns=columns)
  return runner.summarize(heads, val, test, thresholds, calibration), calibration, test


def beside(summary: Mapping, fitted: Fitted) -> dict:
  """A run's test macro mAP per output beside the baselines' on the same splits.

  Args:
    summary: the run's metrics.json (`train.train_and_evaluate`'s return).
    fitted: `fit` on the run's config.

  Returns:
    {output: {'run', 'logistic', 'label_prior'}: test average_precision_macro (None where
    undefined)}, plus 'c' (the C chosen per target on validation).
  """
  test = lambda sections, out: sections.get('test', {}).get(out, {}).get(
      'average_precision_macro')
  base = fitted.summary
  out = {o: {'run': test(summary, o), 'logistic': test(base, o),
             'label_prior': test(base['label_prior'], o)} for o in fitted.heads}
  out['c'] = dict(base['baseline']['c'])
  return out
