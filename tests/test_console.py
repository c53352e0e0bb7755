"""What a run prints: chatter filtered, log lines above the progress bar, the config listing and
the end-of-run table."""

import io
import logging as std_logging
import re
import sys

from absl import logging
import ml_collections

from mlheads import console

# An absl log line's prefix: 'I1201 09:10:04.252729 1401... file.py:228] '.
ABSL_PREFIX = re.compile(r'[IWEF]\d{4} \d\d:\d\d:\d\d')


def _record(path, level, msg):
  return std_logging.LogRecord('absl', level, path, 1, msg, (), None)


def test_quiet_drops_library_chatter_and_keeps_the_rest():
  console.quiet()
  console.quiet()  # idempotent: one filter
  handler = logging.get_absl_handler()
  assert sum(isinstance(f, console._Chatter) for f in handler.filters) == 1  # pylint: disable=protected-access
  site = '/venv/lib/python3.11/site-packages'
  dropped = [
      _record(f'{site}/tensorflow_datasets/core/dataset_builder.py', std_logging.WARNING,
              'Using custom data configuration: %s'),
      _record(f'{site}/tensorflow_datasets/core/utils/file_utils.py', std_logging.WARNING,
              'Variant folder %s has no %s'),
      _record(f'{site}/jax/_src/xla_bridge.py', std_logging.INFO,
              "Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so"),
      _record(f'{site}/orbax/checkpoint/checkpoint_manager.py', std_logging.INFO, 'Saving'),
      _record(f'{site}/orbax/checkpoint/_src/serialization/ocdbt_utils.py',
              std_logging.WARNING, '[process=%s][thread=%s] Skipping merge of OCDBT checkpoints: '
              'No per-process OCDBT checkpoint subdirs found in %s, '),
  ]
  kept = [
      _record(f'{site}/jax/_src/xla_bridge.py', std_logging.WARNING, 'a real JAX warning'),
      _record(f'{site}/orbax/checkpoint/x.py', std_logging.ERROR, 'a real orbax error'),
      _record('/work/mlheads/train.py', std_logging.INFO, 'Total parameters: %s'),
  ]
  assert not any(handler.filter(r) for r in dropped)
  assert all(handler.filter(r) for r in kept)
  assert not logging.get_absl_logger().filter(dropped[0])  # outside the CLI's handler too


def test_log_lines_go_above_the_progress_bar_never_onto_it(monkeypatch):
  err = io.StringIO()
  monkeypatch.setattr(sys, 'stderr', err)
  absl_handler = logging.get_absl_handler()
  monkeypatch.setattr(absl_handler.python_handler, 'stream', err)
  plain = std_logging.StreamHandler(err)
  plain.setFormatter(std_logging.Formatter('PLAIN %(message)s'))
  added = [h for h in (absl_handler, plain) if h not in std_logging.root.handlers]
  for h in added:  # both kinds of console handler on the root logger, as in an app
    std_logging.root.addHandler(h)
  try:
    with console.progress_bar(total=4, mininterval=0, ascii=True) as bar:
      for i in range(4):
        bar.update(1)
        logging.warning('step %d done', i)
        std_logging.getLogger('somelib').warning('lib line %d', i)
        print('half a line', end='', file=sys.stderr)
        print(' and its end', file=sys.stderr)
  finally:
    for h in added:
      std_logging.root.removeHandler(h)
  assert sys.stderr is err and absl_handler.python_handler.stream is err  # restored
  text = err.getvalue()
  screen = [line.split('\r')[-1] for line in text.split('\n')]  # what a terminal shows
  assert sum(bool(ABSL_PREFIX.match(l)) for l in screen) == 8, screen  # 4 absl + 4 somelib
  assert sum(l.startswith('PLAIN ') for l in screen) == 8, screen
  assert sum(l == 'half a line and its end' for l in screen) == 4, screen
  # Nothing printed after a bar on the same line: every stretch with a bar is only the bar.
  bars = [seg for line in text.split('\n') for seg in line.split('\r') if '/4 [' in seg]
  assert len(bars) >= 4
  assert not [seg for seg in bars if ABSL_PREFIX.search(seg) or 'PLAIN' in seg or 'half' in seg]


def test_config_lines_are_dotted_keys_without_yaml_tags():
  c = ml_collections.ConfigDict({'epochs': 2, 'data': {'path': 'x.csv', 'text': ''},
                                 'trunk': {'hidden': (64, 32), 'kind': 'text'},
                                 'heads': {'labels': {'loss_options': {}, 'weight': 1.0}}})
  text = console.config_lines(c)
  assert '!!python' not in text
  assert text.splitlines() == [
      "  data.path: 'x.csv'", "  data.text: ''", '  epochs: 2',
      '  heads.labels.loss_options: {}', '  heads.labels.weight: 1.0',
      "  trunk.hidden: (64, 32)", "  trunk.kind: 'text'"]


def _summary():
  binary = lambda v: {'loss': 0.4, 'average_precision_macro': v, 'roc_auc_macro': v + 0.1,
                      'f1_micro': v - 0.1, 'f1_macro': float('nan'), 'precision_at_1': v + 0.2,
                      'psp_at_5': v + 0.5}
  return {
      'evaluated_step': 14, 'steps': 28, 'best_metric': 'genres/average_precision_macro',
      'validation': {'genres': binary(0.6), 'counts': {'loss': 1.5, 'mse': 1.5, 'mae': 0.9}},
      'test': {'genres': binary(0.55), 'counts': {'loss': 1.6, 'mse': 1.6, 'mae': 1.0}},
      'test_tuned': {'genres': {**binary(0.55), 'f1_micro': 0.7}},
      'default_thresholds': {'genres': 1 / 7},
  }


def test_summary_table_names_thresholds_and_where_results_went():
  text = console.summary_table(_summary(), 'runs/x')
  lines = text.splitlines()
  assert lines[0].split() == ['output', 'metric', 'validation', 'test']
  row = lambda label: next(l for l in lines if label in l).split()
  assert row('mAP (macro AP)') == ['genres', 'mAP', '(macro', 'AP)', '0.6000', '0.5500']
  assert row('F1 micro @0.143')[-2:] == ['0.5000', '0.4500']  # a softmax head's own 1/C
  assert row('F1 micro @tuned')[-2:] == ['—', '0.7000']  # tuned on validation: test only
  assert row('F1 macro @0.143')[-2:] == ['n/a', 'n/a']
  assert row('MSE') == ['MSE', '1.5000', '1.6000']
  assert row('P@1')[-2:] == ['0.8000', '0.7500'] and row('PSP@5')[-2:] == ['1.1000', '1.0500']
  # Not in the summary (e.g. a one-label output): no row.
  assert 'P@5' not in [l.split()[0] for l in lines if l.split()]
  assert row('loss')[0] == 'counts'
  assert 'step 14 of 28, best by validation genres/average_precision_macro' in text
  assert 'runs/x/metrics.json' in text and 'runs/x/report.md' in text
  assert 'predict --workdir=runs/x' in text


def test_summary_table_without_a_workdir_says_nothing_of_files():
  assert 'Wrote' not in console.summary_table(_summary())
