"""predict: new rows through the run's own encoder, parameters and thresholds.

One tiny headline run (2 epochs, so 2 checkpoints) and one tiny from_csv run
are trained per module; predictions on raw rows of their test splits must equal
what the trainer's own evaluation computes on the prepared test split.
"""

import csv
import json
import os

import numpy as np
import pandas as pd
import pytest

from conftest import compiled, run_cli, tiny_headline_config
from experiments import from_csv as from_csv_exp
from mlheads import errors
from mlheads import train
from mlheads.commands import predict
from mlheads.evaluation import calibration
from mlheads.data import base
from mlheads.data import csv_data
from mlheads.data import digits
from mlheads.data import movies
from mlheads.data import ngrams
from mlheads.data import pipeline
from mlheads.data import splits
from mlheads.data import tokenizer as tokenizer_lib
from mlheads.data import tweets
from mlheads.evaluation import runner
from mlheads.state import checkpoints
from mlheads.state import extras as extras_lib
import mlheads.data as data_lib

# Trains two tiny runs, then predicts through the CLI.
pytestmark = pytest.mark.slow

GENRES = ('Comedy', 'Drama', 'Short')


def _reference(config, workdir):
  """Per committed step: the trainer's own test-split scores and the extras; the best step;
  the prepared test split's inputs."""
  ds = data_lib.load_checked(config)
  arrays = {s: pipeline.read_split(ds.split(s)) for s in ('train', 'test')}
  trainer = compiled(config, ds, arrays['train'])
  target = trainer.init_state(config.seed)
  metric, mode = runner.best_metric(config, {n: h.target_kind for n, h in trainer.heads.items()})
  ref = {}
  with checkpoints.Checkpointer(workdir, best_metric=metric, best_mode=mode) as ckpt:
    for step in ckpt.all_steps():
      state, extras, _ = ckpt.restore(target, step)
      preds = trainer.predict(state.params, arrays['test'])
      ref[step] = {'scores': {n: p['scores'] for n, p in preds.items()}, 'extras': extras}
    return ref, ckpt.best_step(), {k: arrays['test'][k] for k in ds.inputs}


@pytest.fixture(scope='module')
def headline(tweets_dir, tmp_path_factory):
  config = tiny_headline_config(tweets_dir)
  config.epochs = 2
  workdir = str(tmp_path_factory.mktemp('headline_run'))
  train.train_and_evaluate(config, workdir)
  ref, best, prepared = _reference(config, workdir)
  table = tweets.load_table().iloc[:config.data.max_rows].reset_index(drop=True)
  test_idx = splits.split_indices(len(table), base.FRACTIONS, base.SPLIT_SEED)[2]
  rows = table.iloc[test_idx][['id_str', 'text', 'created_at', 'source']]
  return {'workdir': workdir, 'ref': ref, 'best': best, 'rows': rows, 'prepared': prepared}


def _films(n, seed=0):
  rng = np.random.default_rng(seed)
  words = ['night', 'day', 'love', 'war', 'the', 'man', 'city', 'blue', 'last', 'king']
  out = []
  for i in range(n):
    title = ' '.join(rng.choice(words, size=rng.integers(1, 7)))
    hot = rng.integers(0, 2, size=len(GENRES))
    out.append({'id': f'f{i}', 'title': title, 'year': 1950 + i % 50,
                'rating': round(3 + (i % 60) / 10, 1),
                'genres': '|'.join(g for g, h in zip(GENRES, hot) if h) or '|'})
  return pd.DataFrame(out)


def _csv_config(path, data_dir):
  c = from_csv_exp.get_config()
  c.data.update(dict(path=path, text='title', features='year,rating', label_list='genres',
                     dir=data_dir, vocab_size=30, max_len=4, max_ngrams=16, hash_buckets=64))
  c.trunk.embed_dim, c.trunk.hidden = 8, (8,)
  c.batch_size, c.eval_batch_size, c.epochs, c.progress = 8, 16, 1, False
  c.ensemble = False  # predict against the trainer's network; tests/test_ensemble.py: blends
  return c


