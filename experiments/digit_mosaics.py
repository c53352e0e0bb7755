"""Which digits are in the picture? 2x2 mosaics of 1-4 handwritten digits, 10 labels.

  ./launch.sh digit_mosaics                       # 5 epochs, ~30 s on 2 CPU cores

Data: scikit-learn's 8x8 digits composed into 16x16 mosaics (12,000 train /
2,000 validation / 2,000 test; train and test digits from disjoint source
images). Trunk: Conv(32) -> pool -> Conv(64) -> pool -> Dense(128). Output
`digits`: 10 sigmoid units, binary cross-entropy. Adam 1e-3, batch 64.
Expected (seed 0, CPU): test macro ROC AUC 0.996, label accuracy 0.98;
151,306 parameters.
"""

from mlheads import configs


def get_config():
  c = configs.base_config()
  c.data.name = 'digit_mosaics'
  c.trunk = configs.trunk('conv', image_input='image', channels=(32, 64), hidden=(128,))
  c.heads = {'digits': configs.head('sigmoid', target='digits')}
  c.optimizer = 'adam'
  c.learning_rate = 1e-3
  c.batch_size = 64
  c.epochs = 5
  c.best_metric = 'digits/roc_auc_macro'
  return c
