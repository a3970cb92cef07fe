#!/usr/bin/env bash
# Drift on purpose: install the project with the newest releases its pyproject allows (no constraints) into a
# throw-away venv, run the unit tests there, and print every package whose version differs from constraints.txt.
# Exit status: the unit tests'. If they pass, scripts/lock.sh in a venv built this way moves the pins forward.
set -uo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d /tmp/testbed-drift.XXXXXX)
trap 'rm -rf "$venv"' EXIT
python3.11 -m venv "$venv" && "$venv/bin/pip" install -q --upgrade-strategy eager -e '.[dev]' || exit 1
"$venv/bin/pip" freeze --exclude-editable 2>/dev/null | sort > "$venv/newest.txt"
grep '==' constraints.txt | sort > "$venv/pinned.txt"
echo "pinned -> newest:"
join -t= -j1 <(sed 's/==/=/' "$venv/pinned.txt" | sort -t= -k1,1) <(sed 's/==/=/' "$venv/newest.txt" | sort -t= -k1,1) |
  awk -F= '$2 != $3 {print "  " $1 ": " $2 " -> " $3}'
"$venv/bin/python" -m pytest -q tests/unit
