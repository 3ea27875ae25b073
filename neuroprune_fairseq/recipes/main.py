#!/usr/bin/env python
"""The README's "main job", short: prepare Multi30k de-en, pretrain the dense
``neuroprune_multi30k_cpu`` model for a few epochs, fine-tune one NeuroPrune point,
finalize both, and print test BLEU (sacrebleu, cased, detokenized, beam 5, all 1000
test_2016_flickr sentences), heads kept and sparsity.

    python scripts/run_main.py --data-dir PATH/multi30k [--work-dir /tmp/neuroprune_main]

Resumable: a finished stage (preparation, training, finalize) is not redone.
"""
import argparse
import json
import os
import sys
from pathlib import Path

from neuroprune_fairseq.recipes import common, prepare


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="Multi30k raw folder (train/val/test_2016_flickr .de/.en[.gz]); default $NEUROPRUNE_DATA/multi30k")
    p.add_argument("--work-dir", default=os.environ.get("NEUROPRUNE_WORK", "/tmp/neuroprune_main"))
    p.add_argument("--dense-epochs", type=int, default=3)
    p.add_argument("--np-epochs", type=int, default=1)
    p.add_argument("--alpha", type=float, default=0.5, help="--np-alpha (batch scale; the top of the paper's MT grid)")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--theta", type=float, default=0.25,
                   help="--np-theta. The default suits the short 3-epoch dense model, whose heads are 0.24-0.27 apart "
                        "(the theta scan printed before fine-tuning shows where theta bites on yours)")
    p.add_argument("--threshold", type=float, default=1e-3, help="finalize: zero |w| below this")
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args(argv)

    raw = common.data_dir(a.data_dir, "multi30k")
    work = Path(a.work_dir)
    prep = work / "prep"
    bin_dir = prepare.prepare(raw, prep, "de", "en", workers=a.workers)

    dense_dir = work / f"dense_e{a.dense_epochs}"
    dense_wall = common.train(bin_dir, dense_dir, common.dense_args(a.dense_epochs), work / "logs" / f"{dense_dir.name}.log")
    # where theta bites on this dense model (nothing is changed): heads Algorithm 3 would keep
    scan_log = work / "logs" / f"{dense_dir.name}.theta_scan.log"
    thetas = sorted({a.theta, 0.2, 0.25, 0.3, 0.35, 0.4})
    common.run([sys.executable, "-m", "neuroprune_fairseq.commands.theta_scan", "--path", dense_dir / "checkpoint_last.pt",
               "--theta", *[f"{t:g}" for t in thetas]], logfile=scan_log, env={"PYTHONPATH": str(common.REPO)})
    scan = [line for line in scan_log.read_text().splitlines() if line.startswith(("module ", "total "))][-2:]
    common.log("theta scan of the dense model (heads kept before fine-tuning):\n  " + "\n  ".join(scan))
    tag = f"neuroprune_a{a.alpha:g}_b{a.beta:g}_t{a.theta:g}_e{a.np_epochs}_from_{dense_dir.name}"
    np_dir = work / tag
    np_wall = common.train(bin_dir, np_dir, common.finetune_args("neuroprune", dense_dir / "checkpoint_last.pt", a.np_epochs,
                                                              a.alpha, a.beta, a.theta), work / "logs" / f"{tag}.log")
    rows = []
    for name, d, wall in (("dense", dense_dir, dense_wall), ("neuroprune", np_dir, np_wall)):
        fin = common.finalize(d / "checkpoint_last.pt", d / "final.pt", a.threshold, logfile=work / "logs" / f"{d.name}.finalize.log")
        ev = common.evaluate_prep(prep, d / "final.pt", logfile=work / "logs" / f"{d.name}.generate.log")
        rows.append({"method": name, "train_wall_s": round(wall, 1), **ev,
                     **{k: fin.get(k) for k in ("heads_kept", "heads_dense", "heads_per_module", "sparsity", "params",
                                                  "params_dense", "flops_ratio")}})
    (work / "main_results.json").write_text(json.dumps(rows, indent=1))
    print("\n=== main job: Multi30k de-en test_2016_flickr (sacrebleu, cased, detokenized, beam 5) ===")
    for r in rows:
        print(f"{r['method']:<11} BLEU {r['bleu']:6.2f}  hyps {r['n_hyps']}/{r['n_refs']}  heads kept {r['heads_kept']}/{r['heads_dense']}"
              f"  sparsity {r['sparsity']:.2f}%  FLOPs ratio {r['flops_ratio']:.3f}  train {r['train_wall_s']:.0f}s"
              f"  gen {r['gen_sentences_per_s']} sent/s")
        print(f"            heads per module {r['heads_per_module']}")
    print(f"sacrebleu signature: {rows[0]['sacrebleu_signature']}")
    for r in rows:
        if not r["n_hyps_eq_n_refs"]:
            raise SystemExit(f"{r['method']}: {r['n_hyps']} hypotheses for {r['n_refs']} references")


if __name__ == "__main__":
    main()
