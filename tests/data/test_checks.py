"""Bad inputs are rejected with one line naming split, row, key, column, value."""

import numpy as np
import pytest

from mlheads import errors
from mlheads.data import base
from mlheads.data import checks

DS = base.Dataset(
    name='toy', splits={}, meta={},
    inputs={'tokens': base.Field((3,), 'int32', 'tokens', vocab_size=5),
            'x': base.Field((2,), 'float32', 'features', names=('a', 'b'))},
    targets={'y': base.Field((2,), 'float32', 'binary', names=('cat', 'mouse'), has_mask=True)})


def good():
  return {'tokens': np.array([[0, 1, 4], [2, 3, 0]], np.int32),
          'x': np.zeros((2, 2), np.float32),
          'y': np.array([[1, 0], [0, 1]], np.float32),
          'y_mask': np.ones((2, 2), np.float32)}


def test_good_split_passes():
  checks.check_split(DS, 'train', good())


@pytest.mark.parametrize('key,row,col,value,expect', [
    ('y', 1, 0, 2.0, "row 1: label 'y' column cat is 2.0, not 0 or 1"),
    ('y', 0, 1, -1.0, 'column mouse is -1.0'),
    ('y', 0, 1, 0.5, 'is 0.5, not 0 or 1'),
    ('y', 1, 1, np.nan, 'values must be finite'),
    ('x', 1, 1, np.inf, "row 1: key 'x' column b is inf"),
    ('tokens', 0, 2, 5, 'token id 5 outside [0, 5)'),
    ('tokens', 1, 0, -1, 'token id -1 outside'),
])
def test_bad_values_are_named(key, row, col, value, expect):
  """B01, B06, B07, B08: a label outside {0, 1} (2, -1, 0.5), a NaN label, an Inf feature and a
  token id outside [0, vocab) are each rejected in one line naming split, row, key, column and
  value."""
  a = good()
  a[key][row, col] = value
  with pytest.raises(errors.UsageError, match='data set toy, split train') as e:
    checks.check_split(DS, 'train', a)
  assert expect in str(e.value)
  assert '\n' not in str(e.value)


def test_a_masked_label_may_hold_anything():
  a = good()
  a['y'][0, 1], a['y_mask'][0, 1] = 7.0, 0.0
  checks.check_split(DS, 'train', a)


def test_missing_key_wrong_width_and_empty_split():
  """B10, B11: a missing key or a wrong shape is rejected naming the key; an empty split, and a
  split smaller than one batch, are rejected."""
  a = good()
  del a['x']
  with pytest.raises(errors.UsageError, match="missing key 'x'"):
    checks.check_split(DS, 'train', a)
  a = good()
  a['y'] = np.zeros((2, 3), np.float32)
  with pytest.raises(errors.UsageError, match=r"key 'y' has shape \(3,\), expected \(2,\)"):
    checks.check_split(DS, 'train', a)
  with pytest.raises(errors.UsageError, match='split test: the split is empty'):
    checks.check_split(DS, 'test', {k: v[:0] for k, v in good().items()})
  with pytest.raises(errors.UsageError, match='fewer than one batch of 32'):
    checks.check_batch_size(DS, 'train', 2, 32)


def test_label_summary_counts_classes_without_positives():
  """B05: all-negative rows and classes without a positive are allowed, and counted."""
  a = good()
  a['y'][:, 1] = 0
  s = checks.label_summary(DS, a)['y']
  assert s['positives'] == [1, 0]
  assert s['classes_without_positive'] == ['mouse']
  assert s['all_negative_rows'] == 1
