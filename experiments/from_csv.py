"""Your own multi-label table (CSV, TSV or JSONL): text, numbers and categories -> several labels.

  ./launch.sh from_csv --config.data.path=films.csv --config.data.text=title \
      --config.data.features=year,rating --config.data.label_list=genres \
      --config.data.separator='|'
  ./launch.sh from_csv --config.data.path=F --config.data.features='*' \
      --config.data.labels=x,y,z                  # one 0/1 column per label, every other
                                                  # column a number: an MLP
  ./launch.sh cv from_csv --folds=5 --config.data.path=F ...    # 5-fold cross-validation

An empty label cell is unknown and masked out of the loss and metrics. The trunk follows the
data: with a text column, text -> Embedding(64) -> LSTM(64), concatenated with the
standardized numbers (and categories) -> Dense(64, relu); without one, an MLP over the numbers
(Dense(64, relu)); `--config.trunk.kind=mlp|text` chooses. Output `labels`: one sigmoid per
class. Split 80/10/10 by --config.data.split_seed, or the file's own (split_column, separate
files), or k folds. See docs/data.md. Runtime and result depend on the file: the 3,000-film
table of docs/data.md (title, year, rating, `|`-separated genres) prepares and trains 5
epochs in ~18 s on 2 CPU cores (10 s once cached), test macro ROC AUC 0.56 (seed 0).
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
  c.data.max_len = 30
  c.trunk = configs.trunk('', embed_dim=64, lstm_units=64, hidden=(64,), side_inputs=('*',))
  c.heads = {'labels': configs.head('sigmoid', target='labels')}
  c.optimizer = 'adam'
  c.learning_rate = 1e-3
  c.batch_size = 32
  c.epochs = 5
  c.best_metric = 'labels/roc_auc_macro'
  # Blend with TF-IDF + logistic regression, the weight chosen on validation (mlheads.ensemble):
  # on short texts the two err differently and the blend beats both (docs/results.md).
  c.ensemble = True
  return c
