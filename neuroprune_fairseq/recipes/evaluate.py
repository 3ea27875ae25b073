#!/usr/bin/env python
"""Evaluate one checkpoint on a whole test set: optional finalize, beam 5, BLEU.

    python scripts/evaluate.py --dataset multi30k --prep-dir WORK/prep --path CKPT [--finalize --threshold 1e-3]
    python scripts/evaluate.py --dataset iwslt14  --prep-dir IWSLT_OUT  --path CKPT [--finalize]

multi30k: sacrebleu (cased, 13a) on detokenized output vs the raw references.
iwslt14:  sacrebleu (lowercase, 13a) on Moses-detokenized output + tokenized BLEU (as fairseq/DSP).
Fails when the number of hypotheses differs from the number of references. Prints JSON.
"""
import argparse
import json
from pathlib import Path

from neuroprune_fairseq.recipes import common


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["multi30k", "iwslt14"], required=True)
    p.add_argument("--prep-dir", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--subset", default="test")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--finalize", action="store_true", help="finalize first and evaluate the finalised checkpoint")
    p.add_argument("--threshold", type=float, default=1e-3)
    p.add_argument("--json", help="also write the result here")
    a = p.parse_args(argv)
    ckpt = Path(a.path)
    out = {"checkpoint": str(ckpt)}
    if a.finalize:
        fin = ckpt.with_name(ckpt.stem + f".final_t{a.threshold:g}.pt")
        out["finalize"] = common.finalize(ckpt, fin, a.threshold)
        ckpt = fin
    fn = common.evaluate_prep if a.dataset == "multi30k" else common.evaluate_iwslt
    out.update(fn(Path(a.prep_dir), ckpt, subset=a.subset, beam=a.beam, batch_size=a.batch_size,
                  logfile=ckpt.with_suffix(".generate.log")))
    if not out["n_hyps_eq_n_refs"]:
        raise SystemExit(f"{out['n_hyps']} hypotheses for {out['n_refs']} references")
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
