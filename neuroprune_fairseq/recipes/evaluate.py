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
multi30k (any neuroprune-prepare folder): sacrebleu on the prepared split vs raw/SPLIT.TGT; --subset
takes several (comma-separated; ``all`` = test, valid and every ``--extra-test`` set of the folder), and the
JSON then holds ``bleu_sets`` {set name: BLEU} (test = the raw file's name, e.g. test_2016_flickr) and
``sets`` {set name: its figures}, the first set's figures also at the top level.
iwslt14: sacrebleu (lowercase, 13a) on Moses-detokenized output + tokenized BLEU (as fairseq/DSP).
Fails when the number of hypotheses differs from the number of references. Prints JSON.

Refused before decoding, with the fix: a --path that is not a fairseq checkpoint; a prep folder
whose dictionaries are not the ones the checkpoint was trained with (the fingerprint that
neuroprune_translation saves in the checkpoint, else the dictionaries in the checkpoint's data
folder when it is found: as stored, from here or from the checkpoint's folder and its parents);
an empty --src; an --output or --json naming an input (--src, --ref, --path) or each other,
with or without --overwrite (which replaces an earlier output only).
"""
import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

# a file that is not a fairseq checkpoint is a ValueError saying so (not a KeyError / UnpicklingError from torch)
from neuroprune_fairseq.fairseq_adapter.checkpoints import read_checkpoint
from neuroprune_fairseq.recipes import datafiles, runner, scoring, steps


def _data_candidates(data: str, ckpt: Path):
    """Where the checkpoint's data folder may be: as stored (fairseq resolves a relative path
    against the current directory), else relative to the checkpoint's folder and its parents."""
    first = str(data).split(os.pathsep)[0]
    if not first:
        return []
    if os.path.isabs(first):
        return [Path(first)]
    seen, out = set(), []
    for base in [Path.cwd(), *list(Path(ckpt).resolve().parents)[:4]]:
        c = (base / first).resolve()
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def check_dictionaries(prep_dir, ckpt, state: dict) -> str:
    """Refuse a prep folder whose dictionaries are not the checkpoint's training dictionaries
    (same size but other tokens decodes into word salad without any error). Returns how it was
    checked (for the JSON summary)."""
    from neuroprune_fairseq.fairseq_adapter.dictionaries import TASK_STATE_KEY, bin_fingerprint, dict_files, dict_sizes

    prep_dir, ckpt = Path(prep_dir), Path(ckpt)
    src, tgt = datafiles.prep_langs(prep_dir)
    bin_dir = prep_dir / "bin"
    mine = bin_fingerprint(bin_dir, src, tgt)
    if mine is None:
        raise ValueError(f"--prep-dir {prep_dir} has no {' / '.join(dict_files(bin_dir, src, tgt))}: "
                         "is it a neuroprune-prepare folder?")
    fix = (f"pass the --prep-dir that the model was trained on (a prep folder of another run, or re-prepared "
           f"with another corpus or --vocab-size, numbers tokens differently)")
    recorded = (state.get("task_state") or {}).get(TASK_STATE_KEY)
    if recorded:
        if recorded != mine:
            raise ValueError(f"the dictionaries of --prep-dir {prep_dir} ({bin_dir}/dict.{src}.txt, dict.{tgt}.txt: "
                             f"{'/'.join(map(str, dict_sizes(bin_dir, src, tgt)))} entries) are not the ones checkpoint "
                             f"--path {ckpt} was trained with (its data folder {state['cfg'].task.data}; dictionary "
                             f"fingerprint {recorded[:12]}, this prep's {mine[:12]}): the translations would be word "
                             f"salad. {fix}")
        return "checkpoint fingerprint"
    found = []
    for cand in _data_candidates(getattr(state["cfg"].task, "data", "") or "", ckpt):
        theirs = bin_fingerprint(cand, src, tgt)
        if theirs is None:
            continue
        if theirs == mine:
            return f"same dictionaries as {cand}"
        found.append(cand)
    if found:
        raise ValueError(f"the dictionaries of --prep-dir {prep_dir} ({bin_dir}/dict.{src}.txt, dict.{tgt}.txt: "
                         f"{'/'.join(map(str, dict_sizes(bin_dir, src, tgt)))} entries) differ from those in the data "
                         f"folder of checkpoint --path {ckpt} ({', '.join(str(c) for c in found)}: "
                         f"{'/'.join(map(str, dict_sizes(found[0], src, tgt)))} entries): the translations would be "
                         f"word salad. {fix}")
    print(f"neuroprune-evaluate: warning: cannot check that --prep-dir {prep_dir} has the dictionaries checkpoint "
          f"{ckpt} was trained with: it records no fingerprint and its data folder {state['cfg'].task.data!r} is not "
          "found from here", file=sys.stderr, flush=True)
    return "unchecked"


def max_source_positions(ckpt: Path, state: dict = None) -> int:
    state = read_checkpoint(ckpt) if state is None else state
    cfg = (state.get("cfg") or {}).get("model") if state.get("cfg") else None
    cfg = cfg if cfg is not None else state.get("args")
    value = cfg.get("max_source_positions") if hasattr(cfg, "get") else getattr(cfg, "max_source_positions", None)
    return int(value) if value else 1024


def check_outputs(inputs: dict, outputs: dict) -> None:
    """No output may name an input (``--overwrite`` replaces an earlier output, never an input of the
    same command), nor another output."""
    from neuroprune_fairseq.commands.finalize import check_distinct, same_file

    check_distinct(**{k: v for k, v in outputs.items() if v})
    for ko, vo in outputs.items():
        for ki, vi in inputs.items():
            if vo and vi and same_file(str(vo), str(vi)):
                raise ValueError(f"--{ko} {vo} is the input --{ki} {vi} (the same file): write the {ko} to another "
                                 "file (--overwrite replaces an earlier output, never an input)")


def translate(prep_dir, ckpt, src_file, output=None, ref_file=None, beam: int = 5, batch_size: int = 64,
              overwrite: bool = False, logfile=None, state: dict = None) -> dict:
    """Decode every line of the raw ``src_file`` with the prep's sentencepiece model and dictionaries.
    Returns the hypotheses (input order) and, with ``ref_file``, BLEU and the sacrebleu signature.
    ``state``: the checkpoint, already read and its dictionaries checked against the prep's."""
    import sentencepiece as spm

    prep_dir, ckpt = Path(prep_dir), Path(ckpt)
    if output is not None:
        check_outputs({"src": src_file, "ref": ref_file, "path": ckpt}, {"output": output})
    if output is not None and Path(output).exists() and not overwrite:
        raise FileExistsError(f"{output} exists: pass --overwrite to replace it, or another --output")
    if state is None:
        state = read_checkpoint(ckpt)
        check_dictionaries(prep_dir, ckpt, state)
    src_lang, tgt_lang = datafiles.prep_langs(prep_dir)
    lines = [" ".join(s.split()) for s in datafiles.read_lines(src_file)]
    if not lines:
        raise ValueError(f"--src {src_file} is empty: there is nothing to translate (give a file with one "
                         "sentence per line)")
    refs = datafiles.read_lines(ref_file) if ref_file else None
    if refs is not None and len(refs) != len(lines):
        raise ValueError(f"--ref {ref_file} has {len(refs)} lines but --src {src_file} has {len(lines)}")
    sp = spm.SentencePieceProcessor(model_file=str(prep_dir / "spm.model"))
    pieces = sp.encode(lines, out_type=str)
    limit = max_source_positions(ckpt, state)
    too_long = [i + 1 for i, p in enumerate(pieces) if len(p) + 1 > limit]  # + end-of-sentence
    if too_long:
        raise ValueError(f"{src_file}: line(s) {too_long[:10]}{' ...' if len(too_long) > 10 else ''} have more than "
                         f"{limit - 1} sentencepiece tokens, the model's max source positions ({limit}, with </s>): "
                         f"split them, or train with a larger --max-source-positions")
    tmp = Path(tempfile.mkdtemp(prefix="neuroprune_eval_"))
    try:
        datafiles.write_lines(tmp / "spm" / f"test.{src_lang}", [" ".join(p) for p in pieces])
        bin_dir = tmp / "bin"
        runner.run([runner.tool("fairseq-preprocess"), "--source-lang", src_lang, "--target-lang", tgt_lang,
                    "--testpref", tmp / "spm" / "test", "--destdir", bin_dir, "--only-source",
                    "--srcdict", prep_dir / "bin" / f"dict.{src_lang}.txt", "--workers", "1"],
                   logfile=tmp / "preprocess.log")
        shutil.copy(prep_dir / "bin" / f"dict.{tgt_lang}.txt", bin_dir / f"dict.{tgt_lang}.txt")
        gen = scoring.generate(bin_dir, ckpt, subset="test", beam=beam, batch_size=batch_size,
                              extra=scoring.gen_cap(prep_dir), logfile=logfile)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if gen["ids"] != list(range(len(lines))):
        raise RuntimeError(f"fairseq-generate returned {len(gen['ids'])} hypotheses for {len(lines)} source lines")
    hyps = gen["hyps"]
    if output is not None:
        datafiles.write_lines(Path(output), hyps)
    out = {"src": str(src_file), "src_lang": src_lang, "tgt_lang": tgt_lang, "n_src": len(lines), "n_hyps": len(hyps),
           "output": None if output is None else str(output), "gen_sentences_per_s": gen.get("sentences_per_s"),
           "gen_wall_s": round(gen["wall_s"], 2), "hyps": hyps}
    if refs is not None:
        bleu, sig = scoring.sacrebleu_score(hyps, refs, trg_lang=tgt_lang)
        out.update(ref=str(ref_file), n_refs=len(refs), n_hyps_eq_n_refs=len(hyps) == len(refs),
                   bleu=round(bleu, 2), sacrebleu_signature=sig)
    return out


def evaluate_sets(a, ckpt: Path) -> dict:
    """--dataset: BLEU of each --subset split; one split keeps the single-set JSON of before."""
    from neuroprune_fairseq.recipes.extra_sets import scored_sets

    def log(sub):
        return ckpt.with_suffix(".generate.log" if sub == "test" else f".generate.{sub}.log")

    if a.dataset == "iwslt14":
        if "," in a.subset or a.subset == "all":
            raise SystemExit("neuroprune-evaluate: --dataset iwslt14 scores one --subset at a time")
        r = scoring.evaluate_iwslt(Path(a.prep_dir), ckpt, subset=a.subset, beam=a.beam, batch_size=a.batch_size,
                                   logfile=log(a.subset))
        if not r["n_hyps_eq_n_refs"]:
            raise SystemExit(f"{a.subset}: {r['n_hyps']} hypotheses for {r['n_refs']} references")
        return r
    try:
        sets = scoring.score_sets(Path(a.prep_dir), ckpt, scored_sets(a.prep_dir, a.subset), log, beam=a.beam,
                                  batch_size=a.batch_size)
    except (ValueError, RuntimeError) as e:
        raise SystemExit(f"neuroprune-evaluate: {e}")
    first = next(iter(sets.values()))
    if len(sets) == 1:
        return first
    return {**first, "bleu_sets": {k: v["bleu"] for k, v in sets.items()}, "sets": sets}


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
    p.add_argument("--subset", default="test", help="with --dataset: the prepared split(s), comma-separated; "
                   "multi30k: 'all' = test, valid and every extra test set (neuroprune-prepare --extra-test)")
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
    try:
        check_outputs({"src": a.src, "ref": a.ref, "path": a.path}, {"output": a.output, "json": a.json})
        state = read_checkpoint(ckpt)  # before --finalize too: a clear error for a file that is not a checkpoint
        checked = check_dictionaries(a.prep_dir, ckpt, state)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"neuroprune-evaluate: {e}")
    out = {"checkpoint": str(ckpt), "dictionaries": checked}
    if a.finalize:
        fin = ckpt.with_name(ckpt.stem + f".final_t{a.threshold:g}.pt")
        out["finalize"] = steps.finalize(ckpt, fin, a.threshold)
        ckpt = fin
    if a.src:
        try:  # progress lines to stderr when the hypotheses go to stdout
            with contextlib.redirect_stdout(sys.stderr if a.output is None else sys.stdout):
                res = translate(a.prep_dir, ckpt, a.src, a.output, a.ref, beam=a.beam, batch_size=a.batch_size,
                                overwrite=a.overwrite, state=None if a.finalize else state)
        except (FileExistsError, FileNotFoundError, ValueError, RuntimeError) as e:
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
        out.update(evaluate_sets(a, ckpt))
        print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
