"""from_csv: both label layouts, unknown cells, the cache key, and every bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import from_csv as from_csv_exp
from mlheads import errors
from mlheads.data import base
from mlheads.data import pipeline
from mlheads.data import csv_data
from mlheads.data import splits as splits_lib
import mlheads.data as data_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GENRES = ('Comedy', 'Drama', 'Short')


def write(path, text):
  path.write_text(text, encoding='utf-8')
  return str(path)


def film_rows(n, seed=0):
  """n rows of (title, year, rating, genres as a '|' list, one 0/1 column per genre)."""
  rng = np.random.default_rng(seed)
  words = ['night', 'day', 'love', 'war', 'the', 'man', 'city', 'blue', 'last', 'king']
  rows = []
  for i in range(n):
    title = ' '.join(rng.choice(words, size=rng.integers(1, 4))) + f' {i}'
    hot = rng.integers(0, 2, size=len(GENRES))
    rows.append((title, 1950 + i % 50, round(3 + (i % 60) / 10, 1),
                 '|'.join(g for g, h in zip(GENRES, hot) if h) or '|', hot))
  return rows


def films_csv(path, n=60, seed=0):
  lines = ['title,year,rating,genres,' + ','.join(GENRES)]
  for title, year, rating, genres, hot in film_rows(n, seed):
    lines.append(f'"{title}",{year},{rating},{genres},' + ','.join(map(str, hot)))
  return write(path, '\n'.join(lines) + '\n')


def data_config(tmp_path, **kw):
  c = from_csv_exp.get_config().data
  c.dir = str(tmp_path / 'tfds')
  c.max_len = 4
  c.vocab_size = 50
  for k, v in kw.items():
    c[k] = v
  return c


def files_under(path):
  return [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]


def test_label_list_layout_loads_and_matches_the_file(tmp_path):
  path = films_csv(tmp_path / 'films.csv')
  ds = data_lib.load(data_config(tmp_path, path=path, text='title', features='year,rating',
                                 label_list='genres'), batch_size=8)
  assert ds.meta['classes'] == sorted(GENRES)  # learned on train, sorted
  rows = film_rows(60)
  parts = splits_lib.split_indices(60, csv_data.FRACTIONS, 0)
  order = [GENRES.index(g) for g in sorted(GENRES)]
  field = ds.targets['labels']
  assert field.sparse == 3  # a label list is stored sparse: at most 3 names a row here
  for split, idx in zip(base.SPLITS, parts):
    source = ds.split(split)
    assert len(source) == len(idx)
    records = pipeline.read_split(source)
    got, mask = field.densify(records, 'labels')
    want = np.stack([rows[i][4] for i in idx])[:, order]
    # tfds shuffles records within a split: compare as multisets of rows.
    assert sorted(map(tuple, got)) == sorted(map(tuple, want))
    np.testing.assert_array_equal(mask, 1.0)  # no empty cell in this file
    np.testing.assert_array_equal(records['labels_count'], got.sum(1))
    assert ((records['tokens'] >= 0) & (records['tokens'] < 50)).all()


def test_binary_columns_with_unknown_cells_are_masked(tmp_path):
  text = ('t,x,a,b\n'
          'one,1.5,1,0\n'
          'two,2.5,,1\n'     # a unknown
          'three,3.5,0,\n'   # b unknown
          'four,4.5,1,1\n') * 10
  text = 't,x,a,b\n' + ''.join(l + '\n' for l in text.splitlines() if l != 't,x,a,b')
  path = write(tmp_path / 'd.csv', text)
  s = csv_data.settings_from_config(data_config(tmp_path, path=path, text='t', features='x',
                                                labels='a,b'))
  splits, meta = csv_data.make_arrays(s)
  assert meta['classes'] == ['a', 'b']
  y = np.concatenate([splits[k]['labels'] for k in base.SPLITS])
  m = np.concatenate([splits[k]['labels_mask'] for k in base.SPLITS])
  idx = np.concatenate(splits_lib.split_indices(40, csv_data.FRACTIONS, 0))
  kind = idx % 4  # row i of the file is pattern i % 4
  np.testing.assert_array_equal(m[kind == 1], [[0, 1]] * (kind == 1).sum())
  np.testing.assert_array_equal(m[kind == 2], [[1, 0]] * (kind == 2).sum())
  np.testing.assert_array_equal(m[(kind == 0) | (kind == 3)], 1.0)
  np.testing.assert_array_equal(y[kind == 0], [[1, 0]] * (kind == 0).sum())
  np.testing.assert_array_equal(y[kind == 3], [[1, 1]] * (kind == 3).sum())
  # features standardized on train
  train_x = splits['train']['features'][:, 0]
  assert abs(train_x.mean()) < 1e-5 and abs(train_x.std() - 1) < 1e-4


def test_label_list_unknown_none_given_classes_and_jsonl(tmp_path):
  rows = []
  for i in range(40):
    label = [['x'], ['x', 'y'], None, []][i % 4]  # None: unknown; []: known, no class
    rows.append(json.dumps({'text': f'w{i} common', 'tags': label}))
  path = write(tmp_path / 'd.jsonl', '\n'.join(rows) + '\n')
  s = csv_data.settings_from_config(data_config(tmp_path, path=path, text='text',
                                                label_list='tags', classes='x,y,z'))
  splits, meta = csv_data.make_arrays(s)
  assert meta['classes'] == ['x', 'y', 'z']  # given, in the given order
  field = base.Field((3,), 'float32', 'binary', has_mask=True, sparse=meta['max_labels'])
  y, m = field.densify({k: np.concatenate([splits[s][k] for s in base.SPLITS])
                        for k in ('labels', 'labels_mask')}, 'labels')
  kind = np.concatenate(splits_lib.split_indices(40, csv_data.FRACTIONS, 0)) % 4
  np.testing.assert_array_equal(y[kind == 0], [[1, 0, 0]] * (kind == 0).sum())
  np.testing.assert_array_equal(y[kind == 1], [[1, 1, 0]] * (kind == 1).sum())
  np.testing.assert_array_equal(m[kind == 2], 0.0)
  np.testing.assert_array_equal(m[kind == 3], 1.0)
  np.testing.assert_array_equal(y[kind == 3], 0.0)
  # no numeric column: no features input at all; words unseen in train -> the OOV id.
  assert 'features' not in splits['train']
  test_tokens = splits['test']['tokens']
  assert (test_tokens == 1).any() and (test_tokens < 50).all() and (test_tokens >= 0).all()


def test_names_outside_a_learned_list_are_dropped_and_counted(tmp_path):
  lines = ['t,tags'] + [f'w{i},a' for i in range(40)]
  test_rows = splits_lib.split_indices(40, csv_data.FRACTIONS, 0)[2]
  for i in test_rows[:2]:
    lines[i + 1] = f'w{i},a|rare'
  path = write(tmp_path / 'd.csv', '\n'.join(lines))
  s = csv_data.settings_from_config(data_config(tmp_path, path=path, text='t', label_list='tags'))
  _, meta = csv_data.make_arrays(s)
  assert meta['classes'] == ['a']
  assert meta['dropped_label_names'] == {'train': 0, 'validation': 0, 'test': 2}


def test_truncation_is_counted(tmp_path):
  lines = ['t,a'] + [f'{"w " * (i % 7)}x{i},{i % 2}' for i in range(50)]
  path = write(tmp_path / 'd.csv', '\n'.join(lines))
  s = csv_data.settings_from_config(data_config(tmp_path, path=path, text='t', labels='a',
                                                max_len=4))
  _, meta = csv_data.make_arrays(s)
  # row i has (i % 7) + 1 words; more than 4 when i % 7 >= 4.
  assert sum(meta['truncated'].values()) == sum(1 for i in range(50) if i % 7 >= 4)


def test_changed_file_is_prepared_again_and_unchanged_file_reused(tmp_path):
  path = films_csv(tmp_path / 'films.csv', n=40)
  cfg = data_config(tmp_path, path=path, text='title', label_list='genres')
  b1 = data_lib.get(cfg.name).build(cfg)
  data_lib.load(cfg, batch_size=4)
  again = data_lib.get(cfg.name).build(cfg)
  assert again.builder_config.name == b1.builder_config.name and again.is_prepared()
  assert again.planned_sizes() is None  # reused, not parsed again
  films_csv(tmp_path / 'films.csv', n=40, seed=1)  # same name, new content
  b2 = data_lib.get(cfg.name).build(cfg)
  assert b2.builder_config.name != b1.builder_config.name and not b2.is_prepared()
  data_lib.load(cfg, batch_size=4)
  assert b2.is_prepared()
  cfg.split_seed = 1  # a changed setting is a new data set too
  assert data_lib.get(cfg.name).build(cfg).builder_config.name not in (b1.builder_config.name,
                                                               b2.builder_config.name)


GOOD = 't,x,a\n' + ''.join(f'w{i},{i},{i % 2}\n' for i in range(40))


def _with_line(k, row):
  """GOOD with data row k (file line k + 2) replaced."""
  lines = GOOD.splitlines()
  lines[k + 1] = row
  return '\n'.join(lines) + '\n'


@pytest.mark.parametrize('text,kw,pattern', [
    (None, dict(text='t', labels='a'), r'nope\.csv: no such file'),
    ('', dict(text='t', labels='a'), r'bad\.csv: the file is empty'),
    ('t,x,a\n', dict(text='t', labels='a'), r'bad\.csv: the file is empty \(no data rows\)'),
    (GOOD, dict(text='t', labels='b'), r"bad\.csv, line 1: no column 'b'"),
    (GOOD, dict(text='title', labels='a'), r"bad\.csv, line 1: no column 'title'"),
    (_with_line(5, 'w5,abc,1'), dict(text='t', features='x', labels='a'),
     r"bad\.csv, line 7, column 'x' is 'abc', not a number"),
    (_with_line(3, 'w3,,1'), dict(text='t', features='x', labels='a'),
     r"bad\.csv, line 5, column 'x' is empty"),
    (_with_line(8, 'w8,nan,1'), dict(text='t', features='x', labels='a'),
     r"bad\.csv, line 10, column 'x' is 'nan'; features must be finite"),
    (_with_line(9, 'w9,-inf,1'), dict(text='t', features='x', labels='a'),
     r"bad\.csv, line 11, column 'x' is '-inf'; features must be finite"),
    (_with_line(2, 'w2,2,2'), dict(text='t', labels='a'),
     r"bad\.csv, line 4, column 'a' is '2'; a label cell must be 0, 1 or empty"),
    (_with_line(4, 'w4,4,-1'), dict(text='t', labels='a'),
     r"bad\.csv, line 6, column 'a' is '-1'"),
    (_with_line(4, 'w4,4,yes'), dict(text='t', labels='a'),
     r"bad\.csv, line 6, column 'a' is 'yes'"),
    ('t,x,a\n' + ''.join(f'w{i},{i},\n' for i in range(40)), dict(text='t', labels='a'),
     r"bad\.csv, column 'a': empty on every row"),
    ('t,tags\n' + ''.join(f'w{i},\n' for i in range(40)), dict(text='t', label_list='tags'),
     r"bad\.csv, column 'tags': empty on every row"),
    ('t,tags\n' + ''.join(f'w{i},a|b\n' for i in range(30)) + 'w30,a|c\n',
     dict(text='t', label_list='tags', classes='a,b'),
     r"bad\.csv, line 32, column 'tags': label 'c' is not one of the given classes"),
    (_with_line(6, 'w6,6'), dict(text='t', labels='a'),
     r'bad\.csv, line 8: 2 cells, but the header has 3 columns'),
    ('t,x,a\n' + ''.join(f'w{i},{i},1\n' for i in range(5)), dict(text='t', labels='a'),
     r'bad\.csv: 5 data rows leave the validation split empty'),
    (GOOD, dict(labels='a'), r'from_csv needs an input'),
    (GOOD, dict(text='t', labels='a', label_list='a'), r'exactly one of'),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, text, kw, pattern):
  """B01, B07, B10, B11: a bad label cell, a non-finite or missing number, a missing column, an
  empty file or split: one line naming file, line and column, and nothing written."""
  path = str(tmp_path / 'nope.csv') if text is None else write(tmp_path / 'bad.csv', text)
  cfg = data_config(tmp_path, path=path, **kw)
  with pytest.raises(errors.UsageError, match=pattern) as e:
    data_lib.load(cfg, batch_size=4)
  assert '\n' not in str(e.value)
  assert not (tmp_path / 'tfds').exists()  # not even an empty folder


def test_train_split_smaller_than_a_batch_is_rejected_before_writing(tmp_path):
  """B11: a train split smaller than one batch is refused before anything is prepared."""
  path = write(tmp_path / 'd.csv', GOOD)  # 40 rows -> 32 train
  cfg = data_config(tmp_path, path=path, text='t', labels='a')
  with pytest.raises(errors.UsageError, match=r'train split would hold 32 examples, fewer '
                     r'than one batch of 33'):
    data_lib.load(cfg, batch_size=33)
  assert not (tmp_path / 'tfds').exists()  # not even an empty folder
  data_lib.load(cfg, batch_size=32)  # exactly one batch is enough
  assert files_under(tmp_path / 'tfds')


def _launch(tmp_path, *flags):
  env = dict(os.environ, MLHEADS_VENV=os.path.dirname(os.path.dirname(sys.executable)))
  return subprocess.run(
      ['./launch.sh', 'from_csv', f'--config.data.dir={tmp_path / "tfds"}',
       f'--workdir={tmp_path / "run"}', *flags],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('content,flags,pattern', [
    (_with_line(5, 'w5,abc,1'), ['--config.data.features=x', '--config.data.labels=a'],
     "line 7, column 'x' is 'abc', not a number"),
    (GOOD, ['--config.data.labels=a,zz'], "line 1: no column 'zz'"),
])
@pytest.mark.slow
def test_launch_exits_2_with_one_line(tmp_path, content, flags, pattern):
  path = write(tmp_path / 'bad.csv', content)
  r = _launch(tmp_path, f'--config.data.path={path}', '--config.data.text=t', *flags)
  assert r.returncode == 2, r.stderr[-2000:]
  assert 'Traceback' not in r.stderr
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and path in last and pattern in last, last
  assert not (tmp_path / 'tfds').exists()  # not even an empty folder
  assert not (tmp_path / 'run').exists()


@pytest.mark.slow
def test_trains_on_a_title_table_with_unknown_labels(tmp_path):
  from mlheads import train  # pylint: disable=g-import-not-at-top
  lines = ['title,year,genres'] + [
      f'"{t}",{y},{"" if i % 5 == 0 else g}'
      for i, (t, y, _, g, _) in enumerate(film_rows(80))]
  path = write(tmp_path / 'films.csv', '\n'.join(lines))
  c = from_csv_exp.get_config()
  c.data.path, c.data.text, c.data.features, c.data.label_list = path, 'title', 'year', 'genres'
  c.data.dir, c.data.max_len, c.data.vocab_size = str(tmp_path / 'tfds'), 4, 50
  c.data.hash_buckets = 64
  c.trunk.embed_dim, c.trunk.hidden = 4, (4,)
  c.epochs, c.batch_size, c.eval_batch_size, c.progress = 1, 8, 16, False
  summary = train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert summary['evaluated_step'] == 64 // 8
  with open(tmp_path / 'run' / 'metrics.json', encoding='utf-8') as f:
    m = json.load(f)
  assert np.isfinite(m['test']['labels']['loss'])


@pytest.mark.slow
def test_a_failure_inside_tfds_prepare_leaves_no_files(tmp_path):
  """The fallback when a builder was made without the up-front check: tfds deletes its
  incomplete folder, so no file of a half-written data set remains."""
  path = write(tmp_path / 'bad.csv', _with_line(3, 'w3,3,7'))
  s = csv_data.settings_from_config(data_config(tmp_path, path=path, text='t', labels='a'))
  b = csv_data.FromCsv(config=csv_data.CsvConfig(name=csv_data.cache_key(s), settings=s,
                                                 classes=('a',)),
                       data_dir=str(tmp_path / 'tfds'), file_format='array_record')
  with pytest.raises(errors.UsageError, match="line 5, column 'a' is '7'"):
    b.download_and_prepare()
  assert files_under(tmp_path / 'tfds') == [] and not b.is_prepared()


def test_line_numbers_count_quoted_multiline_cells_and_blank_lines(tmp_path):
  text = 't,x,a\n"two\nlines",1,0\n\nw,2,1\n' + ''.join(f'w{i},{i},0\n' for i in range(30))
  text += 'bad,3,5\n'  # file line 4 + 1 + 30 + 1 = 36
  path = write(tmp_path / 'bad.csv', text)
  with pytest.raises(errors.UsageError, match=r"bad\.csv, line 36, column 'a' is '5'"):
    csv_data.parse(csv_data.settings_from_config(data_config(tmp_path, path=path, text='t',
                                                             labels='a')))
