"""Your own multi-label table (CSV, TSV or JSONL): text and/or numbers -> several labels.

  ./launch.sh from_csv --config.data.path=films.csv --config.data.text=title \
      --config.data.features=year,rating --config.data.label_list=genres \
      --config.data.separator='|'
  ./launch.sh from_csv --config.data.path=F --config.data.text=COL \
      --config.data.labels=x,y,z                  # one 0/1 column per label

An empty label cell is unknown and masked out of the loss and metrics. Text
-> Embedding(64) -> LSTM(64) (all padding without --config.data.text),
concatenated with the standardized features -> Dense(64, relu) -> output
`labels`: one sigmoid per class. Split 80/10/10 by --config.data.split_seed.
See docs/data.md. Runtime and result depend on the file: the 3,000-film
table of docs/data.md (title, year, rating, `|`-separated genres) prepares and
trains 5 epochs in ~18 s on 2 CPU cores (10 s once cached), test macro ROC AUC
0.56 (seed 0).
"""

from mlheads import configs


def get_config():
  c = configs.base_config()
  c.data.name = 'from_csv'
  c.data.path = ''  # a .csv, .tsv or .jsonl file
  c.data.text = ''  # the text column ('' = none)
  c.data.features = ''  # numeric columns, comma-separated
  c.data.labels = ''  # one 0/1 column per class, comma-separated ...
  c.data.label_list = ''  # ... or one column of names joined by `separator`
  c.data.separator = '|'
  c.data.classes = ''  # the class list for label_list, comma-separated ('' = learned on train)
  c.data.split_seed = 0
  c.data.vocab_size = 10_000
  c.data.max_len = 0  # 0: the 99.5th percentile of the train texts' words (at most 128)
  c.data.max_ngrams = 0  # 0: likewise for character n-grams (at most 1024)
  c.data.min_count = 2  # words seen fewer times in train are out of vocabulary
  c.trunk = {'kind': 'text', 'embed_dim': 64, 'lstm_units': 64, 'hidden': (64,),
             'text_input': 'tokens', 'side_inputs': ('features',)}
  c.heads = {'labels': configs.head('sigmoid', target='labels')}
  c.optimizer = 'adam'
  c.learning_rate = 1e-3
  c.batch_size = 32
  c.epochs = 5
  c.best_metric = 'labels/roc_auc_macro'
  return c
