"""The defaults every experiment starts from, and the checks run before anything else.

Experiment files (experiments/*.py) call `base_config()` and change a few
fields; every trainer default lives here, read by attribute, never with
`config.get(key, default)` in the trainer.
"""

import ml_collections
from ml_collections import config_dict

from mlheads import errors
from mlheads.model import settings as settings_lib


def head(kind: str, target: str, weight: float = 1.0, source: str = 'features',
         loss: str | None = None, **options) -> dict:
  """One output's config: `config.heads.<name>`.

  It carries every loss' options (`loss_options`) and every head kind's own settings at their
  defaults, so that the command line reaches all of them whatever the experiment chose:
  `--config.heads.<name>.loss=focal --config.heads.<name>.loss_options.gamma=1.0`,
  `--config.heads.<name>.kind=powerset --config.heads.<name>.min_count=5`.

  Args:
    kind: a name in model.heads.HEADS.
    target: the data set key it predicts.
    weight: its loss weight.
    source: 'features' or a trunk intermediate (e.g. 'lstm').
    loss: a name in model.losses.LOSSES; None for the head's default (stored as '', a
      string, so that `--config.heads.<name>.loss=focal` can override it).
    **options: loss options (pos_weight, gamma, ...) and head settings (none_class,
      min_count, `add`: '' or a trunk intermediate added to the logits, the `bag` trunk's
      `'wide'`, ...) that differ from their defaults.
  """
  loss_options = settings_lib.loss_config()
  settings = settings_lib.head_config()
  for name, value in options.items():
    group = loss_options if name in loss_options else settings if name in settings else None
    if group is None:
      raise errors.UsageError(f'configs.head: unknown option {name!r}; loss options are '
                              f'{sorted(loss_options)}, head settings {sorted(settings)}')
    if isinstance(group[name], config_dict.FieldReference):
      group[name].set(value)  # keeps the reference's type: 'balanced' stays settable.
    else:
      group[name] = value
  return dict(kind=kind, target=target, weight=weight, source=source, loss=loss or '',
              num_classes=0, loss_options=loss_options, **settings)


def trunk(kind: str, **settings) -> dict:
  """`config.trunk`: the kind ('' = chosen by the data set: text if it has tokens, conv for
  images, else an MLP) and every trunk's settings, `settings` overriding their defaults, so
  that `--config.trunk.kind=ANY` and that trunk's settings work from the command line."""
  return settings_lib.trunk_config(kind, **settings)


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
  c.dtype = 'float32'  # compute dtype: 'float32' or 'bfloat16' (params, optimizer, loss: float32)
  c.log_every_steps = 50  # host syncs (loss read, finiteness check) happen only here.
  c.eval_every_epochs = 1
  c.checkpoint_every_epochs = 1
  # Early stopping: stop once the best metric on validation has not improved for this many
  # epochs; the final evaluation uses the best checkpoint. 0 = off.
  c.patience = 0
  # OUTPUT/METRIC on validation, e.g. 'main/roc_auc_macro'; '' = the first output's mAP (loss
  # for a regression output).
  c.best_metric = ''
  c.progress = True  # tqdm bar on stderr.
  # After the run, also fit the classical baselines (mlheads.baselines: label prior, TF-IDF +
  # logistic regression) on the same splits; metrics.json gets 'baseline', the run prints both.
  c.baseline = False
  # After the run, blend the network's probabilities with that logistic model's, the weight
  # per output chosen on validation (mlheads.ensemble); metrics.json's sections are the blend's.
  c.ensemble = False

  c.data = ml_collections.ConfigDict()
  c.data.name = ''
  c.data.dir = ''  # '' = the tfds default data dir.
  c.data.vocab_size = 10_000
  c.data.max_len = 100
  c.data.max_rows = 0  # 0 = all rows; a small number for quick checks.
  c.data.split = 'random'  # or 'stratified' (iterative stratification; data/splits.py)
  # Text data sets also record hashed word bigrams (max_len of them) and character 3-5-grams
  # (max_ngrams), ids in [1, hash_buckets]: what the `bag` trunk reads (data/ngrams.py).
  c.data.max_ngrams = 512
  c.data.hash_buckets = 2**18

  # Evaluation: calibration fitted on validation ('platt', 'temperature' or 'none'), and
  # the propensity model of PSP@k / PSnDCG@k (Jain et al. 2016: A = 0.55, B = 1.5).
  c.evaluation = ml_collections.ConfigDict(
      {'calibration': 'platt', 'propensity_a': 0.55, 'propensity_b': 1.5})

  c.trunk = trunk('')
  c.heads = ml_collections.ConfigDict()
  return c