@pytest.fixture(scope='module')
def csv_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('csv_run')
  films = _films(200)
  path = str(tmp / 'films.csv')
  films.to_csv(path, index=False)
  config = _csv_config(path, str(tmp / 'tfds'))
  workdir = str(tmp / 'run')
  train.train_and_evaluate(config, workdir)
  ref, best, prepared = _reference(config, workdir)
  test_idx = splits.split_indices(len(films), csv_data.FRACTIONS, 0)[2]
  return {'workdir': workdir, 'ref': ref, 'best': best, 'rows': films.iloc[test_idx],
          'prepared': prepared}


def _record_order(run, input_path):
  """For each input row, the index of the prepared test record with exactly its inputs.

  tfds stores a split's records in its own (hashed) order, so rows are matched by
  content; every row must match a distinct record, which also checks that
  predict's encoding of the raw rows equals the prepared data bit for bit.
  """
  ckpt = predict.choose_checkpoint(run['workdir'])
  inputs, _ = predict.encode(ckpt, predict.read_table(input_path), input_path)
  prepared = run['prepared']
  n = len(next(iter(prepared.values())))
  flat = lambda a, i: a[i].tobytes()
  index = {}
  for j in range(n):
    index.setdefault(tuple(flat(prepared[k], j) for k in sorted(prepared)), []).append(j)
  order = []
  for i in range(len(next(iter(inputs.values())))):
    key = tuple(flat(inputs[k], i) for k in sorted(prepared))
    if not index.get(key):
      pytest.fail(f'input row {i} encodes to no prepared test record')
    order.append(index[key].pop(0))
  assert sorted(order) == list(range(n))
  return np.array(order)


def _read_output(path):
  with open(path, newline='', encoding='utf-8') as f:
    return list(csv.DictReader(f))


def _column(out, name):
  return np.array([float(r[name]) for r in out], np.float32)


def _expected_labels(scores, thresholds, names):
  return ['|'.join(n for n, s, t in zip(names, row, thresholds) if s > t) for row in scores]


def _probabilities(ref, name, scores):
  """The trainer's scores through the checkpoint's calibration: what predict writes."""
  cal = ref['extras']['calibration'][name]
  return calibration.apply_numpy(scores, cal['a'], cal['b'])


def _leftovers(directory):
  return [f for f in os.listdir(directory) if f.endswith('.tmp')]


# ----------------------------------------------------------------------------- faithful


