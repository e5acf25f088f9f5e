#!/usr/bin/env bash
# The long nemesis run: random faults against a 5-node cluster for
# RAILYARD_SOAK_MINUTES (default 20), every client operation checked.
#
#   scripts/soak.sh                      # 20 minutes, random seed (printed)
#   RAILYARD_SOAK_MINUTES=60 scripts/soak.sh
#   RAILYARD_NEMESIS_SEED=1234 scripts/soak.sh   # replay a fault schedule
#
# Each run's figures are appended as one JSON line to $RAILYARD_FAULTS_REPORT
# (default: soak-report.jsonl in the current directory).
set -euo pipefail
cd "$(dirname "$0")/.."
export RAILYARD_SOAK_MINUTES="${RAILYARD_SOAK_MINUTES:-20}"
export RAILYARD_FAULTS_REPORT="${RAILYARD_FAULTS_REPORT:-$PWD/soak-report.jsonl}"
echo "soak: ${RAILYARD_SOAK_MINUTES} minutes; report -> ${RAILYARD_FAULTS_REPORT}"
exec .venv/bin/pytest -m soak -p no:cacheprovider -s tests/faults "$@"
