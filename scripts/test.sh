#!/usr/bin/env bash
# The whole test suite, from a fresh clone: a virtualenv with the test and lint tools,
# lint (ruff + mypy), then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${LAUNCHCTL_TEST_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  echo "test.sh: creating $venv" >&2
  python3 -m venv "$venv"
fi
echo "test.sh: installing launchctl with its test and lint dependencies" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,dev]' 2> >(grep -v "is ignored: it is neither" >&2)

# A real Docker engine, base images and a registry for the container tests: started
# when missing, reused when present. Tests that need them skip, saying why, if not.
if [ "${LAUNCHCTL_SKIP_SERVICES:-}" != "1" ]; then
  echo "test.sh: services (Docker engine, base images, registry)" >&2
  if ! ./scripts/services.sh all; then
    echo "test.sh: WARNING: services could not be started; container tests will skip" >&2
  fi
  echo "test.sh: services (a one-node Slurm cluster)" >&2
  if ! ./scripts/services.sh slurm; then
    echo "test.sh: WARNING: Slurm could not be started; tests/slurm will skip" >&2
  fi
fi

echo "test.sh: lint (ruff, mypy)" >&2
"$venv/bin/ruff" check launchctl tests noxfile.py benchmarks
"$venv/bin/ruff" format --check launchctl tests noxfile.py benchmarks
"$venv/bin/mypy"

echo "test.sh: pytest" >&2
exec "$venv/bin/python" -m pytest "$@"
