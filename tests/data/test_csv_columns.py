"""from_csv's columns and splits: globs and '*', categorical columns (one-hot and embedded),
several text columns, the file's own split, separate split files, k folds; the schema known
before any row is read; a numbers-only table gets an MLP; any trunk on any table."""

import numpy as np
import pytest

from experiments import from_csv as from_csv_exp
from mlheads import errors
from mlheads import train
from mlheads.data import base
from mlheads.data import csv_data
from mlheads.data import pipeline
from mlheads.model import model as model_lib
import mlheads.data as data_lib

from conftest import compiled


def _write(path, header, rows):
  path.write_text('\n'.join([header] + [','.join(map(str, r)) for r in rows]) + '\n',
                  encoding='utf-8')
  return str(path)


def _table(tmp_path, n=60, name='t.csv'):
  """id, two text columns, 3 pixel columns, a colour, a split column, two label columns."""
  rows = []
  for i in range(n):
    split = ('train', 'train', 'train', 'val', 'test')[i % 5]
    rows.append((i, f'word{i % 7} common', f'other{i % 3}', i % 4, (i * 7) % 5, i % 2,
                 ('red', 'green', 'blue', '')[i % 4], split, i % 2, (i // 2) % 2))
  return _write(tmp_path / name, 'id,title,blurb,px1,px2,px3,colour,split,a,b', rows)


def _cfg(tmp_path, **kw):
  c = from_csv_exp.get_config()
  c.data.dir, c.data.max_len, c.data.vocab_size = str(tmp_path / 'tfds'), 3, 40
  c.data.labels = 'a,b'
  c.batch_size, c.eval_batch_size = 4, 8
  for k, v in kw.items():
    c.data[k] = v
  return c


def test_globs_and_star_pick_the_columns_no_other_setting_uses(tmp_path):
  path = _table(tmp_path)
  s = csv_data.settings_from_config(_cfg(tmp_path, path=path, features='px*').data)
  assert csv_data.parse(s).columns['features'] == ['px1', 'px2', 'px3']
  s = csv_data.settings_from_config(_cfg(tmp_path, path=path, text='title,blurb',
                                         categorical='colour', split_column='split',
                                         features='*').data)
  # '*': every column but text, labels, categorical and the split column.
  assert csv_data.parse(s).columns['features'] == ['id', 'px1', 'px2', 'px3']
  with pytest.raises(errors.UsageError, match=r"features='q\*' matches no column"):
    data_lib.schema(_cfg(tmp_path, path=path, features='q*').data)
  with pytest.raises(errors.UsageError, match=r"line 1: no column 'px9' \(--config.data."
                     r"features\)"):
    data_lib.schema(_cfg(tmp_path, path=path, features='px9').data)
  # A text column caught by '*' is not a number: the message says where names go.
  with pytest.raises(errors.UsageError, match=r"column 'title' is 'word0 common', not a "
                     r"number \(a column of names goes in --config.data.categorical\)"):
    csv_data.make_arrays(csv_data.settings_from_config(
        _cfg(tmp_path, path=path, features='*').data))


def test_categorical_columns_one_hot_and_embedded(tmp_path):
  path = _table(tmp_path)
  splits, meta = csv_data.make_arrays(csv_data.settings_from_config(
      _cfg(tmp_path, path=path, features='px1', categorical='colour').data))
  assert sorted(meta['categories']['colour']) == ['blue', 'green', 'red']
  x = splits['train']['features']
  assert x.shape[1] == 1 + 3
  hot = x[:, 1:]
  assert set(hot.sum(1)) <= {0.0, 1.0} and (hot.sum(1) == 0).any()  # '' -> unknown: zeros
  splits, meta = csv_data.make_arrays(csv_data.settings_from_config(
      _cfg(tmp_path, path=path, categorical='colour', categorical_encoding='embed',
           max_categories=2).data))
  kept = meta['categories']['colour']
  assert len(kept) == 2  # the 2 most frequent in train
  ids = np.concatenate([splits[k]['categories'] for k in base.SPLITS])[:, 0]
  assert set(ids) == {0, 1, 2}  # 0: unknown (the third colour, and the empty cells)
  assert 'features' not in splits['train'] and 'tokens' not in splits['train']


def test_several_text_columns_are_segments_of_one_sequence(tmp_path):
  path = _table(tmp_path)
  splits, meta = csv_data.make_arrays(csv_data.settings_from_config(
      _cfg(tmp_path, path=path, text='title,blurb').data))
  tokens = splits['train']['tokens']
  assert tokens.shape[1] == 2 * 3
  words = meta['tokenizer']['words']
  assert 'common' in words and 'other0' in words  # one vocabulary over both columns
  first = [words[i] for i in tokens[0, :3] if i > 1]
  second = [words[i] for i in tokens[0, 3:] if i > 1]
  assert any(w.startswith('word') for w in first) and all(w.startswith('other') for w in second)


def test_the_files_own_split_column_and_separate_split_files(tmp_path):
  path = _table(tmp_path)
  splits, meta = csv_data.make_arrays(csv_data.settings_from_config(
      _cfg(tmp_path, path=path, features='px1', split_column='split').data))
  assert {k: len(v['labels']) for k, v in splits.items()} == {'train': 36, 'validation': 12,
                                                                'test': 12}
  assert meta['split_rule'] == "the column 'split'"
  bad = _write(tmp_path / 'bad.csv', 'px1,split,a,b', [(1, 'train', 0, 1)] * 5 + [(2, 'eval',
                                                                                     1, 0)])
  with pytest.raises(errors.UsageError, match=r"bad.csv, line 7, column 'split' is 'eval'; "
                     'expected train, validation'):
    csv_data.make_arrays(csv_data.settings_from_config(
        _cfg(tmp_path, path=bad, features='px1', split_column='split').data))
  tr, va, te = (_table(tmp_path, n, f'{k}.csv') for n, k in ((40, 'tr'), (10, 'va'),
                                                             (12, 'te')))
  splits, _ = csv_data.make_arrays(csv_data.settings_from_config(
      _cfg(tmp_path, path=tr, validation_path=va, test_path=te, features='px1').data))
  assert {k: len(v['labels']) for k, v in splits.items()} == {'train': 40, 'validation': 10,
                                                                'test': 12}
  with pytest.raises(errors.UsageError, match='give both'):
    csv_data.settings_from_config(_cfg(tmp_path, path=tr, validation_path=va,
                                       features='px1').data)
  with pytest.raises(errors.UsageError, match='choose one way to split'):
    csv_data.settings_from_config(_cfg(tmp_path, path=path, split_column='split', folds=5,
                                       features='px1').data)


def test_k_folds_test_every_row_once_and_validate_on_the_next_fold(tmp_path):
  path = _table(tmp_path)
  tests, vals = [], []
  for fold in range(4):
    s = csv_data.settings_from_config(_cfg(tmp_path, path=path, features='id', folds=4,
                                           fold=fold).data)
    parts, rule = csv_data.split_parts(s, csv_data.parse(s))
    assert not set(parts['train']) & (set(parts['test']) | set(parts['validation']))
    assert len(parts['train']) + len(parts['validation']) + len(parts['test']) == 60
    assert f'test fold {fold}, validation fold {(fold + 1) % 4}' in rule
    tests.append(parts['test'])
    vals.append(parts['validation'])
  # Every row is tested once; fold i's validation rows are fold i + 1's test rows.
  assert sorted(np.concatenate(tests).tolist()) == list(range(60))
  for i in range(4):
    np.testing.assert_array_equal(vals[i], tests[(i + 1) % 4])
  with pytest.raises(errors.UsageError, match='at least 3 folds'):
    csv_data.settings_from_config(_cfg(tmp_path, path=path, features='id', folds=2).data)
  with pytest.raises(errors.UsageError, match='fold=4 is not one of the 4 folds'):
    csv_data.settings_from_config(_cfg(tmp_path, path=path, features='id', folds=4,
                                       fold=4).data)


def test_the_schema_is_known_before_any_row_and_matches_the_prepared_fields(tmp_path):
  path = _table(tmp_path)
  c = _cfg(tmp_path, path=path, text='title', features='px*', categorical='colour',
           categorical_encoding='embed')
  schema = data_lib.schema(c.data)
  assert not (tmp_path / 'tfds').exists()  # nothing prepared, no row parsed
  ds = data_lib.load(c.data, batch_size=4)
  assert set(schema.inputs) == set(ds.inputs) == {'tokens', 'bigrams', 'chargrams', 'features',
                                                  'categories'}
  assert set(schema.targets) == set(ds.targets) == {'labels'}
  for k, f in {**schema.inputs, **schema.targets}.items():
    real = {**ds.inputs, **ds.targets}[k]
    assert f.kind == real.kind
    assert f.shape in (real.shape, (0,)) and f.vocab_size in (real.vocab_size, 0)
  # The tokens' vocabulary is the learned one, not 40 rows of which most are never used.
  assert ds.inputs['tokens'].vocab_size == len(ds.meta['tokenizer']['words']) < 40


def test_a_numbers_only_table_gets_an_mlp_and_any_trunk_can_be_chosen(tmp_path):
  path = _table(tmp_path)
  numbers = _cfg(tmp_path, path=path, features='px*')
  spec, _, _ = train.check_config(numbers)
  ds = data_lib.schema(numbers.data)
  assert type(spec.trunk(ds.inputs)).__name__ == 'MLPTrunk' and set(ds.inputs) == {'features'}
  text = _cfg(tmp_path, path=path, text='title', features='px*', categorical='colour',
              categorical_encoding='embed')
  ds = data_lib.load_checked(text)
  arrays = {'train': pipeline.read_split(ds.split('train'))}
  trunk = train.check_config(text)[0].trunk(ds.inputs)
  assert type(trunk).__name__ == 'BagTrunk'  # text and hashed n-grams: the bag
  assert trunk.side_inputs == ('features', 'categories')  # '*': every numeric input
  text.heads.labels.add = ''  # an MLP has no wide path to add
  text.trunk.kind = 'mlp'  # on the same table: numbers and embedded categories, no tokens
  run = compiled(text, ds, arrays['train'])
  assert run.model.trunk.inputs_keys == ('features', 'categories')
  params = run.init_state(0).params
  assert params['trunk']['embed_categories']['embedding'].shape == (4, 8)  # 3 colours + unknown
  text.trunk.kind = 'conv'
  with pytest.raises(errors.UsageError, match=r"trunk 'conv' reads one image input, and the "
                     r"data set has none; its inputs are \['bigrams', "
                     r"'categories', 'chargrams', 'features', 'tokens'\]"):
    train.check_config(text)
  numbers.trunk.kind = 'text'
  with pytest.raises(errors.UsageError, match="trunk 'text' reads one tokens input"):
    train.check_config(numbers)


def test_other_trunks_settings_are_left_out_and_a_typo_is_refused(tmp_path):
  path = _table(tmp_path)
  c = _cfg(tmp_path, path=path, features='px*')
  c.trunk.kind = 'mlp'
  spec = model_lib.resolve(c)
  assert 'lstm_units' in spec.trunk_settings
  trunk = spec.trunk(data_lib.schema(c.data).inputs)
  assert trunk.hidden == (256,)  # the experiment's width carries over to the chosen trunk
  bad = dict(c.trunk)
  bad['lstm_unit'] = 3
  with pytest.raises(errors.UsageError, match="unknown trunk setting 'lstm_unit'.*did you mean "
                     "'lstm_units'"):
    model_lib.settings_lib.check_trunk({k: v for k, v in bad.items() if k != 'kind'})
