"""`./launch.sh list`: each experiment with the first line of its docstring."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2] / 'experiments'


def experiments() -> dict[str, str]:
  out = {}
  for path in sorted(ROOT.glob('*.py')):
    if path.name.startswith('_'):
      continue
    doc = ast.get_docstring(ast.parse(path.read_text(encoding='utf-8'))) or ''
    out[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ''
  return out


if __name__ == '__main__':
  exps = experiments()
  width = max(map(len, exps), default=0)
  for name, line in exps.items():
    print(f'  {name:<{width}}  {line}')
