"""SYNTHETIC extreme multi-label classification: 10,000 power-law classes (scale test).

  ./launch.sh synthetic_xml                                   # K = 10,000, 5 epochs
  ./launch.sh synthetic_xml --config.heads.labels.negatives=512   # sampled negatives
  ./launch.sh synthetic_xml --config.data.classes=50000 --config.heads.labels.kind=softmax

Data: mlheads/data/synthetic.py (synthetic, not real): 20,000 rows of 64 numbers, each with
1-8 of 10,000 classes drawn with Zipf frequencies (alpha 1), the numbers a noisy sum of the
classes' prototypes. MLP(256) -> output `labels`: 10,000 sigmoid units (the output layer,
2.6M of the 2.6M parameters, is the only part that grows with K). Adam 3e-3, batch 256, 5 epochs.
Evaluation streams (evaluation/streaming.py): no [n, K] array is held. Measured in
docs/metrics.md (seed 0, 2 CPU cores): the run, its time and its peak memory.
"""

from mlheads import configs


def get_config():
  c = configs.base_config()
  c.data.name = 'synthetic_xml'
  c.data.rows = 20_000
  c.data.classes = 10_000
  c.data.features = 64
  c.data.max_labels = 8
  c.data.mean_labels = 3.0
  c.data.alpha = 1.0
  c.data.noise = 0.5
  c.data.seed = 0
  c.trunk = {'kind': 'mlp', 'inputs_keys': ('features',), 'hidden': (256,)}
  # init_bias: every class starts near its prior (about -log K) instead of probability 0.5.
  c.heads = {'labels': {**configs.head('sigmoid', target='labels'), 'negatives': 0,
                        'init_bias': -9.0}}
  c.optimizer = 'adam'
  c.learning_rate = 3e-3
  c.batch_size = 256
  c.eval_batch_size = 500
  c.epochs = 5
  c.best_metric = 'labels/precision_at_1'
  return c
