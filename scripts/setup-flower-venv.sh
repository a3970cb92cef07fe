#!/bin/sh
# A separate virtual environment for `testbed bench fl-flower` only: flwr[simulation] pins its own Ray release,
# which must not replace the testbed's. torch comes from the same local wheel as the main environment.
set -e
cd "$(dirname "$0")/.."
python3.11 -m venv .venv-flower
.venv-flower/bin/pip install -q "torch==2.14.1" "flwr[simulation]>=1.20" numpy
echo "ready: .venv-flower/bin/python"
