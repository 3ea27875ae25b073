#!/usr/bin/env bash
# Finalize a checkpoint and evaluate it on the 6,750-sentence test set, beam 5:
# sacrebleu (lowercase, 13a) on Moses-detokenized output, with its signature, and the
# tokenized BLEU that fairseq/DSP papers report (labelled bleu_tok). Fails on a
# hypothesis/reference count mismatch.
#   DATA=OUT_DIR bash examples/iwslt14_de_en/evaluate.sh CKPT [--threshold 1e-3] [--json out.json]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the prepare.sh output folder}
CKPT=${1:?usage: evaluate.sh CHECKPOINT [evaluate.py options]}; shift
exec "${PYTHON:-python}" scripts/evaluate.py --dataset iwslt14 --prep-dir "$DATA" --path "$CKPT" --finalize "$@"
