"""Every fault row has a test: each code of docs/faults.md's table (RELIABILITY.md's rows
B01-B30) is named by at least one test function, in its name (`test_b17_...`) or its
docstring. A new row without a test fails here, listing it.

Also here: the few rows whose behaviour had no test of its own (B02, B04, B06, B26, B27).
"""

import ast
import pathlib
import re

import numpy as np
import pytest

from conftest import ROOT
from mlheads import configs
from mlheads import errors
from mlheads import train
from mlheads.data import base
from mlheads.data import checks
from mlheads.model import model as model_lib

FAULTS = pathlib.Path(ROOT) / 'docs' / 'faults.md'
TESTS = pathlib.Path(ROOT) / 'tests'

# Rows another issue implements, with the issue that owns them. A code leaves this set when its
# test lands (test_pending_codes_are_still_untested says when).
PENDING = {
    'B28': 'issue 11: a workdir resumed after the data changed is refused',
}


def _defined() -> set[str]:
  return set(re.findall(r'^\|\s*(B\d\d)\s*\|', FAULTS.read_text(encoding='utf-8'), re.M))


def _tested() -> dict[str, list[str]]:
  """Code -> the tests naming it (test functions' names and docstrings, under tests/)."""
  out = {}
  for path in TESTS.rglob('test_*.py'):
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
      if isinstance(node, ast.FunctionDef) and node.name.startswith('test'):
        text = node.name.upper().replace('_', ' ') + ' ' + (ast.get_docstring(node) or '')
        for code in set(re.findall(r'\bB\d\d\b', text)):
          out.setdefault(code, []).append(f'{path.relative_to(ROOT)}::{node.name}')
  return out


def test_every_fault_code_has_a_test():
  defined = _defined()
  assert {f'B{i:02d}' for i in (1, 11, 17, 29, 30)} <= defined  # the table was read
  missing = sorted(defined - set(_tested()) - set(PENDING))
  assert not missing, f'fault codes no test names: {missing}'


def test_pending_codes_are_still_untested():
  """A PENDING code that a test now names is done: remove it from PENDING."""
  assert not set(PENDING) & set(_tested()), sorted(set(PENDING) & set(_tested()))
  assert set(PENDING) <= _defined()


# ----------------------------------------------------------------------------- rows tested here


def test_b02_a_head_whose_width_differs_from_its_target_is_refused_naming_both():
  spec = model_lib.resolve_head('genres', {**configs.head('sigmoid', target='y'),
                                          'num_classes': 5})
  with pytest.raises(errors.UsageError, match=r"head 'genres': num_classes is 5 but target "
                     r"'y' has 7 columns"):
    spec.build(base.Field((7,), 'float32', 'binary'))


def test_b04_a_class_index_in_a_softmax_heads_labels_is_rejected_at_input():
  """Labels are 0/1 columns for every head, softmax included: a class index written where a
  0/1 column belongs (2 = "class 2") is rejected by the input check, never used as an
  index that would read past the output layer."""
  ds = base.Dataset(name='toy', splits={}, meta={}, inputs={},
                    targets={'y': base.Field((3,), 'float32', 'binary', names=('a', 'b', 'c'))})
  with pytest.raises(errors.UsageError, match=r"row 1: label 'y' column a is 2.0, not 0 or 1"):
    checks.check_split(ds, 'train', {'y': np.array([[0, 1, 0], [2, 0, 0]], np.float32)})
  spec = model_lib.resolve_head('y', configs.head('softmax', target='y'))
  assert spec.build(ds.targets['y']).num_classes == 3


@pytest.mark.parametrize('key,value', [('heads.main.weight', float('nan')),
                                       ('heads.main.weight', -1.0),
                                       ('learning_rate', float('nan')),
                                       ('grad_clip', float('nan'))])
def test_b06_b15_nan_or_negative_weights_and_rates_are_refused(key, value):
  c = _headline()
  node, leaf = c, key.split('.')
  for part in leaf[:-1]:
    node = node[part]
  node[leaf[-1]] = value
  with pytest.raises(errors.UsageError, match=rf'--config.{re.escape(key)} must be'):
    configs.validate(c)


def test_b26_an_unknown_best_metric_output_and_a_loss_unfit_for_its_head_stop_before_data():
  """What exists today (issue 11 widens it to every value): the output of best_metric and a
  loss that does not fit the head are checked with the config alone, before any data."""
  c = _headline()
  c.best_metric = 'nope/roc_auc_macro'
  with pytest.raises(errors.UsageError, match=r"best_metric='nope/roc_auc_macro': no output "
                     r"'nope'; outputs are \['aux', 'main'\]"):
    train.check_config(c)
  c = _headline()
  c.heads.main.loss = 'mse'
  with pytest.raises(errors.UsageError, match=r"head 'main' \(sigmoid\): loss 'mse' does not "
                     'fit binary targets'):
    train.check_config(c)


@pytest.mark.slow
def test_b27_a_misspelt_key_or_unknown_output_is_one_line_naming_it(tmp_path):
  """What exists today (issue 11 puts it in words): one `error:` line naming the key, exit 2,
  no traceback, nothing written."""
  from conftest import run_cli  # pylint: disable=g-import-not-at-top
  for flag, name in (('--config.batch_sise=3', 'batch_sise'),
                     ('--config.heads.genres.weight=1', 'genres')):
    r = run_cli('-m', 'mlheads.main', '--config=experiments/headline.py',
                f'--workdir={tmp_path / "run"}', flag, timeout=120)
    lines = [l for l in r.stderr.splitlines() if l.startswith('error:')]
    assert r.returncode == 2 and len(lines) == 1 and name in lines[0], r.stderr[-2000:]
    assert 'Traceback' not in r.stderr and not (tmp_path / 'run').exists()


def _headline():
  from experiments import headline  # pylint: disable=g-import-not-at-top
  return headline.get_config()
