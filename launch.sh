#!/usr/bin/env bash
# mlheads launcher: makes its own environment, then runs an experiment or a tool.
#
#   ./launch.sh EXPERIMENT [--config.key=value ...] [--workdir=DIR]
#   ./launch.sh test [pytest args]      the whole test suite
#   ./launch.sh list                    experiments and what they do
#   ./launch.sh bench                   speed benchmarks (JSON lines)
#   ./launch.sh score --labels=L --scores=S [--from_logits] [--output=M.json]  (alias: evaluate)
#   ./launch.sh predict --workdir=RUN --input=FILE.csv --output=OUT.csv [--top_k=K|--threshold=T]
#   ./launch.sh compare EXPERIMENT --grid=KEY=V1,V2 [--seeds=0,1,2] [--set=KEY=V] [--workdir=DIR]
#   ./launch.sh synthetic --rows=N --output=F.csv   a synthetic multi-label table (scale tests)
#   ./launch.sh tables [--out=DIR] [--only=a,b]   real multi-label CSVs from packaged tables
#   ./launch.sh tune EXPERIMENT [--grid='KEY=V1,V2;KEY2=W1,W2'] [--seeds=0] [--config.KEY=V] [--workdir=DIR]
#   ./launch.sh cv EXPERIMENT --folds=5 [--config.key=value ...] [--workdir=DIR]   (k-fold)
#   ./launch.sh EXPERIMENT --dry_run [--config.key=value ...]   check, print the plan, no training
#   ./launch.sh baseline EXPERIMENT [--config.key=value ...] [--workdir=DIR]   prior, TF-IDF + LR
#   ./launch.sh compare_heads [--config.quick=True] [--workdir=DIR]   every head -> results/
#   ./launch.sh score|predict|compare|tune|cv|baseline|compare_heads|synthetic|tables --help  its flags
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
cd "$root"
venv=${MLHEADS_VENV:-$root/.venv}
python=${PYTHON:-python3}

ensure_venv() {
  local stamp="$venv/.requirements.sha256" want
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [[ -x $venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    return
  fi
  echo "launch.sh: setting up $venv from requirements.txt (first run only, a few minutes)..." >&2
  [[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
  # pip's own chatter goes to a log; shown only if the install fails.
  local log="$venv/pip-install.log"
  if ! { "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
         "$venv/bin/python" -m pip install --disable-pip-version-check -r requirements.txt; } \
         >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "launch.sh: installing requirements.txt failed (full log: $log)" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
  echo "launch.sh: environment ready." >&2
}

list_experiments() {
  "$venv/bin/python" -m mlheads.commands.experiments
}

cmd=${1:-}
if [[ -z $cmd || $cmd == -h || $cmd == --help ]]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
shift
ensure_venv
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
# Quiet TF-less tfds and absl start-up chatter; JAX picks the accelerator it finds.
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
# glibc serves each large buffer XLA:CPU allocates a step with a fresh mmap, so every step
# page-faults it in again: ~11,000 faults and ~30 ms of kernel time a headline step at batch
# 256. Keeping freed memory in the one heap ends that (the step 75 -> 61 ms; Keras 3 in the same
# environment gains as much: notes/perf.md). Ignored where the C library is not glibc.
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296:glibc.malloc.arena_max=1}

# `COMMAND --help`: the command's own flags (absl's --helpshort), not every library's.
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  case $cmd in
    score|evaluate) exec "$venv/bin/python" -m mlheads.commands.score --helpshort ;;
    predict|compare|tune|cv|baseline|compare_heads|synthetic|tables)
      exec "$venv/bin/python" -m "mlheads.commands.$cmd" --helpshort ;;
  esac
fi

case $cmd in
  test) exec "$venv/bin/python" -m pytest -q "$@" ;;  # pyproject: testpaths = tests
  list) list_experiments; exit 0 ;;
  bench) exec "$venv/bin/python" -m mlheads.commands.bench "$@" ;;
  score|evaluate) exec "$venv/bin/python" -m mlheads.commands.score "$@" ;;
  predict) exec "$venv/bin/python" -m mlheads.commands.predict "$@" ;;
  synthetic) exec "$venv/bin/python" -m mlheads.commands.synthetic "$@" ;;
  tables) exec "$venv/bin/python" -m mlheads.commands.tables "$@" ;;
  compare_heads) exec "$venv/bin/python" -m mlheads.commands.compare_heads "$@" ;;
  compare|tune|cv|baseline)
    # The experiment is the first argument, checked as below; the rest are the command's flags.
    name=${1:-}
    if [[ ! $name =~ ^[a-z][a-z0-9_]*$ || ! -f experiments/$name.py ]]; then
      echo "launch.sh: $cmd: unknown experiment '$name'. Known experiments:" >&2
      list_experiments >&2
      exit 2
    fi
    shift
    if [[ $cmd == cv || $cmd == baseline ]]; then
      exec "$venv/bin/python" -m "mlheads.commands.$cmd" --config="experiments/$name.py" \
        --experiment="$name" "$@"
    fi
    exec "$venv/bin/python" -m "mlheads.commands.$cmd" --experiment="$name" "$@" ;;
esac

# An experiment: a plain name of a file in experiments/, nothing else.
if [[ ! $cmd =~ ^[a-z][a-z0-9_]*$ || ! -f experiments/$cmd.py ]]; then
  echo "launch.sh: unknown experiment '$cmd'. Known experiments:" >&2
  list_experiments >&2
  exit 2
fi
exec "$venv/bin/python" -m mlheads.main --config="experiments/$cmd.py" --experiment="$cmd" "$@"
