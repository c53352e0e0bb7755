"""from_csv's streamed preparation: a file read a few rows at a time gives the records and the
metadata of the file read whole, for every column layout and split; each chunk is bounded; a
bad cell in the last chunk is refused before anything is written."""

import os

import numpy as np
import pytest

from experiments import from_csv as from_csv_exp
from mlheads import errors
from mlheads.data import base
from mlheads.data import csv_columns
from mlheads.data import csv_data
from mlheads.data import csv_prepare
from mlheads.data import splits as splits_lib
import mlheads.data as data_lib


def _write(path, header, rows):
  path.write_text('\n'.join([header] + [','.join(map(str, r)) for r in rows]) + '\n',
                  encoding='utf-8')
  return str(path)


def _table(tmp_path, n=53, name='t.csv', bad_line=None):
  """Two text columns, 2 numbers, a colour, a split column, two 0/1 label columns (some
  unknown) and a label list; the numbers are on very different scales."""
  rows = []
  for i in range(n):
    split = ('train', 'train', 'train', 'val', 'test')[i % 5]
    names = '|'.join(g for g, on in (('x', i % 2), ('y', i % 3 == 0), ('z', i % 7 == 1)) if on)
    rows.append((f'word{i % 11} common w{i}', f'other{i % 3}',
                 'oops' if i + 2 == bad_line else 1e6 + i * 0.37, (i * 7) % 5,
                 ('red', 'green', 'blue', '')[i % 4], split, i % 2, '' if i % 9 == 0 else
                 (i // 2) % 2, names or '|'))
  return _write(tmp_path / name, 'title,blurb,big,small,colour,split,a,b,genres', rows)


def _settings(tmp_path, path, **kw):
  c = from_csv_exp.get_config().data
  c.dir, c.max_len, c.vocab_size, c.path = str(tmp_path / 'tfds'), 2, 30, path
  c.text, c.features, c.labels = 'title,blurb', 'big,small', 'a,b'
  for k, v in kw.items():
    c[k] = v
  return csv_data.settings_from_config(c)


LAYOUTS = {
    'random split, one-hot colour': dict(categorical='colour'),
    'split column, embedded colour': dict(categorical='colour', categorical_encoding='embed',
                                         split_column='split'),
    'label list (sparse), folds': dict(labels='', label_list='genres', folds=4, fold=1),
    'label list (sparse), stratified': dict(labels='', label_list='genres', split='stratified'),
    'stratified labels': dict(split='stratified'),
    'numbers only, max_rows': dict(text='', max_rows=41),
}


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_a_file_read_in_chunks_gives_the_records_and_metadata_of_the_file_read_whole(
    tmp_path, layout):
  s = _settings(tmp_path, _table(tmp_path), **LAYOUTS[layout])
  whole, meta = csv_data.make_arrays(s, chunk=10_000)
  chunked, meta_chunked = csv_data.make_arrays(s, chunk=7)
  scaling = meta.pop('scaling')['features']
  chunked_scaling = meta_chunked.pop('scaling')['features']
  assert meta == meta_chunked
  for k in ('mean', 'std'):  # Chan's update sums in another order (std 5 around 1e6: 1e-12)
    np.testing.assert_allclose(chunked_scaling[k], scaling[k], rtol=1e-9)
  for split in base.SPLITS:
    assert whole[split].keys() == chunked[split].keys()
    for key, a in whole[split].items():
      if key == 'features':
        np.testing.assert_allclose(chunked[split][key], a, rtol=1e-6, atol=1e-6)
      else:
        np.testing.assert_array_equal(chunked[split][key], a, err_msg=f'{split} {key}')
  # Records are the split's rows in the order `rows` gives them (the baseline reads those).
  table = csv_data.parse(s)
  parts, _ = csv_data.split_parts(s, table)
  for split, idx in parts.items():
    assert len(whole[split]['labels']) == len(idx)
    if 'tokens' in whole[split]:
      ids, _ = csv_columns.encode(table.rows.iloc[idx], meta | {'scaling': {'features': scaling}},
                                  s.path)
      np.testing.assert_array_equal(whole[split]['tokens'], ids['tokens'])


def test_the_scaling_of_chunks_is_numpys_mean_and_std():
  x = np.random.default_rng(0).normal(1e4, 3.0, size=(1_000, 3))
  m = csv_columns.Moments(3)
  m.add(x)
  assert m.scaling() == base.fit_scaling(x)  # one chunk: bit for bit
  m = csv_columns.Moments(3)
  for part in np.array_split(x, 13):
    m.add(part)
  for k in ('mean', 'std'):
    np.testing.assert_allclose(m.scaling()[k], base.fit_scaling(x)[k], rtol=1e-12)


def test_each_chunk_holds_at_most_chunk_rows_and_every_row_once(tmp_path):
  s = _settings(tmp_path, _table(tmp_path, n=100), split_column='split')
  plan = csv_prepare.scan(s, csv_data._layout(s), size=9)
  sizes = {}
  for split in base.SPLITS:
    parts = list(csv_prepare.generate(plan, split, size=9))
    assert max(len(p['labels']) for p in parts) <= 9
    sizes[split] = sum(len(p['labels']) for p in parts)
  assert sizes == plan.sizes() == {'train': 60, 'validation': 20, 'test': 20}


def test_a_bad_cell_in_the_last_chunk_is_refused_before_anything_is_written(tmp_path,
                                                                          monkeypatch):
  monkeypatch.setattr(csv_prepare, 'CHUNK', 5)
  path = _table(tmp_path, n=53, bad_line=54)  # the file's last row
  c = from_csv_exp.get_config()
  c.data.dir, c.data.max_len, c.data.vocab_size, c.data.path = str(tmp_path / 'tfds'), 2, 30, path
  c.data.text, c.data.features, c.data.labels = 'title', 'big', 'a,b'
  with pytest.raises(errors.UsageError, match=r"t.csv, line 54, column 'big' is 'oops', not a "
                     'number'):
    csv_data.builder(c.data)
  assert not os.path.exists(tmp_path / 'tfds')
  # Fixed, it prepares in chunks of 5 and loads.
  path = _table(tmp_path, n=53)
  ds = data_lib.load(c.data, batch_size=4)
  want = dict(zip(base.SPLITS, map(len, splits_lib.split_indices(53, csv_prepare.FRACTIONS, 0))))
  assert {k: len(v) for k, v in ds.splits.items()} == want
