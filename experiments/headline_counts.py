"""The headline model as a regressor: how many retweets and likes will a tweet get?

  ./launch.sh headline_counts                     # 5 epochs, a few minutes on 2 CPU cores
  ./launch.sh headline_counts --config.epochs=1   # a quick check

The seed's question "will it get retweets and likes" asked as "how many": the
seed's two-branch body (Embedding(512) -> LSTM(32); [LSTM, 5 extra numbers]
-> 3 x Dense(64, relu)) with a `counts` regression output of 2 units
predicting log1p(retweets) and log1p(likes), squared error, RMSprop, batch
32. Data: dslabs trump_tweets (target `log_counts`). Reports MSE, MAE and R^2
per column (r2_0 retweets, r2_1 likes) on validation and test.
"""

from mlheads import configs


def get_config():
  c = configs.base_config()
  c.data.name = 'trump_tweets'
  c.trunk = configs.trunk('headline')
  c.heads = {
      'counts': configs.head('regression', target='log_counts', weight=1.0),
  }
  c.optimizer = 'rmsprop'
  c.learning_rate = 1e-3
  c.batch_size = 32
  c.epochs = 5
  return c
