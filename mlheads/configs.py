"""The defaults every experiment starts from, and the checks run before anything else.

Experiment files (experiments/*.py) call `base_config()` and change a few
fields; every trainer default lives here, read by attribute, never with
`config.get(key, default)` in the trainer.
"""

import ml_collections

from mlheads import errors


def head(kind: str, target: str, weight: float = 1.0, source: str = 'features',
         loss: str | None = None, **options) -> dict:
  """One output's config: `config.heads.<name>`.

  Args:
    kind: a name in model.heads.HEADS.
    target: the data set key it predicts.
    weight: its loss weight.
    source: 'features' or a trunk intermediate (e.g. 'lstm').
    loss: a name in model.losses.LOSSES; None for the head's default (stored as '', a
      string, so that `--config.heads.<name>.loss=focal` can override it).
    **options: the loss' keyword options (pos_weight, gamma, ...).
  """
  return dict(kind=kind, target=target, weight=weight, source=source, loss=loss or '',
              num_classes=0, loss_options=dict(options))


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
  c.data.split = 'random'  # or 'stratified' (iterative stratification; data/splits.py)

  # Evaluation: calibration fitted on validation ('platt', 'temperature' or 'none'), and
  # the propensity model of PSP@k / PSnDCG@k (Jain et al. 2016: A = 0.55, B = 1.5).
  c.evaluation = ml_collections.ConfigDict(
      {'calibration': 'platt', 'propensity_a': 0.55, 'propensity_b': 1.5})

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
  need(config.batch_size % num_devices == 0,
       f'--config.batch_size={config.batch_size} is not divisible by the {num_devices} devices')
  need(config.eval_batch_size % num_devices == 0,
       f'--config.eval_batch_size={config.eval_batch_size} is not divisible by the '
       f'{num_devices} devices')
  need(len(config.heads) > 0, 'the config names no heads (config.heads is empty)')
  for name, h in config.heads.items():
    need(h.weight >= 0, f'--config.heads.{name}.weight must be >= 0, got {h.weight}')