# The ranges of the settings every experiment has (B26); a data set checks its own `data.*`
# settings, each trunk, head and loss its own (model/*.py). Bounds are generous: they refuse
# nonsense (a width of 0, a batch of a billion), not unusual choices.
INT32 = 2**31 - 1
RANGES = {
    'seed': errors.Range(0, INT32, integer=True),
    'epochs': errors.Range(1, 100_000, integer=True),
    'batch_size': errors.Range(1, 2**20, integer=True),
    'eval_batch_size': errors.Range(1, 2**20, integer=True),
    'learning_rate': errors.Range(0, low_open=True),  # a huge one diverges: exit 3 (B21).
    'grad_clip': errors.Range(0),  # 0 = off; a huge value never clips.
    'log_every_steps': errors.Range(1, INT32, integer=True),
    'eval_every_epochs': errors.Range(1, INT32, integer=True),
    'checkpoint_every_epochs': errors.Range(1, INT32, integer=True),
    'patience': errors.Range(0, INT32, integer=True),  # 0 = off.
    'data.vocab_size': errors.Range(2, 2**24, integer=True),  # ids 0 and 1: padding, unknown.
    'weight_decay': errors.Range(0, 1),  # adamw's, decoupled (x learning rate per step).
    # 0: from the train split (from_csv); the other text data sets need a length (base.py).
    'data.max_len': errors.Range(0, 100_000, integer=True),
    'data.max_ngrams': errors.Range(0, 100_000, integer=True),
    'data.hash_buckets': errors.Range(1, 2**24, integer=True),
    'data.max_rows': errors.Range(0, INT32, integer=True),  # 0 = all rows.
    'heads.*.weight': errors.Range(0, 1e6),
    'heads.*.num_classes': errors.Range(0, 2**24, integer=True),  # 0 = the target's width.
    # Jain et al.'s propensity model: p = 1 / (1 + C (N_l + B)^-A), C = (ln N - 1)(B + 1)^A.
    'evaluation.propensity_a': errors.Range(0, 10, low_open=True),
    'evaluation.propensity_b': errors.Range(0, 1e6),
}


def settings_at(config, key: str) -> list[tuple[str, object]]:
  """(dotted path, value) of each setting `key` names; a `*` part matches every key there."""
  found = [('', config)]
  for part in key.split('.'):
    found = [(f'{path}.{k}' if path else k, node[k]) for path, node in found
             if hasattr(node, 'keys') for k in (node.keys() if part == '*' else [part])
             if k in node]
  return found


def validate(config, num_devices: int = 1) -> None:
  """Rejects bad values before any data is read or anything compiles (B15, B26).

  Every setting of RANGES that the config has is checked here; names (trunk, heads, losses,
  optimizer, data set) are checked where they are looked up, in their registries, and each
  trunk, head, loss and data set checks its own settings; `train.check_config` runs them all
  before any data is read.
  """
  def need(ok, msg):
    if not ok:
      raise errors.UsageError(msg)

  for key, allowed in RANGES.items():
    for path, value in settings_at(config, key):
      allowed.check(f'--config.{path}', value)
  need(config.weight_decay == 0 or config.optimizer == 'adamw',
       f'--config.weight_decay={config.weight_decay} needs --config.optimizer=adamw (decoupled '
       f'decay); --config.optimizer is {config.optimizer!r}')
  need(config.batch_size % num_devices == 0,
       f'--config.batch_size={config.batch_size} is not divisible by the {num_devices} devices')
  need(config.eval_batch_size % num_devices == 0,
       f'--config.eval_batch_size={config.eval_batch_size} is not divisible by the '
       f'{num_devices} devices')
  need(config.dtype in ('float32', 'bfloat16'),
       f"--config.dtype must be 'float32' or 'bfloat16', got {config.dtype!r}")
  need(len(config.heads) > 0, 'the config names no heads (config.heads is empty)')