def test_headline_predictions_equal_the_trainers_eval(headline, tmp_path):
  inp, out = str(tmp_path / 'in.csv'), str(tmp_path / 'out.csv')
  headline['rows'].to_csv(inp, index=False)
  summary = predict.run(headline['workdir'], inp, out, batch_size=5)
  best = headline['best']
  assert summary['step'] == best and summary['chosen'].startswith('best by')
  order = _record_order(headline, inp)
  ref = {k: {n: v[order] for n, v in headline['ref'][best]['scores'].items()}
         if k == 'scores' else v for k, v in headline['ref'][best].items()}
  rows = _read_output(out)
  assert len(rows) == len(headline['rows'])
  # every input column kept, as read
  assert [r['id_str'] for r in rows] == [str(x) for x in headline['rows']['id_str']]
  assert [r['text'] for r in rows] == list(headline['rows']['text'])
  for name in ('main', 'aux'):
    got = _column(rows, f'{name}:retweeted')
    want = _probabilities(ref, name, ref['scores'][name])[:, 0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    # Calibration is increasing: the rows' order by probability is the scores' order.
    raw = ref['scores'][name][:, 0]
    assert np.all(np.sign(np.subtract.outer(got, got)) * np.sign(np.subtract.outer(raw, raw))
                  >= 0)
    t = ref['extras']['thresholds'][name]['per_class']
    assert [r[f'{name}:predicted'] for r in rows] == _expected_labels(
        ref['scores'][name], t, ['retweeted'])
  assert summary['thresholds'] == {'main': 'tuned on validation', 'aux': 'tuned on validation'}


def test_step_picks_the_given_checkpoint(headline, tmp_path):
  steps = sorted(headline['ref'])
  assert len(steps) == 2
  inp = str(tmp_path / 'in.csv')
  headline['rows'].to_csv(inp, index=False)
  order = _record_order(headline, inp)
  got = {}
  for step in steps:
    out = str(tmp_path / f'out{step}.csv')
    assert predict.run(headline['workdir'], inp, out, step=step)['step'] == step
    got[step] = _column(_read_output(out), 'main:retweeted')
    ref = headline['ref'][step]
    np.testing.assert_allclose(
        got[step], _probabilities(ref, 'main', ref['scores']['main'][order])[:, 0], atol=1e-5)
  assert np.abs(got[steps[0]] - got[steps[1]]).max() > 1e-4  # the steps really differ
  with pytest.raises(errors.UsageError, match=r'no committed checkpoint for step 7 .*committed'):
    predict.run(headline['workdir'], inp, str(tmp_path / 'x.csv'), step=7)
  assert not os.path.exists(tmp_path / 'x.csv')


def test_from_csv_cli_equals_the_trainers_eval_and_reads_jsonl(csv_run, tmp_path):
  inp, out = str(tmp_path / 'in.csv'), str(tmp_path / 'out.csv')
  csv_run['rows'].drop(columns=['genres']).to_csv(inp, index=False)
  r = run_cli('-m', 'mlheads.commands.predict', f'--workdir={csv_run["workdir"]}', f'--input={inp}',
              f'--output={out}', '--keep=id')
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'wrote' in r.stdout
  with open(out, 'rb') as f:
    raw = f.read()
  assert b'\r' not in raw and raw.endswith(b'\n')  # plain '\n' line endings
  ref = csv_run['ref'][csv_run['best']]
  ref_scores = ref['scores']['labels'][_record_order(csv_run, inp)]
  rows = _read_output(out)
  assert list(rows[0])[:2] == ['id', 'labels:Comedy']  # --keep=id: only that input column
  assert [r['id'] for r in rows] == list(csv_run['rows']['id'])
  got = np.stack([_column(rows, f'labels:{g}') for g in GENRES], 1)
  np.testing.assert_allclose(got, _probabilities(ref, 'labels', ref_scores), atol=1e-5)
  t = ref['extras']['thresholds']['labels']['per_class']
  assert [r['labels:predicted'] for r in rows] == _expected_labels(ref_scores, t, GENRES)
  # the same rows as JSONL (numbers as JSON numbers) give the same probabilities
  jsonl = tmp_path / 'in.jsonl'
  jsonl.write_text(''.join(json.dumps(rec) + '\n' for rec in
                           csv_run['rows'].to_dict('records')), encoding='utf-8')
  predict.run(csv_run['workdir'], str(jsonl), str(tmp_path / 'out2.csv'), keep='none')
  rows2 = _read_output(tmp_path / 'out2.csv')
  assert list(rows2[0])[0] == 'labels:Comedy'
  np.testing.assert_allclose(np.stack([_column(rows2, f'labels:{g}') for g in GENRES], 1),
                             got, atol=1e-6)


def test_the_python_api_predicts_what_the_command_writes(csv_run, tmp_path):
  from mlheads import api  # pylint: disable=g-import-not-at-top
  rows = csv_run['rows'].drop(columns=['genres']).reset_index(drop=True)
  inp, out = str(tmp_path / 'in.csv'), str(tmp_path / 'out.csv')
  rows.to_csv(inp, index=False)
  predict.run(csv_run['workdir'], inp, out, keep='id', top_k=2)
  written = _read_output(out)
  run = api.load_run(csv_run['workdir'])
  assert run.step == csv_run['best'] and run.metrics['evaluated_step'] == csv_run['best']
  table = run.predict(rows, keep='id', top_k=2)
  assert list(table.columns) == list(written[0])
  assert table.index.equals(rows.index) and list(table['id']) == [r['id'] for r in written]
  for g in GENRES:
    np.testing.assert_array_equal(table[f'labels:{g}'].to_numpy(np.float32),
                                  _column(written, f'labels:{g}'))
  assert list(table['labels:predicted']) == [r['labels:predicted'] for r in written]
  probs = run.scores(rows)['labels']  # the model restored once, reused
  np.testing.assert_array_equal(probs[:, 0], table['labels:Comedy'].to_numpy(np.float32))


def test_label_sets_use_per_class_thresholds():
  s = np.array([[0.2, 0.6, 0.9], [0.5, 0.5, 0.1]], np.float32)
  t = np.array([0.1, 0.7, 0.5], np.float32)
  assert predict.label_sets(s, t, ['a', 'b', 'c']) == ['a|c', 'a']
  assert predict.label_sets(s, np.full(3, 0.5, np.float32), ['a', 'b', 'c']) == ['b|c', '']
  # top_k alone: exactly k, ties to the earlier class; with thresholds: those of them above.
  assert predict.label_sets(s, None, ['a', 'b', 'c'], top_k=1) == ['c', 'a']
  assert predict.label_sets(s, None, ['a', 'b', 'c'], top_k=2) == ['b|c', 'a|b']
  assert predict.label_sets(s, t, ['a', 'b', 'c'], top_k=1) == ['c', 'a']
  assert predict.label_sets(s, np.full(3, 0.55, np.float32), ['a', 'b', 'c'],
                            top_k=5) == ['b|c', '']
  assert predict.predicted_column('genres', ['a', 'b']) == 'genres:predicted'
  assert predict.predicted_column('x', ['predicted', 'b']) == 'x:predicted_set'


def test_threshold_and_top_k_choose_the_label_sets(csv_run, tmp_path):
  inp = str(tmp_path / 'in.csv')
  csv_run['rows'].to_csv(inp, index=False)
  got = {}
  for name, extra in [('t', {'threshold': 0.45}), ('k', {'top_k': 1}),
                      ('tk', {'threshold': 0.45, 'top_k': 2})]:
    out = str(tmp_path / f'{name}.csv')
    predict.run(csv_run['workdir'], inp, out, keep='none', **extra)
    got[name] = _read_output(out)
  s = np.stack([_column(got['t'], f'labels:{g}') for g in GENRES], 1)
  assert [r['labels:predicted'] for r in got['t']] == _expected_labels(s, [0.45] * 3, GENRES)
  assert [r['labels:predicted'] for r in got['k']] == [GENRES[i] for i in s.argmax(1)]
  expect = ['|'.join(g for g, v in zip(GENRES, row) if v > 0.45 and v >= np.sort(row)[-2])
            for row in s]
  assert [r['labels:predicted'] for r in got['tk']] == expect
  for flag, message in [('--top_k=0', 'must be a positive integer'),
                        ('--threshold=inf', 'not a finite number')]:
    r = run_cli('-m', 'mlheads.commands.predict', f'--workdir={csv_run["workdir"]}',
                f'--input={inp}', f'--output={tmp_path / "bad.csv"}', flag)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f'error: {flag}: {message}'], r.stderr
  assert not (tmp_path / 'bad.csv').exists()


