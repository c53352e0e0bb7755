"""The defaults every experiment starts from, and the checks run before anything else.

Experiment files (experiments/*.py) call `base_config()` and change a few
fields; every trainer default lives here, read by attribute, never with
`config.get(key, default)` in the trainer.
"""

import ml_collections

from mlheads import errors


def head(kind: str, target: str, weight: float = 1.0, source: str = 'features',
         loss: str | None = None, add: str = '', **options) -> dict:
  """One output's config: `config.heads.<name>`.

  Args:
    kind: a name in model.heads.HEADS.
    target: the data set key it predicts.
    weight: its loss weight.
    source: 'features' or a trunk intermediate (e.g. 'lstm').
    loss: a name in model.losses.LOSSES; None for the head's default (stored as '', a
      string, so that `--config.heads.<name>.loss=focal` can override it).
    add: '' or a trunk intermediate added to the logits (the `bag` trunk's `'wide'`).
    **options: the loss' keyword options (pos_weight, gamma, ...).
  """
  return dict(kind=kind, target=target, weight=weight, source=source, loss=loss or '',
              add=add, num_classes=0, loss_options=dict(options))


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = ''  # set by launch.sh from the experiment's file name.
  c.seed = 0
  c.epochs = 5
  c.batch_size = 32
  c.eval_batch_size = 256
  c.optimizer = 'rmsprop'
  c.learning_rate = 1e-3
  c.grad_clip = 0.0  # global-norm clipping; 0 = off.
  c.weight_decay = 0.0  # adamw's decoupled weight decay (other optimizers: must be 0).
  c.log_every_steps = 50  # host syncs (loss read, finiteness check) happen only here.
  c.eval_every_epochs = 1
  c.checkpoint_every_epochs = 1
  c.best_metric = ''  # e.g. 'validation/main/roc_auc_macro'; '' = the first head's mAP/AUC.
  c.progress = True  # tqdm bar on stderr.

  c.data = ml_collections.ConfigDict()
  c.data.name = ''
  c.data.dir = ''  # '' = the tfds default data dir.
  c.data.vocab_size = 10_000
  c.data.max_len = 100
  c.data.max_rows = 0  # 0 = all rows; a small number for quick checks.
  # Text data sets also record hashed word bigrams (max_len of them) and character 3-5-grams
  # (max_ngrams), ids in [1, hash_buckets]: what the `bag` trunk reads (data/ngrams.py).
  c.data.max_ngrams = 512
  c.data.hash_buckets = 2**18

  c.trunk = ml_collections.ConfigDict({'kind': 'mlp'})
  c.heads = ml_collections.ConfigDict()
  return c


def validate(config, num_devices: int = 1) -> None:
  """Rejects bad values before any data is read or anything compiles (B15).

  Names (trunk, heads, losses, optimizer, data set) are checked where they are looked
  up, in their registries; `train.check_config` looks them all up before any data is read.
  """
  def need(ok, msg):
    if not ok:
      raise errors.UsageError(msg)

  for key in ('epochs', 'batch_size', 'eval_batch_size', 'log_every_steps'):
    v = config[key]
    need(isinstance(v, int) and v > 0, f'--config.{key} must be a positive integer, got {v!r}')
  need(config.learning_rate > 0, f'--config.learning_rate must be > 0, got {config.learning_rate}')
  need(config.grad_clip >= 0, f'--config.grad_clip must be >= 0, got {config.grad_clip}')
  need(config.weight_decay >= 0,
       f'--config.weight_decay must be >= 0, got {config.weight_decay}')
  need(config.weight_decay == 0 or config.optimizer == 'adamw',
       f'--config.weight_decay={config.weight_decay} needs --config.optimizer=adamw (decoupled '
       f'decay); --config.optimizer is {config.optimizer!r}')
  need(config.batch_size % num_devices == 0,
       f'--config.batch_size={config.batch_size} is not divisible by the {num_devices} devices')
  need(config.eval_batch_size % num_devices == 0,
       f'--config.eval_batch_size={config.eval_batch_size} is not divisible by the '
       f'{num_devices} devices')
  need(len(config.heads) > 0, 'the config names no heads (config.heads is empty)')
  for name, h in config.heads.items():
    need(h.weight >= 0, f'--config.heads.{name}.weight must be >= 0, got {h.weight}')
