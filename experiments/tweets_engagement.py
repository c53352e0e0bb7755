"""Tweets' retweets and likes, each above the median (two labels), from the text and 5 numbers.

  ./launch.sh tweets_engagement                   # 5 epochs, a few minutes on 2 CPU cores
  ./launch.sh baseline tweets_engagement          # the TF-IDF + logistic regression baseline

The same data and target as headline_engagement (dslabs trump_tweets; target
`engagement`: retweets > the train median, likes > the train median; 80/10/10
split by seed 0) on the text trunk the other text experiments use: the text as
100 word ids (vocab 10,000) -> Embedding(64) -> LSTM(64), padding masked,
concatenated with the 5 extra numbers -> Dense(64, relu) -> output
`engagement`: 2 sigmoid units, binary cross-entropy. Adam 1e-3, batch 64.
"""

from mlheads import configs


def get_config():
  c = configs.base_config()
  c.data.name = 'trump_tweets'
  # Every trunk's settings (configs.trunk), so that --config.trunk.kind=bag and its settings
  # work here too (compare_heads trains this data set on the bag trunk).
  c.trunk = configs.trunk('text', embed_dim=64, lstm_units=64, hidden=(64,),
                          text_input='tokens', side_inputs=('extra',))
  c.heads = {'engagement': configs.head('sigmoid', target='engagement')}
  c.optimizer = 'adam'
  c.learning_rate = 1e-3
  c.batch_size = 64
  c.epochs = 5
  c.best_metric = 'engagement/roc_auc_macro'
  return c
