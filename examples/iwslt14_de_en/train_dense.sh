#!/usr/bin/env bash
# Dense pretraining of the paper's MT model (6+6 layers, 6 heads in all 18 attention
# modules = 108 heads, d=528, FFN 1024): 15 epochs, fairseq's IWSLT transformer recipe.
#   DATA=OUT_DIR SAVE=checkpoints/iwslt14/dense bash examples/iwslt14_de_en/train_dense.sh [extra fairseq args]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the prepare.sh output folder}
SAVE=${SAVE:-checkpoints/iwslt14/dense}
EPOCHS=${EPOCHS:-15}
exec fairseq-train "$DATA/bin" --user-dir neuroprune_fairseq \
  --task neuroprune_translation --np-no-head-pruning --source-lang de --target-lang en \
  --arch neuroprune_iwslt_de_en --share-decoder-input-output-embed \
  --optimizer adam --adam-betas '(0.9,0.98)' --clip-norm 0.0 \
  --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 4000 \
  --dropout 0.3 --weight-decay 0.0001 \
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
  --max-tokens 4096 --max-epoch "$EPOCHS" \
  --save-dir "$SAVE" --no-epoch-checkpoints --log-format simple --log-interval 100 --seed 1 "$@"
