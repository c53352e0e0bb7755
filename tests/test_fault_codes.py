"""Every fault row has a test: each code of docs/faults.md's table (RELIABILITY.md's rows
B01-B30) is named by at least one test function, in its name (`test_b17_...`) or its
docstring. A new row without a test fails here, listing it.

Also here: the few rows whose behaviour had no test of its own (B02, B04, B06).
"""

import ast
import pathlib
import re

import numpy as np
import pytest

from conftest import ROOT
from mlheads import configs
from mlheads import errors
from mlheads.data import base
from mlheads.data import checks
from mlheads.model import model as model_lib

FAULTS = pathlib.Path(ROOT) / 'docs' / 'faults.md'
TESTS = pathlib.Path(ROOT) / 'tests'

# Rows another issue implements, with the issue that owns them. A code leaves this set when its
# test lands (test_pending_codes_are_still_untested says when).
PENDING: dict[str, str] = {}


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


def _headline():
  from experiments import headline  # pylint: disable=g-import-not-at-top
  return headline.get_config()
