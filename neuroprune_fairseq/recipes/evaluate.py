#!/usr/bin/env python
"""Evaluate one checkpoint: on any raw test set, or on a prepared split. Beam 5, BLEU.

    neuroprune-evaluate --prep-dir PREP --path CKPT --src FILE [--ref FILE] [--output hyps.txt] [--overwrite]
    neuroprune-evaluate --dataset multi30k --prep-dir PREP --path CKPT [--finalize --threshold 1e-3]
    neuroprune-evaluate --dataset iwslt14  --prep-dir IWSLT_OUT --path CKPT [--finalize]

--src (any test set): the raw source lines go through the prep's sentencepiece model and are
binarized with its dictionaries (fairseq-preprocess --srcdict); every line is decoded (an empty
line too), hypotheses are de-sentencepieced and written in input order to --output (stdout when
omitted; an existing file is kept unless --overwrite). A line longer than the model's
max source positions is an error naming it (before decoding). With --ref (as many lines as
--src): cased detokenized sacrebleu with its signature (tokenizer per target language).
multi30k (any neuroprune-prepare folder): sacrebleu on the prepared split vs raw/SPLIT.TGT.
iwslt14: sacrebleu (lowercase, 13a) on Moses-detokenized output + tokenized BLEU (as fairseq/DSP).
Fails when the number of hypotheses differs from the number of references. Prints JSON.
"""
import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from neuroprune_fairseq.recipes import common


def max_source_positions(ckpt: Path) -> int:
    import torch

    import neuroprune_fairseq.fairseq_adapter.checkpoint_compat  # noqa: F401  (safe loading of fairseq checkpoints)

    state = torch.load(ckpt, map_location="cpu")
    cfg = (state.get("cfg") or {}).get("model") if state.get("cfg") else None
    cfg = cfg if cfg is not None else state.get("args")
    value = cfg.get("max_source_positions") if hasattr(cfg, "get") else getattr(cfg, "max_source_positions", None)
    return int(value) if value else 1024


