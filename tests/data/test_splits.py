"""Splits: iterative stratification puts rare labels in every split; the log says so."""

import logging

import numpy as np
import pandas as pd
import pytest

from mlheads import errors
from mlheads.data import splits

FRACTIONS = (0.8, 0.1, 0.1)


def _labels(n=400, seed=0):
  """Two common labels and three rare ones (10 positives each)."""
  rng = np.random.default_rng(seed)
  y = np.zeros((n, 5), bool)
  y[:, 0] = rng.random(n) < 0.5
  y[:, 1] = rng.random(n) < 0.3
  for k in (2, 3, 4):
    y[rng.choice(n, 10, replace=False), k] = True
  return y


def test_stratified_is_a_partition_that_spreads_rare_labels():
  y = _labels()
  parts, rule = splits.split(len(y), FRACTIONS, 0, 'stratified', y)
  assert 'iterative stratification' in rule
  assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(y)))
  assert [len(p) for p in parts] == pytest.approx([320, 40, 40], abs=2)
  for k in (2, 3, 4):  # 10 positives: 8 / 1 / 1
    assert [int(y[p, k].sum()) for p in parts] == [8, 1, 1]
  # A random split of the same rows leaves some rare label out of validation or test.
  random, _ = splits.split(len(y), FRACTIONS, 0, 'random')
  absent = [k for k in (2, 3, 4) for p in random[1:] if y[p, k].sum() == 0]
  assert absent


def test_log_names_labels_absent_from_validation_or_test(caplog):
  y = _labels()
  parts = dict(zip(splits.SPLITS, splits.split(len(y), FRACTIONS, 0, 'random')[0]))
  with caplog.at_level(logging.INFO):
    absent = splits.log_label_counts('toy', splits.positives(parts, y),
                                     {k: len(v) for k, v in parts.items()}, list('abcde'))
  text = caplog.text
  assert "toy validation split: " in text and "positives per label: {'a':" in text
  missing = sorted({n for names in absent.values() for n in names})
  assert missing and set(missing) <= {'c', 'd', 'e'}
  assert 'have none in' in text and 'split=stratified' in text


def test_unknown_rule_is_refused():
  with pytest.raises(errors.UsageError, match="split='kfold'"):
    splits.split(10, FRACTIONS, 0, 'kfold')


def test_split_table_cuts_a_table_by_its_labels_and_hands_back_its_rows():
  y = _labels()
  table = pd.DataFrame({'text': [f'row {i}' for i in range(len(y))], 'n': np.arange(len(y)),
                        **{c: y[:, k] for k, c in enumerate('abcde')}})
  rows = splits.split_table(table, 0, ('text', 'n'), 'stratified', names=list('abcde'),
                            labels=lambda d: d[list('abcde')].to_numpy())
  index, rule = splits.split(len(y), FRACTIONS, 0, 'stratified', y)
  assert rows.rule == rule
  for s, idx in zip(splits.SPLITS, index):
    np.testing.assert_array_equal(rows.parts[s], idx)
    assert rows.texts(s) == [f'row {i} {i}' for i in idx]
  cut = splits.split_table(table, 100, ('text',))  # the first 100 rows, split at random
  assert sum(len(p) for p in cut.parts.values()) == 100 and 'permuted' in cut.rule