def test_without_tuned_thresholds_the_heads_own_is_used(csv_run):
  with checkpoints.Checkpointer(csv_run['workdir']) as ck:
    extras, step = ck.read_extras()
  extras['thresholds'] = {}  # as a checkpoint saved on SIGTERM
  ckpt = extras_lib.read(extras, step, 'latest')
  t, how = predict.thresholds_of(ckpt, 'labels', ckpt.heads['labels'])
  np.testing.assert_array_equal(t, [0.5, 0.5, 0.5])
  assert how == 'head default 0.5'
  extras['thresholds'] = {'labels': {'per_class': [0.1, 0.2, 0.3]}}
  t, how = predict.thresholds_of(extras_lib.read(extras, step, 'latest'), 'labels',
                                 ckpt.heads['labels'])
  np.testing.assert_allclose(t, [0.1, 0.2, 0.3]) and how == 'tuned on validation'


# ----------------------------------------------------------------------------- bad input


def _headline_csv(rows, **changes):
  df = rows[['id_str', 'text', 'created_at', 'source']].head(6).copy()
  for col, (i, v) in changes.items():
    df[col] = df[col].astype(object)
    df.iloc[i, df.columns.get_loc(col)] = v
  return df


@pytest.mark.parametrize('content,pattern', [
    (None, r'in\.csv: no such file'),
    ('', r'in\.csv: the file is empty'),
    ('text,created_at,source\n', r'in\.csv: the file is empty \(no data rows\)'),
    ('text,created_at,source\nhi,2016-01-01T10:00:00Z,x\nho,2016-01-01T10:00:00Z\n',
     r'in\.csv, line 3: 2 cells, but the header has 3 columns'),
    ('created,source\n2016-01-01,x\n', r"in\.csv, line 1: no column 'text'"),
    (lambda rows: _headline_csv(rows, created_at=(3, 'last tuesday')),
     r"in\.csv, line {line3}, column 'created_at' is 'last tuesday'; expected an ISO 8601 "
     'time'),
    (lambda rows: _headline_csv(rows, created_at=(0, '')),
     r"in\.csv, line 2, column 'created_at' is empty"),
])
def test_headline_bad_input_is_one_usage_error_and_no_output(headline, tmp_path, content,
                                                            pattern):
  inp, out = tmp_path / 'in.csv', tmp_path / 'out.csv'
  if callable(content):
    content(headline['rows']).to_csv(inp, index=False)
    # Line numbers are the file's: quoted texts with line breaks push later rows down.
    texts = headline['rows']['text'].head(3)
    pattern = pattern.replace('{line3}', str(5 + sum(t.count('\n') for t in texts)))
  elif content is not None:
    inp.write_text(content, encoding='utf-8')
  with pytest.raises(errors.UsageError, match=pattern) as e:
    predict.run(headline['workdir'], str(inp), str(out))
  assert '\n' not in str(e.value)
  assert not out.exists() and not _leftovers(tmp_path)


