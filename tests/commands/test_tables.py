"""`./launch.sh tables`: real multi-label CSVs from packaged tables, in from_csv's layout."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from experiments import from_csv as from_csv_exp
from mlheads.commands import tables
from mlheads.data import base
from mlheads.data import csv_data
from mlheads.data import csv_prepare
from mlheads.data import splits
from conftest import ROOT, run_cli

# What docs/results.md's from_csv tables hold: (rows, labels).
SIZES = {'movielens': (9_049, 19), 'tate': (4_284, 34), 'ucla': (3_950, 7),
         'loans': (10_000, 24), 'birds': (19_302, 19), 'tweets': (20_761, 2),
         'movies': (58_788, 7)}
RUNS = os.path.join(ROOT, 'results', 'from_csv', 'runs.json')


@pytest.fixture(scope='module')
def built():
  return {name: tables.build(name) for name in tables.TABLES}


@pytest.mark.parametrize('name', sorted(tables.TABLES))
def test_every_table_is_text_numbers_and_learnable_0_1_labels(built, name):
  t = built[name]
  x = [c for c in t if c.startswith('x_')]
  y = [c for c in t if c.startswith('y_')]
  assert list(t.columns) == ['text', *x, *y] and x and y
  assert np.isfinite(t[x].to_numpy()).all()
  assert not t['text'].str.contains(r'[\r\n\t]').any()
  labels = t[y].to_numpy()
  assert set(np.unique(labels[~np.isnan(labels)])) <= {0.0, 1.0}
  train = tables.train_rows(len(t))
  assert (np.nansum(labels[train], axis=0) >= tables.TABLES[name].min_positives).all()
  assert ((np.nan_to_num(labels) > 0).sum(axis=1) >= 2).mean() > 0.01, 'multi-label rows'
  assert (len(t), len(y)) == SIZES[name]


def test_the_rows_labels_and_split_are_those_of_the_committed_from_csv_figures(built):
  """The label prior's test mAP (each label's test prevalence, averaged) that
  results/from_csv/runs.json records for each table, to 1e-6: the same rows in the same order,
  the same labels, the same split."""
  with open(RUNS) as f:
    runs = json.load(f)
  for name, t in built.items():
    y = t[tables.labels(t)].to_numpy()
    test = splits.split_indices(len(t), base.FRACTIONS, base.SPLIT_SEED)[2]
    assert np.nanmean(y[test], axis=0).mean() == pytest.approx(
        runs[f'{name}_s0']['label_prior_test_map'], abs=1e-6), name


def test_the_tweets_and_movies_are_the_packaged_sets_rows_and_labels(built):
  from mlheads.data import movies, tweets  # pylint: disable=g-import-not-at-top
  rows = tweets.table_rows()
  train = rows.table.iloc[rows.parts['train']]
  np.testing.assert_array_equal(tables.train_rows(len(rows.table)), rows.parts['train'])
  likes = rows.table['favorite_count'] > train['favorite_count'].median()
  np.testing.assert_array_equal(built['tweets']['y_likes'], likes.astype(float))
  genres = movies.table_rows().table[list(movies.GENRES)].to_numpy(float)
  np.testing.assert_array_equal(built['movies'][[f'y_{g.lower()}' for g in movies.GENRES]],
                                genres)


def test_blank_numbers_are_filled_and_flagged_rare_labels_dropped_unknowns_kept():
  n = 100
  train = tables.train_rows(n)
  year = np.arange(n, dtype=float)
  year[[train[0], train[1]]] = np.nan
  common = np.zeros(n)
  common[train[:30]] = 1.0
  common[train[30]] = np.nan
  rare = np.zeros(n)
  rare[train[:19]] = 1.0
  out = tables.frame(tables.Parts(pd.Series(['a\r\nb\tc'] * n), pd.DataFrame({'Year': year}),
                                  pd.DataFrame({'Common Label': common, 'rare': rare})))
  assert list(out) == ['text', 'x_year', 'x_year_missing', 'y_common_label']
  assert out['text'][0] == 'a b c'
  assert out['x_year'][train[0]] == np.nanmedian(year[train]) and out['x_year_missing'].sum() == 2
  assert np.isnan(out['y_common_label'][train[30]])
  with pytest.raises(tables.errors.UsageError, match='no label has 20 train positives'):
    tables.frame(tables.Parts(pd.Series(['a'] * n), pd.DataFrame({'v': year}),
                              pd.DataFrame({'rare': rare})))


def test_from_csv_reads_the_written_file_with_the_printed_flags_and_the_same_split(
    built, tmp_path):
  path = str(tmp_path / 'ucla.csv')
  tables.write(built['ucla'], path)
  c = from_csv_exp.get_config().data
  printed = tables.commands(path, built['ucla']).splitlines()[0]
  assert " --config.data.features='x_*' --config.data.labels=y_seminar,y_ind_study," in printed
  c.dir, c.path, c.text, c.features = str(tmp_path / 'tfds'), path, 'text', 'x_*'
  c.labels = printed.split('--config.data.labels=')[1]
  s = csv_data.settings_from_config(c)
  plan = csv_prepare.scan(s, csv_data._layout(s))  # pylint: disable=protected-access
  np.testing.assert_array_equal(np.flatnonzero(plan.split_of == 0),
                                tables.train_rows(len(built['ucla'])))
  assert plan.classes == tuple(col for col in built['ucla'] if col.startswith('y_'))
  back = pd.read_csv(path)
  np.testing.assert_allclose(back.drop(columns='text').to_numpy(),
                             built['ucla'].drop(columns='text').to_numpy(), rtol=1e-5)


def test_the_command_writes_the_tables_and_refuses_an_unknown_one_in_a_line(tmp_path):
  proc = run_cli('-m', 'mlheads.commands.tables', '--only=ucla', f'--out={tmp_path}')
  assert proc.returncode == 0, proc.stderr
  assert (tmp_path / 'ucla.csv').exists() and not list(tmp_path.glob('*.tmp'))
  assert f'./launch.sh from_csv --config.data.path={tmp_path}/ucla.csv' in proc.stdout
  proc = run_cli('-m', 'mlheads.commands.tables', '--only=ucla,nope', f'--out={tmp_path}/b')
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert "unknown table(s) ['nope']" in proc.stderr.strip().splitlines()[-1]
  assert not (tmp_path / 'b').exists()
