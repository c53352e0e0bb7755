"""End to end on the SYNTHETIC many-label data: sparse labels in, every @k metric, the
calibration and its report out; and from_csv label lists of many names."""

import json
import os

import numpy as np
import pytest

from experiments import synthetic_xml
from mlheads import train
from mlheads.evaluation import metrics


@pytest.mark.slow
def test_synthetic_run_reports_at_k_propensity_and_calibration(tmp_path):
  c = synthetic_xml.get_config()
  c.data.rows, c.data.classes, c.data.features = 600, 2_000, 16
  c.data.dir = str(tmp_path / 'tfds')
  c.trunk.hidden = (32,)
  c.batch_size, c.eval_batch_size, c.epochs, c.progress = 64, 100, 2, False
  c.heads.labels.negatives = 64  # sampled negatives in training; evaluation scores all K
  summary = train.train_and_evaluate(c, str(tmp_path / 'run'))
  with open(tmp_path / 'run' / 'metrics.json') as f:
    saved = json.load(f)
  for section in ('validation', 'test', 'test_tuned'):
    assert set(metrics.KEYS) <= set(saved[section]['labels'])
  test = summary['test']['labels']
  assert test['psp_at_5'] > 0 and 0 < test['precision_at_1'] <= 1
  assert test['recall_at_5'] >= test['recall_at_1']
  cal = saved['calibration']['labels']
  assert cal['method'] == 'platt' and set(cal['test']) == {'before', 'after'}
  text = (tmp_path / 'run' / 'report.md').read_text()
  assert '### Ranking at k (test)' in text and 'PSnDCG@k' in text
  assert 'class-wise ECE, before' in text and 'reliability_labels.png' in text
  assert '[per_class_labels.csv](per_class_labels.csv)' in text  # 2,000 classes: a file
  rows = (tmp_path / 'run' / 'per_class_labels.csv').read_text().splitlines()
  assert len(rows) == 1 + 2_000
  assert os.path.isfile(tmp_path / 'run' / 'plots' / 'reliability_labels.png')
  # The checkpoint carries the calibration predict applies.
  from mlheads.commands import predict  # pylint: disable=g-import-not-at-top
  ckpt = predict.choose_checkpoint(str(tmp_path / 'run'))
  assert len(ckpt.calibration['labels']['a']) == 2_000
  assert np.all(np.asarray(ckpt.calibration['labels']['a']) > 0)


def test_from_csv_label_lists_of_thousands_of_names_are_stored_sparse(tmp_path):
  from mlheads.data import csv_data  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  names = [f'tag{i}' for i in range(3000)]
  lines = ['text,tags'] + [f'w{i % 7} w{i % 11},' + '|'.join(rng.choice(names, size=3,
                                                                        replace=False))
                           for i in range(4000)]
  path = tmp_path / 'tags.csv'
  path.write_text('\n'.join(lines) + '\n')
  d = ml_collections.ConfigDict(dict(
      path=str(path), text='text', features='', labels='', label_list='tags', separator='|',
      classes='', vocab_size=20, max_len=4, max_rows=0, split_seed=0, split='random',
      dir=str(tmp_path)))
  splits, meta = csv_data.make_arrays(csv_data.settings_from_config(d))
  k = len(meta['classes'])
  train_split = splits['train']
  # The class list: the names seen in train (about 3000 (1 - e^-3.2) of them), sorted.
  assert np.array_equal(np.unique(train_split['labels']), np.arange(k))
  assert meta['classes'] == sorted(meta['classes']) and set(meta['classes']) <= set(names)
  assert 2800 < k <= 3000 and meta['max_labels'] == 3
  assert train_split['labels'].shape == (3200, 3) and train_split['labels'].dtype == np.int32
  assert train_split['labels_mask'].shape == (3200,)  # one known flag a row, not [K]
  assert (train_split['labels_count'] == 3).all()
  assert (train_split['labels'] < k).all() and (train_split['labels'] >= 0).all()
