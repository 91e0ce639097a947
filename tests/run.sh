#!/usr/bin/env bash
# Set up and run the test suite (the README's second command; .ci/run calls this): ruff, mypy, then pytest.
# With Docker at hand it first builds the images from Debian packages (compose/build-images.sh, once per
# run: present images are reused) and installs the compose v2 plugin if missing; under CI=true a missing
# Docker engine fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
export CUTTLEFISH_DATA="${CUTTLEFISH_DATA:-$(cd .. && pwd)/shared/datasets/mnist}"
ci=false
case "${CI:-}" in 1|true|TRUE|True|yes) ci=true ;; esac
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    eval "$(bash compose/build-images.sh)"
    docker compose version >/dev/null 2>&1 || bash compose/install-compose-v2.sh >/dev/null
    # the TLS test makes a self-signed certificate
    if ! command -v openssl >/dev/null && [[ $(id -u) == 0 ]]; then
        apt-get install -y -qq openssl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
    fi
elif [[ $ci == true ]]; then
    echo "tests/run.sh: CI=true needs a running Docker engine for the service tests" >&2
    exit 1
else
    echo "tests/run.sh: no Docker engine; tests that need RabbitMQ or Redis will skip" >&2
fi
# lint (imports, pyflakes, bugbear) and types first: a broken import fails in seconds, not after the suite
python3 -m ruff check .
python3 -m mypy
python3 -m pytest -q -p no:cacheprovider tests/unit tests/contract tests/integration tests/e2e "$@"