@pytest.mark.parametrize('year,rating,pattern', [
    ('1999', 'inf', r"line 4, column 'rating' is 'inf'; features must be finite"),
    ('1999', 'nan', r"line 4, column 'rating' is 'nan'; features must be finite"),
    ('', '5.0', r"line 4, column 'year' is empty"),
    ('1999', '5,0', r"line 4, column 'rating' is '5,0', not a number"),
])
def test_from_csv_bad_numbers(csv_run, tmp_path, year, rating, pattern):
  rows = csv_run['rows'].head(5).astype(object)
  rows.iloc[2, rows.columns.get_loc('year')] = year
  rows.iloc[2, rows.columns.get_loc('rating')] = rating
  inp, out = tmp_path / 'in.csv', tmp_path / 'out.csv'
  rows.to_csv(inp, index=False)
  with pytest.raises(errors.UsageError, match=r'in\.csv, ' + pattern):
    predict.run(csv_run['workdir'], str(inp), str(out))
  assert not out.exists() and not _leftovers(tmp_path)


def test_cli_bad_input_exits_2_with_one_line(headline, csv_run, tmp_path):
  cases = []
  inp = tmp_path / 'no_date.csv'
  headline['rows'].drop(columns=['created_at']).head(4).to_csv(inp, index=False)
  cases.append((headline['workdir'], inp, "no_date.csv, line 1: no column 'created_at'"))
  inp = tmp_path / 'bad_year.csv'
  rows = csv_run['rows'].head(4).astype(object)
  rows.iloc[1, rows.columns.get_loc('year')] = 'MCMXCIX'
  rows.to_csv(inp, index=False)
  cases.append((csv_run['workdir'], inp, "bad_year.csv, line 3, column 'year' is 'MCMXCIX', "
                                         'not a number'))
  for workdir, inp, message in cases:
    out = tmp_path / 'out.csv'
    r = run_cli('-m', 'mlheads.commands.predict', f'--workdir={workdir}', f'--input={inp}',
                f'--output={out}')
    assert r.returncode == 2, r.stderr[-3000:]
    assert 'Traceback' not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and message in last, last
    assert not out.exists() and not _leftovers(tmp_path)


