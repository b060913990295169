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
# Byte-compiled as a regular install is: an editable install writes no .pyc, and where
# PYTHONDONTWRITEBYTECODE is set (as on these machines) every `launchctl` the tests start
# would compile each module it imports again, 60-80 ms a call over thousands of calls.
"$venv/bin/python" -m compileall -q launchctl > /dev/null

# A real Docker engine, base images, a registry and a one-node Slurm cluster for the
# container and cluster tests: started when missing, reused when present. On a laptop the
# tests that need a missing one skip, saying why; under CI (CI=true) or with
# LAUNCHCTL_REQUIRE_SERVICES=1 a missing service fails the run here, in one line, and
# tests/conftest.py turns those tests' skips into failures.
required=0
case "${CI:-}" in [Tt][Rr][Uu][Ee] | 1 | [Yy][Ee][Ss]) required=1 ;; esac
[ "${LAUNCHCTL_REQUIRE_SERVICES:-}" = 1 ] && required=1
if [ "${LAUNCHCTL_SKIP_SERVICES:-}" != "1" ]; then
  echo "test.sh: services (Docker engine, base images, registry)" >&2
  ./scripts/services.sh all || echo "test.sh: WARNING: scripts/services.sh all failed" >&2
  echo "test.sh: services (a one-node Slurm cluster)" >&2
  ./scripts/services.sh slurm || echo "test.sh: WARNING: scripts/services.sh slurm failed" >&2
  echo "test.sh: services (Debian's chromium and chromium-driver, for the web view's browser tests)" >&2
  ./scripts/services.sh chromium || echo "test.sh: WARNING: scripts/services.sh chromium failed" >&2
fi
# What the tests will find missing, looked for as they look (the engine DOCKER_HOST names).
missing=$("$venv/bin/python" - <<'PY'
import os, subprocess, urllib.request
missing = []
try:
    import docker
    client = docker.from_env(timeout=20)
    client.ping()
except Exception:
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    missing.append(f"the Docker engine (nothing answers on {where})")
else:
    for image in ("launchctl-test/python:bookworm", "launchctl-test/busybox:latest"):
        try:
            client.images.get(image)
        except Exception:
            missing.append(f"the base image {image}")
try:
    urllib.request.urlopen("http://127.0.0.1:5000/v2/", timeout=5).close()
except OSError:
    missing.append("the registry on 127.0.0.1:5000")
try:
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    up = out.returncode == 0 and {"idle", "mixed", "allocated"} & set(out.stdout.split())
except (OSError, subprocess.TimeoutExpired):
    up = False
if not up:
    missing.append("the Slurm cluster (sinfo shows no idle node)")
for path in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
    if not os.access(path, os.X_OK):
        missing.append(f"{path} (Debian's chromium, chromium-driver)")
print("; ".join(missing))
PY
)
if [ -n "$missing" ]; then
  if [ "$required" = 1 ]; then
    echo "test.sh: ERROR: a required service is missing (CI or LAUNCHCTL_REQUIRE_SERVICES=1): $missing; see scripts/services.sh" >&2
    exit 1
  fi
  echo "test.sh: WARNING: missing: $missing; the tests that need them skip, saying why" >&2
fi

echo "test.sh: lint (ruff, mypy)" >&2
"$venv/bin/ruff" check launchctl tests noxfile.py benchmarks scripts examples
"$venv/bin/ruff" format --check launchctl tests noxfile.py benchmarks scripts examples
"$venv/bin/mypy"

# The Slurm tests mostly wait on slurmctld (its limits are checked every 30 s; two of
# them take a minute each): the whole suite runs them in a second pytest beside the rest,
# on their own base folder. Arguments that name tests (a path, a node id) run as given.
split=1
[ "${LAUNCHCTL_TEST_SPLIT:-1}" = 0 ] && split=0
for arg in "$@"; do
  case "$arg" in tests | tests/* | ./tests* | *.py | *::*) split=0 ;; esac
  [ -e "$arg" ] && split=0
done
if [ "$split" = 0 ] || [ ! -d tests/slurm ]; then
  echo "test.sh: pytest" >&2
  exec "$venv/bin/python" -m pytest "$@"
fi
lane=$(mktemp -d -t launchctl-slurm-lane.XXXXXX)
echo "test.sh: pytest (tests/slurm beside the rest; its output follows theirs)" >&2
"$venv/bin/python" -m pytest tests/slurm --basetemp "$lane/tmp" "$@" \
  > "$lane/out.txt" 2>&1 &
slurm_pid=$!
trap 'kill "$slurm_pid" 2>/dev/null || true' INT TERM
set +e
"$venv/bin/python" -m pytest --ignore=tests/slurm "$@"
rest=$?
wait "$slurm_pid"
slurm=$?
set -e
echo "test.sh: tests/slurm (run beside the rest), exit $slurm:" >&2
cat "$lane/out.txt"
rm -rf "$lane"
# 5: no test collected (a -k that picks none of one half) is not a failure of that half.
[ "$rest" = 5 ] && [ "$slurm" != 5 ] && rest=0
[ "$slurm" = 5 ] && slurm=0
[ "$rest" != 0 ] && exit "$rest"
exit "$slurm"
