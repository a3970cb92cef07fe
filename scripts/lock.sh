#!/usr/bin/env bash
# Write constraints.txt from the project's venv (run it after the suite passed on that venv): every installed
# distribution at its exact version, the project itself left out.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# The package set the suite is known green on (Python 3.11, Linux x86-64): every install uses it as constraints,"
  echo "# pip install -c constraints.txt -e '.[dev]'. Regenerate from a green venv with scripts/lock.sh; see what newer releases"
  echo "# would change with scripts/drift.sh."
  .venv/bin/pip freeze --exclude-editable 2>/dev/null
} > constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) pins"
