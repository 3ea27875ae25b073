#!/usr/bin/env bash
# NeuroPrune fine-tuning from the dense model: 15 epochs of task loss + alpha * R_attn +
# beta * R_mlp, redundant heads pruned (physically) after every epoch at l_inf distance theta.
#   DATA=OUT_DIR DENSE=checkpoints/iwslt14/dense ALPHA=0.05 BETA=0.1 THETA=0.2 \
#     bash examples/iwslt14_de_en/train_neuroprune.sh [extra fairseq args]
# PENALTY=l1 gives the paper's l1 baseline (same pruning, plain L1 penalties).
# Head pruning needs fp32 or --memory-efficient-fp16/bf16 (not --fp16); several workers run
# with --ddp-backend c10d (fairseq's default) or legacy_ddp (the task refuses other set-ups).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the prepare.sh output folder}
DENSE=${DENSE:-checkpoints/iwslt14/dense}
ALPHA=${ALPHA:-0.05}; BETA=${BETA:-0.1}; THETA=${THETA:-0.2}; PENALTY=${PENALTY:-neuroprune}
EPOCHS=${EPOCHS:-15}
SAVE=${SAVE:-checkpoints/iwslt14/${PENALTY}_a${ALPHA}_b${BETA}_t${THETA}}
exec fairseq-train "$DATA/bin" --user-dir neuroprune_fairseq \
  --task neuroprune_translation --np-theta "$THETA" --source-lang de --target-lang en \
  --arch neuroprune_iwslt_de_en --share-decoder-input-output-embed \
  --optimizer adam --adam-betas '(0.9,0.98)' --clip-norm 0.0 \
  --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 4000 \
  --dropout 0.3 --weight-decay 0.0001 \
  --criterion neuroprune_ce --np-penalty "$PENALTY" --np-alpha "$ALPHA" --np-beta "$BETA" --label-smoothing 0.1 \
  --finetune-from-model "$DENSE/checkpoint_best.pt" \
  --max-tokens 4096 --max-epoch "$EPOCHS" \
  --save-dir "$SAVE" --no-epoch-checkpoints --log-format simple --log-interval 100 --seed 1 "$@"
