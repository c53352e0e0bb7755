"""What a run prints: library chatter filtered out, log lines that never break the progress bar,
the config as `key: value` lines, and the end-of-run table of metrics.

Entry points (main, predict, compare, the Python API) call `quiet()` once; train_and_evaluate
opens its bar with `progress_bar(...)`; main prints `summary_table(summary, workdir)` on stdout.
Nothing here imports the rest of mlheads: it formats plain dicts.
"""

import contextlib
import math
import sys

from absl import logging
import tqdm

# (where the record comes from, how its message starts): dropped at any level. mlheads'
# builders use tfds custom configs by design (the config's name carries the settings), so tfds'
# per-run warning, which prints the whole config, says nothing; a folder being prepared has no
# dataset_info.json yet, by definition. Checkpoints are not OCDBT (state/array_storage.py), but
# orbax tries an OCDBT merge after every save and warns that there was nothing to merge.
_NOISE = (
    ('/tensorflow_datasets/', 'Using custom data configuration'),
    ('/tensorflow_datasets/', 'Variant folder'),
    ('/orbax/', '[process=%s][thread=%s] Skipping merge of OCDBT checkpoints'),
)
# Libraries whose INFO lines are per-call chatter (orbax's saves, tfds' file reads, JAX's
# "Unable to initialize backend 'tpu'" on a CPU machine). Their warnings and errors still show.
_INFO_FROM = ('/orbax/', '/tensorflow_datasets/', '/jax/', '/jaxlib/')


class _Chatter(logging.logging.Filter):

  def filter(self, record):
    path = record.pathname.replace('\\', '/')
    if record.levelno < logging.logging.WARNING and any(p in path for p in _INFO_FROM):
      return False
    msg = str(record.msg)
    return not any(p in path and msg.startswith(m) for p, m in _NOISE)


