"""The SYNTHETIC extreme multi-label data: power-law classes, a learnable signal, sparse."""

import numpy as np
import pytest

from mlheads.data import base
from mlheads.data import checks
from mlheads.data import pipeline
from mlheads.data import synthetic
from mlheads import errors
from mlheads.evaluation import metrics

CONFIG = synthetic.SyntheticConfig(name='t', rows=3000, classes=500, features=32, max_labels=6)


def test_power_law_frequencies_and_bounded_label_counts():
  _, idx, count = synthetic.generate(CONFIG)
  assert idx.shape == (3000, 6) and count.min() >= 1 and count.max() <= 6
  assert abs(count.mean() - 3.0) < 0.2
  freq = np.bincount(idx[idx >= 0], minlength=500)
  # Zipf with alpha 1: class c about (c + 1)^-1 of class 0's frequency.
  assert freq[0] > 5 * freq[9] > 0 and freq[:10].sum() > freq[250:].sum()
  for r, c in zip(idx, count):  # c distinct classes, ascending, then -1 padding
    assert (r[c:] == -1).all() and (np.diff(r[:c]) > 0).all()


def test_the_signal_is_learnable_by_a_linear_model():
  x, idx, _ = synthetic.generate(CONFIG, rows=600, seed=7)
  field = base.Field((500,), 'float32', 'binary', sparse=6)
  y, _ = field.densify({'labels': idx}, 'labels')
  oracle = metrics.compute(y, synthetic.oracle_scores(CONFIG, x))
  noise = metrics.compute(y, np.random.default_rng(0).random(y.shape).astype(np.float32))
  assert oracle['precision_at_1'] > 0.8 > 0.05 > noise['precision_at_1']
  assert oracle['psp_at_5'] > 5 * noise['psp_at_5']


def test_a_prepared_slice_is_sparse_checked_and_densified(tmp_path):
  import mlheads.data as data_lib  # pylint: disable=g-import-not-at-top
  from experiments import synthetic_xml  # pylint: disable=g-import-not-at-top
  c = synthetic_xml.get_config()
  c.data.rows, c.data.classes, c.data.features, c.data.dir = 200, 50, 4, str(tmp_path)
  c.batch_size = 8
  ds = data_lib.load_checked(c)
  arrays = {s: pipeline.read_split(ds.split(s)) for s in ('train', 'test')}
  f = ds.targets['labels']
  assert f.sparse == 8 and arrays['train']['labels'].shape == (160, 8)
  assert arrays['train']['labels'].dtype == np.int32
  batch = next(pipeline.eval_batches(ds, arrays['test'], 16))
  assert batch['targets']['labels'].shape == (16, 50)
  np.testing.assert_array_equal(batch['targets']['labels'].sum(1),
                                arrays['test']['labels_count'][:16])
  positives, rows = checks.positives(ds, arrays['train'], 'labels')
  assert rows == 160 and positives.sum() == arrays['train']['labels_count'].sum()
  # A corrupted index or count is named (B04, B12).
  bad = dict(arrays['train'], labels=arrays['train']['labels'].copy())
  bad['labels'][3, 0] = 50
  with pytest.raises(errors.UsageError, match=r'row 3: key .labels. slot 0: class index 50'):
    checks.check_split(ds, 'train', bad)
  bad = dict(arrays['train'], labels_count=arrays['train']['labels_count'] + 1)
  with pytest.raises(errors.UsageError, match='labels_count says'):
    checks.check_split(ds, 'train', bad)
