#!/usr/bin/env bash
# IWSLT14 de-en as fairseq's prepare-iwslt14.sh (see prepare.py for the details).
#   bash examples/iwslt14_de_en/prepare.sh OUT_DIR [--raw-dir RAW]   (RAW: extracted de-en/ or de-en.tgz)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:?usage: prepare.sh OUT_DIR [--raw-dir RAW]}; shift
exec "${PYTHON:-python}" "$HERE/prepare.py" --out "$OUT" "$@"
