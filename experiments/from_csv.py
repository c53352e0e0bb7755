"""Your own multi-label table (CSV, TSV or JSONL): text, numbers and categories -> several labels.

  ./launch.sh from_csv --config.data.path=films.csv --config.data.text=title \
      --config.data.features=year,rating --config.data.label_list=genres \
      --config.data.separator='|'
  ./launch.sh from_csv --config.data.path=F --config.data.features='*' \
      --config.data.labels=x,y,z                  # one 0/1 column per label, every other
                                                  # column a number: an MLP
  ./launch.sh cv from_csv --folds=5 --config.data.path=F ...    # 5-fold cross-validation

An empty label cell is unknown and masked out of the loss and metrics. Split 80/10/10 by
--config.data.split_seed, or the file's own (split_column, separate files), or k folds. See
docs/data.md.

The trunk follows the data (`--config.trunk.kind=''`): with a text column, the defaults are
the recipe measured best on six real tables (docs/results.md, docs/trunks.md): the `bag`
trunk (word + hashed bigram + hashed character 3-5-gram embeddings, averaged per stream,
dropout 0.5, the standardized numbers and categories, Dense(256, relu), dropout 0.5) with its
wide (linear) path added to the sigmoid head's logits; AdamW 3e-3 (the tables updated row by
row), batch 64; the checkpoint kept is the best epoch by validation macro mAP; then blended
with TF-IDF + logistic regression, the weight chosen on validation (`config.ensemble`,
mlheads/ensemble.py). Without a text column, an MLP over the numbers (the wide path is then
left out); `--config.trunk.kind=mlp|text|bag` chooses. On the 9,049-row movielens titles + year
table (19 labels) a run takes ~4-5 min on a loaded 2-core machine (10 epochs; ~11 s each after
the first, which compiles) and scores test macro mAP 0.327 ± 0.003 (3 seeds; the network alone
0.310); TF-IDF + logistic regression (`./launch.sh baseline from_csv ...`) scores 0.320 there
(docs/results.md, with six more tables).
"""

from mlheads import configs


def get_config():
  c = configs.base_config()
  c.data.name = 'from_csv'
  c.data.path = ''  # a .csv, .tsv or .jsonl file (with validation_path and test_path: train)
  c.data.validation_path = ''
  c.data.test_path = ''
  c.data.text = ''  # text columns, comma-separated ('' = none)
  c.data.features = ''  # numeric columns: names or globs ('px*'); '*' = every other column
  c.data.categorical = ''  # columns of category names (names or globs)
  c.data.categorical_encoding = 'onehot'  # or 'embed' (an embedding per column in the trunk)
  c.data.max_categories = 100  # per column: the most frequent in train; others are unknown
  c.data.labels = ''  # one 0/1 column per class, comma-separated ...
  c.data.label_list = ''  # ... or one column of names joined by `separator`
  c.data.separator = '|'
  c.data.classes = ''  # the class list for label_list, comma-separated ('' = learned on train)
  c.data.split_column = ''  # a column of train / validation / test ('' = split by seed)
  c.data.split_seed = 0
  c.data.folds = 0  # k-fold cross-validation (./launch.sh cv): k folds, ...
  c.data.fold = 0  # ... this one is test, the next one validation
  c.data.vocab_size = 10_000
  c.data.max_len = 0  # 0: the 99.5th percentile of the train texts' words (at most 128)
  c.data.max_ngrams = 0  # 0: likewise for character n-grams (at most 1024)
  c.data.min_count = 2  # words seen fewer times in train are out of vocabulary
  c.trunk = configs.trunk('', embed_dim=64, hidden=(256,), dropout=0.5, wide=True,
                          side_inputs=('*',))
  c.heads = {'labels': configs.head('sigmoid', target='labels', add='wide')}
  c.optimizer = 'adamw'
  c.learning_rate = 3e-3
  c.weight_decay = 0.0
  c.batch_size = 64
  c.epochs = 10
  c.best_metric = 'labels/average_precision_macro'
  # Blend with TF-IDF + logistic regression, the weight chosen on validation (mlheads.ensemble):
  # on short texts the two err differently and the blend beats both (docs/results.md).
  c.ensemble = True
  return c