def quiet() -> None:
  """Filters library chatter out of the absl log and turns tfds' progress bars off (idempotent).

  On the absl handler (every record that reaches it, JAX's included) and on the absl logger
  (tfds logs through it, so the filter holds wherever its records are handled, e.g. in a
  notebook).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()  # its bars while preparing; `data.base.prepare` logs the step.
  for target in (logging.get_absl_handler(), logging.get_absl_logger()):
    if not any(isinstance(f, _Chatter) for f in target.filters):
      target.addFilter(_Chatter())


class _AboveTheBar:
  """A text stream that writes whole lines with `tqdm.write`: above the bar, never glued to it."""

  def __init__(self, stream):
    self._stream, self._pending = stream, ''

  def write(self, text: str) -> int:
    lines = (self._pending + text).split('\n')
    self._pending = lines.pop()
    for line in lines:
      tqdm.tqdm.write(line, file=self._stream)
    return len(text)

  def flush(self) -> None:
    if self._pending:
      tqdm.tqdm.write(self._pending, file=self._stream)
      self._pending = ''
    self._stream.flush()

  def __getattr__(self, name):  # isatty, encoding, fileno, ...
    return getattr(self._stream, name)


@contextlib.contextmanager
def progress_bar(**kwargs):
  """A tqdm bar on stderr; while it is open, everything else written to stderr goes above it as
  whole lines (tqdm.write): absl's log lines, those of any console logging handler, Python
  warnings. (tqdm's `logging_redirect_tqdm` does this for plain logging handlers only; absl's
  handler is not one.)"""
  real = sys.stderr
  with tqdm.tqdm(file=real, **kwargs) as bar:
    if bar.disable:
      yield bar
      return
    above = _AboveTheBar(real)
    handlers = [logging.get_absl_handler().python_handler] + [
        h for h in logging.logging.root.handlers if isinstance(h, logging.logging.StreamHandler)]
    swapped = [h for h in handlers if h.stream is real]
    sys.stderr = above
    for h in swapped:
      h.stream = above
    try:
      yield bar
    finally:
      above.flush()
      sys.stderr = real
      for h in swapped:
        h.stream = real


def config_lines(config) -> str:
  """The config as sorted `key: value` lines, one per leaf, keys dotted as on the command line
  (`trunk.hidden: (64,)` is `--config.trunk.hidden='(64,)'`)."""
  def leaves(d, prefix=''):
    for k in sorted(d):
      v = d[k]
      if isinstance(v, dict):
        yield from leaves(v, f'{prefix}{k}.')
        if not v:
          yield f'{prefix}{k}', '{}'
      else:
        yield f'{prefix}{k}', repr(v) if isinstance(v, (str, tuple, list)) else str(v)
  return '\n'.join(f'  {k}: {v}' for k, v in leaves(config.to_dict()))


# (row label, metric key, section): a binary output's rows of the end-of-run table. '@own' is
# replaced by the head's own threshold, e.g. '@0.5'.
_BINARY_ROWS = (
    ('mAP (macro AP)', 'average_precision_macro', ''),
    ('ROC AUC macro', 'roc_auc_macro', ''),
    ('F1 micro @own', 'f1_micro', ''),
    ('F1 macro @own', 'f1_macro', ''),
    ('F1 micro @tuned', 'f1_micro', '_tuned'),
    ('F1 macro @tuned', 'f1_macro', '_tuned'),
    ('P@1', 'precision_at_1', ''),  # the @k metrics: outputs with more than one label
    ('P@5', 'precision_at_5', ''),
    ('PSP@5 (propensity-scored)', 'psp_at_5', ''),
)
_REGRESSION_ROWS = (('loss', 'loss', ''), ('MSE', 'mse', ''), ('MAE', 'mae', ''))


def _cell(v) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return 'n/a'
  return f'{v:.4f}'


def summary_table(summary: dict, workdir: str | None = None) -> str:
  """The final evaluation as a short table (outputs x headline metrics x validation / test)
  and, given `workdir`, where it was written.

  `summary` is what train_and_evaluate returns (metrics.json). Thresholds tuned on validation
  are scored on test only: on validation they would be scored on the data they were fitted to.
  """
  rows = []
  for out, val in summary.get('validation', {}).items():
    test = summary.get('test', {}).get(out, {})
    tuned = summary.get('test_tuned', {}).get(out, {})
    own = (summary.get('default_thresholds') or {}).get(out)
    spec = _REGRESSION_ROWS if 'mse' in val else _BINARY_ROWS
    for i, (label, key, section) in enumerate(spec):
      label = label.replace('@own', f'@{own:.3g}' if own is not None else '@own')
      v, t = (None, tuned.get(key)) if section else (val.get(key), test.get(key))
      if key not in val and key not in test and key not in tuned:
        continue
      rows.append((out if i == 0 else '', label, '—' if section else _cell(v), _cell(t)))
  header = ('output', 'metric', 'validation', 'test')
  widths = [max(len(r[c]) for r in rows + [header]) for c in range(4)]
  fmt = lambda r: '  '.join(r[c].ljust(widths[c]) if c < 2 else r[c].rjust(widths[c])
                            for c in range(4))
  lines = [fmt(header)] + [fmt(r) for r in rows]
  step, best = summary.get('evaluated_step'), summary.get('best_metric')
  notes = []
  if step is not None:
    notes.append(f'Checkpoint: step {step} of {summary.get("steps", step)}'
                 + (f', best by validation {best}.' if best else '.'))
  ens = summary.get('ensemble') or {}
  for out, w in (ens.get('weights') or {}).items():
    net = (summary.get('network') or {}).get('test', {}).get(out, {}).get('average_precision_macro')
    notes.append(f'Ensemble, {out}: {w:g} x network + {1 - w:g} x logistic regression (weight '
                 f'chosen on validation); the table is the blend\'s; the network alone: test '
                 f'mAP {_cell(net)}.')
  for out, b in (summary.get('baseline') or {}).items():
    if out == 'c' or b.get('run') is None:
      continue
    gap = '' if b.get('logistic') is None else f' ({b["run"] - b["logistic"]:+.4f})'
    notes.append(f'Baseline, {out}: test mAP {_cell(b["run"])} (this run) vs '
                 f'{_cell(b.get("logistic"))} (TF-IDF + logistic regression, C on validation)'
                 f'{gap}; label prior {_cell(b.get("label_prior"))}.')
  if any(r[1].endswith('@tuned') for r in rows):
    notes.append('@tuned: per-class thresholds tuned on validation for F1, scored on test.')
  if workdir:
    notes.append(f'Wrote {workdir}/metrics.json, {workdir}/report.md (+ plots/); '
                 f'checkpoints in {workdir}/checkpoints.')
    notes.append(f'Predict: ./launch.sh predict --workdir={workdir} --input=NEW.csv '
                 '--output=OUT.csv')
  return '\n'.join(lines + [''] + notes)
