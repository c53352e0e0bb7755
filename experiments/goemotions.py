"""GoEmotions from the tfds catalog: 28 emotions of Reddit comments (needs the network once).

  ./launch.sh goemotions

The catalog builder downloads and prepares its data the first time (network,
and its tfds code imports TensorFlow); offline, prepare it elsewhere with
`tfds build goemotions --file_format=array_record` and copy the folder into
--config.data.dir. Text (30 word ids, vocab 10,000) -> Embedding(64) ->
LSTM(64) -> Dense(64, relu) -> output `emotions`: 28 sigmoid units. Not run
here (no network); the code path is tested with tfds.testing.mock_data.
"""

from mlheads import configs


def get_config():
  c = configs.base_config()
  c.data.name = 'goemotions'
  c.data.max_len = 30
  c.trunk = configs.trunk('text', embed_dim=64, lstm_units=64, hidden=(64,),
                          text_input='tokens')
  c.heads = {'emotions': configs.head('sigmoid', target='labels')}
  c.optimizer = 'adam'
  c.learning_rate = 1e-3
  c.batch_size = 64
  c.epochs = 3
  c.best_metric = 'emotions/roc_auc_macro'
  return c
