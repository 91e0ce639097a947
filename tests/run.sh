#!/usr/bin/env bash
# Set up and run the test suite (the README's second command; .ci/run calls this).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
export CUTTLEFISH_DATA="${CUTTLEFISH_DATA:-$(cd .. && pwd)/shared/datasets/mnist}"
python3 -m pytest -q -p no:cacheprovider tests/unit tests/contract "$@"
