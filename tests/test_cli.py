"""launch.sh and the entry point: overrides, typos and bad names exit 2 with one line."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli

# launch.sh and python -m mlheads.main in subprocesses.
pytestmark = pytest.mark.slow

LAUNCH = str(ROOT / 'launch.sh')


def _launch(*args):
  return subprocess.run([LAUNCH, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                        check=False)


def test_list_shows_experiments_with_their_description():
  r = _launch('list')
  assert r.returncode == 0
  assert 'headline' in r.stdout and 'retweeted' in r.stdout


@pytest.mark.parametrize('name', ['nope', '../experiments/headline', '-rf', 'head line', 'Headline'])
def test_unknown_or_unsafe_experiment_names_exit_2_with_the_list(name):
  """B16: an unknown experiment, `../`, a leading `-` or spaces: exit 2 listing the experiments."""
  r = _launch(name)
  assert r.returncode == 2
  assert 'unknown experiment' in r.stderr and 'headline' in r.stderr


def _main(tmp_path, *overrides):
  workdir = tmp_path / 'run'
  r = run_cli('-m', 'mlheads.main', '--config=experiments/headline.py',
              f'--workdir={workdir}', *overrides)
  return r, workdir


@pytest.mark.parametrize('override,message', [
    ('--config.batch_sise=3', 'batch_sise'),
    ('--config.batch_size=abc', 'batch_size'),
    ('--config.batch_size=0', 'batch_size must be an integer from 1'),
    ('--config.learning_rate=-1', 'learning_rate must be a number > 0'),
    ('--config.heads.aux.weight=-0.5', 'heads.aux.weight must be a number from 0 to'),
    ('--config.optimizer=adamm', "unknown optimizer 'adamm'"),
    ('--config.heads.main.kind=nope', "unknown kind 'nope'"),
    ('--config.trunk.kind=nope', "unknown trunk 'nope'"),
    # B26: valid as a type, not as a value; B27: said in words. The issue's own commands; the
    # other settings' messages are tested in-process (tests/test_settings.py).
    ('--config.trunk.lstm_units=0', 'trunk.lstm_units must be an integer from 1 to 65,536'),
    ('--config.best_metric=main/f1', "output 'main' reports no metric 'f1'"),
    ('--config.data.max_lenn=3', "unknown key 'max_lenn' in config.data; did you mean "
     "'max_len'?"),
])
def test_bad_settings_exit_2_with_one_line_and_write_nothing(tmp_path, override, message):
  """B14, B15: a misspelt key, a wrong type, a bad value or an unknown name: exit 2, one line,
  nothing written."""
  r, workdir = _main(tmp_path, override, '--config.data.dir=/nonexistent-not-used')
  assert r.returncode == 2, r.stderr
  lines = [l for l in r.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and message in lines[0], r.stderr
  assert 'Traceback' not in r.stderr
  assert not workdir.exists()


def test_dry_run_prints_the_plan_and_writes_no_workdir(tmp_path, tweets_dir):
  r, workdir = _main(
      tmp_path, '--dry_run', f'--config.data.dir={tweets_dir}', '--config.data.max_rows=240',
      '--config.data.vocab_size=60', '--config.data.max_len=12', '--config.trunk.embed_dim=8',
      '--config.trunk.lstm_units=4', '--config.trunk.hidden=(8,)', '--config.batch_size=8')
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'config (resolved):' in r.stdout and 'train 192, validation 24, test 24' in r.stdout
  assert 'total parameters:' in r.stdout and 'nothing trained' in r.stdout
  assert not workdir.exists()


def test_a_full_run_from_the_command_line(tmp_path):
  # Its own data dir, so that the data set is prepared in this run; the progress bar on.
  r, workdir = _main(
      tmp_path, f'--config.data.dir={tmp_path / "tfds"}', '--config.data.max_rows=240',
      '--config.data.vocab_size=60', '--config.data.max_len=12', '--config.trunk.embed_dim=8',
      '--config.trunk.lstm_units=4', '--config.trunk.hidden=(8,)', '--config.batch_size=8',
      '--config.epochs=1', '--config.log_every_steps=5', '--config.heads.aux.weight=0.5')
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'Total parameters:' in r.stderr
  saved = json.loads((workdir / 'metrics.json').read_text())
  assert set(saved['test']) == {'main', 'aux'}
  config = json.loads((workdir / 'config.json').read_text())
  assert config['heads']['aux']['weight'] == 0.5
  # Quiet and readable: stdout is the epoch lines and the final table, and says where it wrote.
  assert 'Downloading and preparing' not in r.stdout and 'Generating splits' not in r.stderr
  table = r.stdout[r.stdout.index('output  metric'):]
  for out in ('main', 'aux'):
    val, test = (saved[s][out]['average_precision_macro'] for s in ('validation', 'test'))
    assert re.search(rf'{out} +mAP \(macro AP\) +{val:.4f} +{test:.4f}', table), table
  assert f'{workdir}/metrics.json' in table and 'F1 micro @tuned' in table
  for noise in ('Using custom data configuration', "Unable to initialize backend 'tpu'",
                '!!python', 'has no dataset_info.json'):
    assert noise not in r.stderr, noise
  assert '  trunk.hidden: (8,)' in r.stderr  # the config, as dotted keys
  # Every log line starts a line of its own, never after the progress bar.
  shown = [line.split('\r')[-1] for line in r.stderr.split('\n')]
  assert any('checkpoint step' in l for l in shown)
  glued = [l for l in shown if re.search(r'.[IWE]\d{4} \d\d:\d\d:\d\d', l)]
  assert not glued, glued


def test_bench_with_keras_but_no_reference_script_exits_2_before_timing(tmp_path):
  missing = tmp_path / 'keras_headline.sh'
  r = run_cli('-m', 'mlheads.commands.bench', '--cases=headline', '--keras',
              f'--keras_script={missing}')
  assert r.returncode == 2 and 'Traceback' not in r.stderr
  assert r.stderr.strip().splitlines()[-1] == (
      f'error: --keras_script={missing}: no such file (the Keras reference, '
      'shared/bench/keras_headline.sh: pass its path)')
  assert not r.stdout  # nothing was timed


def test_bench_prints_its_json_lines_without_the_libraries_log():
  # JAX_PLATFORMS unset: JAX then probes the accelerators and logs at INFO when it finds none.
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'} | {'PYTHONPATH': str(ROOT)}
  r = subprocess.run([sys.executable, '-m', 'mlheads.commands.bench', '--cases=metrics',
                      '--rows=200', '--classes=4', '--repeats=1'], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=120, check=False)
  assert r.returncode == 0, r.stderr
  row = json.loads(r.stdout.strip().splitlines()[-1])
  assert row['bench'] == 'metrics' and row['rows'] == 200
  assert not re.search(r'^I\d{4} ', r.stderr, re.M), r.stderr  # no INFO lines


_FAULTS = """
import resource, numpy as np
def faults():  # minor page faults of allocating, writing and freeing 64 MB
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  a = np.ones(1 << 24, np.float32); del a
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(faults(), faults())
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='a glibc setting')
def test_launcher_keeps_freed_large_buffers_in_the_heap():
  """launch.sh's GLIBC_TUNABLES (which glibc ignores silently when misspelt) stop large
  buffers from being page-faulted in afresh each time, as XLA:CPU's are each step."""
  tunables = re.search(r'GLIBC_TUNABLES=\$\{GLIBC_TUNABLES:-([^}]+)\}',
                       (ROOT / 'launch.sh').read_text()).group(1)

  def faults(value):
    env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
    if value:
      env['GLIBC_TUNABLES'] = value
    out = subprocess.run([sys.executable, '-c', _FAULTS], env=env, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    return [int(x) for x in out.split()]

  first, again = faults(tunables)
  assert first > 100 and again < first / 10
  first, again = faults(None)  # glibc's default: the same buffer faults in again
  assert again > first / 2