def test_workdir_without_a_committed_checkpoint(tmp_path):
  inp = tmp_path / 'in.csv'
  inp.write_text('text,created_at,source\nhi,2016-01-01T00:00:00Z,x\n', encoding='utf-8')
  (tmp_path / 'run' / 'checkpoints' / '24').mkdir(parents=True)  # a killed save: no manifest
  with pytest.raises(errors.UsageError, match=r'--workdir=.*run: no committed checkpoint'):
    predict.run(str(tmp_path / 'run'), str(inp), str(tmp_path / 'out.csv'))
  with pytest.raises(errors.UsageError, match=r'--workdir=.*nowhere: no such directory'):
    predict.run(str(tmp_path / 'nowhere'), str(inp), str(tmp_path / 'out.csv'))
  with pytest.raises(errors.UsageError, match=r'would overwrite --input'):
    predict.run(str(tmp_path / 'run'), str(inp), str(inp))
  assert not (tmp_path / 'out.csv').exists()


def test_read_extras_verifies_the_step_and_falls_back(tmp_path, caplog):
  state = {'w': np.arange(3, dtype=np.float32)}
  with checkpoints.Checkpointer(str(tmp_path)) as ck:
    for step in (1, 2):
      ck.save(step, state, extras={'step': step})
    assert ck.read_extras() == ({'step': 2}, 2)
    assert ck.read_extras(1) == ({'step': 1}, 1)
    path = tmp_path / 'checkpoints' / '2' / 'extras' / 'metadata'
    path.write_bytes(path.read_bytes().replace(b'2', b'3'))  # same size, other content
    assert ck.read_extras() == ({'step': 1}, 1)
    assert 'does not match its sha256' in caplog.text
    with pytest.raises(checkpoints.CheckpointError, match=r'step 2: .*metadata does not match'):
      ck.read_extras(2)
    with pytest.raises(errors.UsageError, match=r'no committed checkpoint for step 5'):
      ck.read_extras(5)


# ----------------------------------------------------------------------------- encoders


def _movie_meta():
  tok = tokenizer_lib.Tokenizer.fit(['the night', 'the day'], 10, 3)
  return {'tokenizer': tok.to_json(), 'ngrams': ngrams.Hasher(64, 3, 8).to_json(),
          'scaling': {'numeric': {'mean': [0.0] * 6, 'std': [1.0] * 6}}}


def test_movies_encode_reads_strings_like_the_packaged_numbers():
  table = movies.load_table().iloc[:50]
  cols = list(movies.COLUMNS)
  typed, _ = movies.encode(table[cols], _movie_meta(), 'movies')
  as_read = table[cols].astype(str).replace('nan', '').astype(object)  # a CSV's cells
  strings, _ = movies.encode(as_read, _movie_meta(), 'films.csv')
  for k in typed:
    np.testing.assert_array_equal(typed[k], strings[k])
  bad = as_read.copy()
  bad.iloc[4, bad.columns.get_loc('length')] = '-3'
  with pytest.raises(errors.UsageError, match=r"films\.csv, line 4, column 'length' is '-3', "
                     'below 0'):
    movies.encode(bad, _movie_meta(), 'films.csv')


def test_digits_encode_is_the_builders_pixel_scaling():
  raw, _ = digits.load_source(raw=True)
  scaled, _ = digits.load_source()
  mosaics = np.zeros((3, 16, 16, 1), np.float32)
  mosaics[:, :8, 8:, 0] = raw[:3]
  table = pd.DataFrame(mosaics.reshape(3, 256).astype(int).astype(str), columns=digits.PIXELS,
                       dtype=object)
  image = digits.encode(table, {}, 'px.csv')[0]['image']
  np.testing.assert_array_equal(image[:, :8, 8:, 0], scaled[:3])
  assert not image[:, 8:].any()
  table.iloc[1, 7] = '17'
  with pytest.raises(errors.UsageError, match=r"px\.csv, line 1, column 'px7' is '17', "
                     'above 16'):
    digits.encode(table, {}, 'px.csv')
