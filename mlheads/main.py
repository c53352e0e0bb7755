"""Entry point: `./launch.sh EXPERIMENT [--config.key=value ...] [--workdir=DIR]`.

Kept thin on purpose: it reads the locked experiment config and the workdir,
then hands both to the library (train.train_and_evaluate).
"""

import os
import time

from absl import flags
from absl import logging
from ml_collections import config_flags

from mlheads import console
from mlheads import distributed
from mlheads import errors
from mlheads import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file (experiments/*.py).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Run folder; default runs/<experiment>/<timestamp>.')
flags.DEFINE_string('experiment', None, 'Experiment name, for the default workdir.')
flags.DEFINE_string('coordinator_address', None,
                    'Multi-process runs: host:port of process 0 (jax.distributed). Cluster '
                    'launchers that JAX detects (SLURM, TPU VMs) need only --distributed.')
flags.DEFINE_integer('num_processes', None, 'Multi-process runs: number of processes.')
flags.DEFINE_integer('process_id', None, 'Multi-process runs: this process\' index.')
flags.DEFINE_bool('dry_run', False, 'Check everything, print the resolved config, the data '
                  'set sizes and the parameter table, then exit without training.')
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() (auto-detected '
                  'cluster) even without --coordinator_address.')
flags.mark_flags_as_required(['config'])


def main(argv):
  console.quiet()
  if FLAGS.coordinator_address or FLAGS.distributed:
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {argv[1:]}; settings go as --config.KEY=VALUE')
  name = FLAGS.experiment or 'run'
  config = FLAGS.config
  config.experiment = config.experiment or name
  if FLAGS.dry_run:
    train.dry_run(config)
    return
  workdir = FLAGS.workdir or os.path.join('runs', name, time.strftime('%Y%m%d-%H%M%S'))
  logging.info('Experiment %s, workdir %s, config:\n%s', name, workdir,
               console.config_lines(config))
  summary = train.train_and_evaluate(config, workdir)
  if distributed.is_primary():  # B30: one table, not one per process
    print(console.summary_table(summary, workdir), flush=True)


if __name__ == '__main__':
  errors.run_main(main)
