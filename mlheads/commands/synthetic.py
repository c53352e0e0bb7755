"""A synthetic multi-label table for scale tests: `./launch.sh synthetic --rows=N --output=F`.

SYNTHETIC data, not a real data set: its only use is measuring how mlheads scales
(memory, throughput) on more rows than any packaged table has. Each row has a text of
4-12 words, 5 numbers and a `|`-joined list of 20 labels (`l00`..`l19`), written in
chunks (the generator holds one chunk in memory). The labels are learnable: label k is
present with probability 2-30% (a power law over k); a present label adds words of its
own pool to the text and its direction to the numbers, and every row gets background
words and noise.

  ./launch.sh synthetic --rows=2000000 --output=/tmp/synthetic.csv
  ./launch.sh from_csv --config.data.path=/tmp/synthetic.csv --config.data.text=text \
      --config.data.features=f0,f1,f2,f3,f4 --config.data.label_list=labels --config.epochs=1
"""

import csv

from absl import flags
import numpy as np

from mlheads import errors

FLAGS = flags.FLAGS
CLASSES = 20
FEATURES = 5
VOCAB = 20_000  # background words w0..; each class owns 50 more words c<k>_<j>


def define_flags() -> None:
  flags.DEFINE_integer('rows', 2_000_000, 'Data rows to write.')
  flags.DEFINE_string('output', None, 'The CSV file to write.')
  flags.DEFINE_integer('seed', 0, 'Random seed.')
  flags.DEFINE_integer('chunk', 100_000, 'Rows generated at a time.')


def rows(n: int, seed: int = 0, chunk: int = 100_000):
  """Yields lists of CSV rows `[text, f0..f4, labels]`, `chunk` rows at a time."""
  rng = np.random.default_rng(seed)
  rates = 0.3 * (np.arange(1, CLASSES + 1, dtype=np.float64) ** -0.9)
  rates = np.maximum(rates, 0.02)
  directions = rng.normal(size=(CLASSES, FEATURES))
  zipf = 1.0 / np.arange(1, VOCAB + 1) ** 1.1
  zipf /= zipf.sum()
  for start in range(0, n, chunk):
    m = min(chunk, n - start)
    y = rng.random((m, CLASSES)) < rates
    x = y @ directions + rng.normal(size=(m, FEATURES))
    lengths = rng.integers(4, 13, size=m)
    background = rng.choice(VOCAB, size=(m, 12), p=zipf)
    own = rng.integers(0, 50, size=(m, CLASSES))
    out = []
    for i in range(m):
      present = np.flatnonzero(y[i])
      words = [f'w{w}' for w in background[i, :lengths[i] - min(len(present), 3)]]
      words += [f'c{k}_{own[i, k]}' for k in present[:3]]
      out.append([' '.join(words), *(f'{v:.4f}' for v in x[i]),
                  '|'.join(f'l{k:02d}' for k in present) or '|'])
    yield out


def write(path: str, n: int, seed: int = 0, chunk: int = 100_000) -> None:
  with open(path, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(['text', *(f'f{k}' for k in range(FEATURES)), 'labels'])
    for part in rows(n, seed, chunk):
      w.writerows(part)


def main(argv):
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {argv[1:]}')
  if not FLAGS.output:
    raise errors.UsageError('--output=FILE.csv is required')
  if FLAGS.rows < 1:
    raise errors.UsageError(f'--rows must be positive, got {FLAGS.rows}')
  write(FLAGS.output, FLAGS.rows, FLAGS.seed, FLAGS.chunk)
  print(f'wrote {FLAGS.rows:,} synthetic rows to {FLAGS.output}')


if __name__ == '__main__':
  define_flags()
  errors.run_main(main)
