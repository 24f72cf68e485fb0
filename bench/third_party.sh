#!/usr/bin/env bash
# Side-by-side benchmark: python scim2-client versus scimsync, the same N users
# pushed into python-scim scim2-server on this machine, in one run.
#
#   bench/third_party.sh [N] [REPEATS]        (defaults: 2000 users, 3 repeats)
#
# Makes (or reuses) the virtual environment target/scim2-venv with the pinned
# packages of bench/requirements.txt, builds scimsync in release mode, then runs
# bench/third_party.py, which prints every measurement and the medians.
# Everything listens on 127.0.0.1 only. Not part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-2000}"
REPEATS="${2:-3}"
VENV=target/scim2-venv

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements.txt

cargo build --release --locked --quiet

echo "machine: $(nproc) cores; $(uname -sr); $(date -u +%Y-%m-%dT%H:%MZ)"
echo "scimsync: $(git rev-parse --short HEAD 2>/dev/null || echo '?'); python: $("$VENV/bin/python" --version)"
exec "$VENV/bin/python" -W ignore::DeprecationWarning bench/third_party.py \
    --scimsync target/release/scimsync --venv-bin "$VENV/bin" \
    -n "$N" --repeats "$REPEATS" --json target/third_party_bench.json
