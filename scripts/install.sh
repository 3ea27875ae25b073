#!/usr/bin/env bash
# Set up neuroprune-fairseq on a fresh machine (Python 3.11, CPU or GPU).
#   bash scripts/install.sh            -> creates ./.venv and installs everything
#   VENV=/path bash scripts/install.sh -> another place; VENV=none -> the current python
# Why the steps are separate:
#  * torch first and pinned: 2.13.0 is the version tested (a CPU wheel on our machines).
#    GPU users: install your CUDA build of torch first and set TORCH_SPEC=none.
#  * fairseq 0.12.2 does not import on Python 3.11; ve-fairseq 0.12.3 is a prebuilt
#    cp311 wheel of fairseq that does. It is installed with --no-deps because it asks for
#    torchaudio, whose registry build is CUDA-only and breaks the CPU torch (and
#    transformers' BERT import); fairseq's translation path does not need it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
FAIRSEQ_SPEC=${FAIRSEQ_SPEC:-ve-fairseq==0.12.3}
EXTRAS=${EXTRAS:-hf,plot,recipes,test}
if [ "$VENV" != none ]; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  PY="$VENV/bin/python"
else
  PY=python3
fi
pip_() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
[ "$TORCH_SPEC" = none ] || pip_ "$TORCH_SPEC"
pip_ --no-deps "$FAIRSEQ_SPEC"
pip_ -e ".[$EXTRAS]"
"$PY" -c "import torch, fairseq; print('neuroprune-fairseq ready: torch', torch.__version__, '| fairseq', fairseq.__version__)"
