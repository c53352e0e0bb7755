"""The package's shape: dependencies point one way, no import cycles, no oversized modules,
and every fault code the code cites is defined in docs/faults.md."""

import ast
import pathlib
import re

from conftest import ROOT

PACKAGE = pathlib.Path(ROOT) / 'mlheads'
# Who may import whom: api -> commands -> train -> ensemble -> baselines -> model / data /
# evaluation / state -> errors. A module of a layer imports modules of its own layer or of
# layers to its right.
LAYERS = ('api', 'commands', 'main', 'train', 'ensemble', 'baselines', 'evaluation', 'state',
          'model', 'data', 'configs', 'optimizers', 'sharding', 'distributed', 'console',
          'errors')
BELOW = {
    'api': set(LAYERS) - {'main'},
    'commands': set(LAYERS) - {'api', 'main'},
    'main': {'train', 'distributed', 'console', 'errors'},
    'train': set(LAYERS) - {'api', 'commands', 'main', 'train'},
    'ensemble': {'baselines', 'evaluation', 'state', 'model', 'data', 'errors'},
    'baselines': {'evaluation', 'state', 'model', 'data', 'errors'},
    'evaluation': {'evaluation', 'state', 'model', 'data', 'errors'},
    'state': {'state', 'model', 'data', 'errors'},
    'model': {'model', 'errors'},
    'data': {'data', 'errors'},
    'configs': {'model', 'errors'},
    'optimizers': {'errors'},
    'sharding': set(),
    'distributed': {'errors'},
    'console': set(),
    'errors': set(),
}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports() -> dict[str, set[str]]:
  """mlheads module -> the mlheads modules it imports (at any depth of the file)."""
  modules = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
  graph = {}
  for name, path in modules.items():
    deps = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
      if isinstance(node, ast.Import):
        deps |= {a.name for a in node.names if a.name.startswith('mlheads')}
      elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('mlheads'):
        for a in node.names:
          full = f'{node.module}.{a.name}'
          deps.add(full if full in modules else node.module)
    graph[name] = {d for d in deps if d in modules and d != name}
  return graph


def _layer(module: str) -> str:
  return module.split('.')[1] if module.count('.') else 'package'


def test_no_import_cycles():
  graph = _imports()
  state, cycles = {}, []

  def visit(m, path):
    state[m] = 'open'
    for d in sorted(graph[m]):
      if state.get(d) == 'open':
        cycles.append(path[path.index(d):] + [d] if d in path else [m, d])
      elif d not in state:
        visit(d, path + [d])
    state[m] = 'done'

  for m in sorted(graph):
    if m not in state:
      visit(m, [m])
  assert not cycles, cycles


def test_dependencies_point_one_way():
  wrong = [f'{m} imports {d}' for m, deps in _imports().items() for d in deps
           if _layer(m) in BELOW and _layer(d) != 'package'
           and _layer(d) not in BELOW[_layer(m)] and _layer(d) != _layer(m)]
  assert not wrong, wrong


def test_every_module_is_under_400_lines():
  long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob('*.py')
          if (n := len(p.read_text(encoding='utf-8').splitlines())) > 400}
  assert not long, long


def test_every_fault_code_cited_is_defined_in_docs_faults():
  faults = (pathlib.Path(ROOT) / 'docs' / 'faults.md').read_text(encoding='utf-8')
  defined = set(re.findall(r'\|\s*(B\d\d)\s*\|', faults))
  cited = {}
  for path in list(PACKAGE.rglob('*.py')) + list((pathlib.Path(ROOT) / 'tests').rglob('*.py')):
    for code in re.findall(r'\bB\d\d\b', path.read_text(encoding='utf-8')):
      cited.setdefault(code, str(path.relative_to(ROOT)))
  missing = {c: where for c, where in cited.items() if c not in defined}
  assert defined and not missing, missing
