import numpy as np

from mlheads.data import base
from mlheads.data import pipeline


def _dataset(n=10, k=3):
  arrays = {'x': np.arange(n * 2, dtype=np.float32).reshape(n, 2),
            'y': (np.arange(n * k).reshape(n, k) % 2).astype(np.float32)}
  ds = base.Dataset(name='toy', splits={}, meta={},
                    inputs={'x': base.Field((2,), 'float32', 'features')},
                    targets={'y': base.Field((k,), 'float32', 'binary')})
  return ds, arrays


def _order(batches, steps):
  return [next(batches)['inputs']['x'][:, 0].tolist() for _ in range(steps)]


def test_order_is_a_pure_function_of_seed_and_step():
  ds, arrays = _dataset()
  full = _order(pipeline.train_batches(ds, arrays, 3, seed=7, num_epochs=3), 9)
  again = _order(pipeline.train_batches(ds, arrays, 3, seed=7, num_epochs=3), 9)
  resumed = _order(pipeline.train_batches(ds, arrays, 3, seed=7, num_epochs=3, start_step=4), 5)
  other = _order(pipeline.train_batches(ds, arrays, 3, seed=8, num_epochs=3), 9)
  assert full == again
  assert full[4:] == resumed
  assert full != other


def test_batches_cut_the_concatenated_epochs_and_drop_only_the_last_remainder():
  ds, arrays = _dataset(n=10)
  data = pipeline.train_dataset(ds, arrays, 3, seed=5, num_epochs=2)
  assert len(data) == 6  # 20 examples: 6 batches of 3, 2 dropped at the very end
  stream = np.concatenate([data[i]['inputs']['x'][:, 0] for i in range(len(data))])
  first, second = stream[:10], stream[10:]  # batch 3 straddles the two epochs
  assert sorted(first) == sorted(arrays['x'][:, 0])
  assert len(set(second)) == 8 and set(second) <= set(arrays['x'][:, 0])
  np.testing.assert_array_equal(data[2]['targets']['y'][0], arrays['y'][int(stream[6]) // 2])


def test_each_epoch_is_a_new_permutation_of_every_example():
  ds, arrays = _dataset(n=6)
  order = np.array(_order(pipeline.train_batches(ds, arrays, 3, seed=0, num_epochs=2), 4))
  first, second = order[:2].ravel(), order[2:].ravel()
  assert sorted(first) == sorted(second) == sorted(arrays['x'][:, 0])
  assert first.tolist() != second.tolist()


def test_eval_covers_every_example_once_and_masks_padding():
  ds, arrays = _dataset(n=10)
  batches = list(pipeline.eval_batches(ds, arrays, 4))
  assert len(batches) == 3
  valid = np.concatenate([b['valid'] for b in batches])
  xs = np.concatenate([b['inputs']['x'][:, 0] for b in batches])[valid > 0]
  np.testing.assert_array_equal(xs, arrays['x'][:, 0])
  assert valid.sum() == 10 and batches[-1]['inputs']['x'].shape == (4, 2)


def test_targets_without_mask_key_get_an_all_ones_mask():
  ds, arrays = _dataset()
  b = next(pipeline.eval_batches(ds, arrays, 4))
  np.testing.assert_array_equal(b['masks']['y'], np.ones((4, 3)))


class _Counting(pipeline.ArraySource):
  """An in-memory source that records which rows were read."""

  def __init__(self, arrays):
    super().__init__(arrays)
    self.seen = []

  def read(self, indices):
    self.seen.extend(int(i) for i in indices)
    return super().read(indices)


def test_each_process_reads_only_its_rows_and_together_they_are_the_batch():
  ds, arrays = _dataset(n=12)
  whole = _order(pipeline.train_batches(ds, arrays, 4, seed=3, num_epochs=2), 6)
  sources = [_Counting(arrays), _Counting(arrays)]
  parts = [_order(pipeline.train_batches(ds, src, 4, seed=3, num_epochs=2, prefetch=1,
                                         rows=slice(2 * p, 2 * p + 2)), 6)
           for p, src in enumerate(sources)]
  assert [a + b for a, b in zip(*parts)] == whole
  for src, part in zip(sources, parts):
    assert sorted(src.seen) == sorted(int(x) // 2 for batch in part for x in batch)


def test_batches_of_a_data_set_with_only_some_fields_carry_only_those():
  ds, arrays = _dataset()
  arrays['z'] = np.zeros((10, 4), np.int32)
  ds = base.Dataset(name='toy', splits={}, meta={},
                    inputs={**ds.inputs, 'z': base.Field((4,), 'int32', 'ngrams', vocab_size=8)},
                    targets={**ds.targets, 'w': base.Field((1,), 'float32', 'binary')})
  arrays['w'] = np.ones((10, 1), np.float32)
  whole = next(pipeline.train_batches(ds, arrays, 4, seed=0, num_epochs=1))
  some = next(pipeline.train_batches(ds.only({'x'}, {'y'}), arrays, 4, seed=0, num_epochs=1))
  assert set(whole['inputs']) == {'x', 'z'} and set(whole['targets']) == {'y', 'w'}
  assert set(some['inputs']) == {'x'} and set(some['targets']) == set(some['masks']) == {'y'}
  np.testing.assert_array_equal(some['inputs']['x'], whole['inputs']['x'])
  np.testing.assert_array_equal(some['targets']['y'], whole['targets']['y'])