def translate(prep_dir, ckpt, src_file, output=None, ref_file=None, beam: int = 5, batch_size: int = 64,
              overwrite: bool = False, logfile=None) -> dict:
    """Decode every line of the raw ``src_file`` with the prep's sentencepiece model and dictionaries.
    Returns the hypotheses (input order) and, with ``ref_file``, BLEU and the sacrebleu signature."""
    import sentencepiece as spm

    prep_dir, ckpt = Path(prep_dir), Path(ckpt)
    if output is not None and Path(output).exists() and not overwrite:
        raise FileExistsError(f"{output} exists: pass --overwrite to replace it, or another --output")
    src_lang, tgt_lang = common.prep_langs(prep_dir)
    lines = [" ".join(s.split()) for s in common.read_lines(src_file)]
    refs = common.read_lines(ref_file) if ref_file else None
    if refs is not None and len(refs) != len(lines):
        raise ValueError(f"--ref {ref_file} has {len(refs)} lines but --src {src_file} has {len(lines)}")
    sp = spm.SentencePieceProcessor(model_file=str(prep_dir / "spm.model"))
    pieces = sp.encode(lines, out_type=str)
    limit = max_source_positions(ckpt)
    too_long = [i + 1 for i, p in enumerate(pieces) if len(p) + 1 > limit]  # + end-of-sentence
    if too_long:
        raise ValueError(f"{src_file}: line(s) {too_long[:10]}{' ...' if len(too_long) > 10 else ''} have more than "
                         f"{limit - 1} sentencepiece tokens, the model's max source positions ({limit}, with </s>): "
                         f"split them, or train with a larger --max-source-positions")
    tmp = Path(tempfile.mkdtemp(prefix="neuroprune_eval_"))
    try:
        common.write_lines(tmp / "spm" / f"test.{src_lang}", [" ".join(p) for p in pieces])
        bin_dir = tmp / "bin"
        common.run([common.tool("fairseq-preprocess"), "--source-lang", src_lang, "--target-lang", tgt_lang,
                    "--testpref", tmp / "spm" / "test", "--destdir", bin_dir, "--only-source",
                    "--srcdict", prep_dir / "bin" / f"dict.{src_lang}.txt", "--workers", "1"],
                   logfile=tmp / "preprocess.log")
        shutil.copy(prep_dir / "bin" / f"dict.{tgt_lang}.txt", bin_dir / f"dict.{tgt_lang}.txt")
        gen = common.generate(bin_dir, ckpt, subset="test", beam=beam, batch_size=batch_size,
                              extra=common.gen_cap(prep_dir), logfile=logfile)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if gen["ids"] != list(range(len(lines))):
        raise RuntimeError(f"fairseq-generate returned {len(gen['ids'])} hypotheses for {len(lines)} source lines")
    hyps = gen["hyps"]
    if output is not None:
        common.write_lines(Path(output), hyps)
    out = {"src": str(src_file), "src_lang": src_lang, "tgt_lang": tgt_lang, "n_src": len(lines), "n_hyps": len(hyps),
           "output": None if output is None else str(output), "gen_sentences_per_s": gen.get("sentences_per_s"),
           "gen_wall_s": round(gen["wall_s"], 2), "hyps": hyps}
    if refs is not None:
        bleu, sig = common.sacrebleu_score(hyps, refs, trg_lang=tgt_lang)
        out.update(ref=str(ref_file), n_refs=len(refs), n_hyps_eq_n_refs=len(hyps) == len(refs),
                   bleu=round(bleu, 2), sacrebleu_signature=sig)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["multi30k", "iwslt14"],
                   help="evaluate the prepared --subset of PREP (multi30k: any neuroprune-prepare folder)")
    p.add_argument("--prep-dir", required=True, help="a neuroprune-prepare output folder (spm.model, bin/, prep.json)")
    p.add_argument("--path", required=True, help="checkpoint")
    p.add_argument("--src", help="raw source-language text file to translate (any test set)")
    p.add_argument("--ref", help="with --src: raw reference file, one line per --src line")
    p.add_argument("--output", help="with --src: write the hypotheses here (default: stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--subset", default="test", help="with --dataset: the prepared split")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--finalize", action="store_true", help="finalize first and evaluate the finalised checkpoint")
    p.add_argument("--threshold", type=float, default=1e-3)
    p.add_argument("--json", help="also write the result here")
    a = p.parse_args(argv)
    if (a.src is None) == (a.dataset is None):
        p.error("give exactly one of --src FILE (a raw test set) and --dataset (a prepared split)")
    if a.src is None and (a.ref or a.output or a.overwrite):
        p.error("--ref/--output/--overwrite go with --src")
    for need in filter(None, (a.path, a.src, a.ref)):
        if not Path(need).exists():
            p.error(f"{need} does not exist")
    ckpt = Path(a.path)
    out = {"checkpoint": str(ckpt)}
    if a.finalize:
        fin = ckpt.with_name(ckpt.stem + f".final_t{a.threshold:g}.pt")
        out["finalize"] = common.finalize(ckpt, fin, a.threshold)
        ckpt = fin
    if a.src:
        try:  # progress lines to stderr when the hypotheses go to stdout
            with contextlib.redirect_stdout(sys.stderr if a.output is None else sys.stdout):
                res = translate(a.prep_dir, ckpt, a.src, a.output, a.ref, beam=a.beam, batch_size=a.batch_size,
                                overwrite=a.overwrite)
        except (FileExistsError, ValueError, RuntimeError) as e:
            raise SystemExit(f"neuroprune-evaluate: {e}")
        hyps = res.pop("hyps")
        if a.output is None:
            sys.stdout.write("".join(h + "\n" for h in hyps))
        out.update(res)
        summary = sys.stderr if a.output is None else sys.stdout
        if "bleu" in res:
            print(f"BLEU {res['bleu']:.2f}  {res['sacrebleu_signature']}", file=summary)
        print(json.dumps(out, indent=1), file=summary)
    else:
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
