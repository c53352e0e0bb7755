"""Experiment files: `./launch.sh list` (each with the first line of its docstring), and loading
one's config the way the command line does.

An experiment is `experiments/NAME.py` (in the checkout) or any Python file with a
`get_config()` returning an `ml_collections.ConfigDict`.
"""

import ast
import importlib.util
import os
import pathlib
import re

from mlheads import errors

ROOT = pathlib.Path(__file__).resolve().parents[2] / 'experiments'


def experiments() -> dict[str, str]:
  out = {}
  for path in sorted(ROOT.glob('*.py')):
    if path.name.startswith('_'):
      continue
    doc = ast.get_docstring(ast.parse(path.read_text(encoding='utf-8'))) or ''
    out[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ''
  return out


def path(name: str) -> str:
  """experiments/NAME.py for a plain name (checked as launch.sh checks it), or the path of an
  experiment file ('my_exp.py', 'dir/my_exp.py')."""
  if name and name.endswith('.py'):
    if not os.path.isfile(name):
      raise errors.UsageError(f'experiment file {name}: no such file')
    return name
  found = ROOT / f'{name}.py'
  if not re.fullmatch(r'[a-z][a-z0-9_]*', name or '') or not found.is_file():
    raise errors.UsageError(f'unknown experiment {name!r}; known: {sorted(experiments())}')
  return str(found)


def load(name: str):
  """The experiment file as a module.

  The file is run with importlib's `exec_module` (ml_collections' config_file flag still uses
  the deprecated `load_module`), under a module name of its own, so an experiment file may
  import `experiments.<other>` and another file named like it does not shadow it.
  """
  file = path(name)
  stem = pathlib.Path(file).stem
  spec = importlib.util.spec_from_file_location(f'mlheads_experiment_{stem}', file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(name: str):
  """The experiment's `get_config()`, unlocked."""
  module = load(name)
  file = path(name)
  if not callable(getattr(module, 'get_config', None)):
    raise errors.UsageError(f'experiment file {file} has no get_config()')
  return module.get_config()


if __name__ == '__main__':
  exps = experiments()
  width = max(map(len, exps), default=0)
  for name, line in exps.items():
    print(f'  {name:<{width}}  {line}')
