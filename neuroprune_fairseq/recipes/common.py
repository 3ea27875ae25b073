"""Shared helpers of the experiment recipes (Multi30k CPU preset, sweeps, benchmarks).

Everything here drives the stock fairseq command-line tools as subprocesses with
``--user-dir neuroprune_fairseq``, so what a recipe runs is exactly what a user types.
No data path is hard-coded: callers pass ``--data-dir`` or set ``NEUROPRUNE_DATA``.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

PACKAGE = Path(__file__).resolve().parent.parent
REPO = PACKAGE.parent
USER_DIR = str(PACKAGE)
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """``fairseq-train`` etc. next to the running python (the venv), else on PATH."""
    p = BIN / name
    return str(p) if p.exists() else name


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: Sequence[str], logfile: Optional[Path] = None, env: Optional[dict] = None) -> float:
    """Run ``cmd`` (output to ``logfile`` if given); raise on failure; return wall seconds."""
    cmd = [str(c) for c in cmd]
    log("$ " + " ".join(_q(c) for c in cmd))
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "2")
    if env:
        full_env.update(env)
    t0 = time.time()
    if logfile is None:
        subprocess.run(cmd, check=True, env=full_env)
    else:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(logfile, "a") as fh:
            r = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=full_env)
        if r.returncode != 0:
            tail = "".join(open(logfile).readlines()[-30:])
            raise RuntimeError(f"command failed ({r.returncode}), see {logfile}:\n{tail}")
    return time.time() - t0


def _q(s: str) -> str:
    return s if re.fullmatch(r"[\w@%+=:,./-]+", s) else "'" + s.replace("'", "'\\''") + "'"


def data_dir(arg: Optional[str], sub: str = "") -> Path:
    """``--data-dir`` if given, else ``$NEUROPRUNE_DATA[/sub]``."""
    if arg:
        return Path(arg)
    env = os.environ.get("NEUROPRUNE_DATA")
    if not env:
        raise SystemExit("pass --data-dir PATH or set NEUROPRUNE_DATA")
    return Path(env) / sub if sub else Path(env)


# ----------------------------------------------------------------------------- Multi30k

MULTI30K_SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
LANGS = ("de", "en")


def read_lines(path: Path) -> List[str]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh]


def write_lines(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")


def prepare_multi30k(raw_dir: Path, out_dir: Path, vocab_size: int = 8000, workers: int = 1) -> Path:
    """Multi30k de-en (raw cased text, ``*.gz``) -> joint sentencepiece BPE -> fairseq binary.

    Layout: ``out/raw/{train,valid,test}.{de,en}`` (detokenized references), ``out/spm.model``,
    ``out/spm/*.{de,en}``, ``out/bin`` (``fairseq-preprocess --joined-dictionary``).
    Idempotent: returns at once when ``out/bin/.done`` exists.
    """
    import sentencepiece as spm

    out_dir = Path(out_dir)
    done = out_dir / "bin" / ".done"
    if done.exists():
        log(f"Multi30k already prepared in {out_dir}")
        return out_dir / "bin"
    raw = out_dir / "raw"
    for split, name in MULTI30K_SPLITS.items():
        pair = {}
        for lang in LANGS:
            src = Path(raw_dir) / f"{name}.{lang}.gz"
            if not src.exists():
                src = Path(raw_dir) / f"{name}.{lang}"
            pair[lang] = [" ".join(s.split()) for s in read_lines(src)]
        if len(pair["de"]) != len(pair["en"]):
            raise ValueError(f"{split}: {len(pair['de'])} German vs {len(pair['en'])} English lines")
        for lang in LANGS:
            write_lines(raw / f"{split}.{lang}", pair[lang])
        log(f"{split}: {len(pair['de'])} pairs")
    spm.SentencePieceTrainer.train(
        input=[str(raw / "train.de"), str(raw / "train.en")], model_prefix=str(out_dir / "spm"),
        vocab_size=vocab_size, model_type="bpe", character_coverage=1.0, input_sentence_size=10_000_000,
        num_threads=max(1, workers), minloglevel=2, bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
    )
    sp = spm.SentencePieceProcessor(model_file=str(out_dir / "spm.model"))
    for split in MULTI30K_SPLITS:
        for lang in LANGS:
            lines = read_lines(raw / f"{split}.{lang}")
            write_lines(out_dir / "spm" / f"{split}.{lang}", [" ".join(p) for p in sp.encode(lines, out_type=str)])
    bin_dir = out_dir / "bin"
    if bin_dir.exists():
        shutil.rmtree(bin_dir)
    sp_pref = out_dir / "spm"
    run([tool("fairseq-preprocess"), "--source-lang", "de", "--target-lang", "en",
         "--trainpref", sp_pref / "train", "--validpref", sp_pref / "valid", "--testpref", sp_pref / "test",
         "--destdir", bin_dir, "--joined-dictionary", "--workers", str(workers)],
        logfile=out_dir / "preprocess.log")
    done.write_text("ok\n")
    return bin_dir


# ----------------------------------------------------------------------------- training

MULTI30K_MODEL = [
    "--arch", "neuroprune_multi30k_cpu", "--share-all-embeddings",
    "--dropout", "0.2", "--optimizer", "adam", "--adam-betas", "(0.9,0.98)",
    "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "400",
    "--max-tokens", "4096", "--label-smoothing", "0.1",
]
COMMON_TRAIN = [
    "--task", "neuroprune_translation", "--source-lang", "de", "--target-lang", "en",
    "--num-workers", "0", "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "50",
    "--seed", "1", "--max-source-positions", "1024", "--max-target-positions", "1024",
]


def train(bin_dir: Path, save_dir: Path, extra: Sequence[str], logfile: Path, user_dir: str = USER_DIR) -> float:
    """``fairseq-train``; resumable (fairseq restarts from ``save_dir/checkpoint_last.pt``)."""
    save_dir = Path(save_dir)
    done = save_dir / ".done"
    if done.exists():
        return float(json.loads(done.read_text())["train_wall_s"])
    wall = run([tool("fairseq-train"), bin_dir, "--user-dir", user_dir, "--save-dir", save_dir,
                *COMMON_TRAIN, *extra], logfile=logfile)
    save_dir.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps({"train_wall_s": wall}))
    return wall


def dense_args(max_epoch: int) -> List[str]:
    return [*MULTI30K_MODEL, "--criterion", "label_smoothed_cross_entropy", "--np-no-head-pruning",
            "--max-epoch", str(max_epoch)]


def finetune_args(method: str, init: Path, max_epoch: int, alpha: float, beta: float, theta: float,
                  model_args: Sequence[str] = MULTI30K_MODEL, penalty_scale: str = "batch") -> List[str]:
    """NeuroPrune (penalties + epoch-end head pruning) or the paper's l1 baseline.

    The l1 baseline is the same fine-tuning with plain L1 penalties (``--np-penalty l1``)
    and the same redundancy pruning: the paper's "L1 + pruning" comparison.
    """
    crit = ["--criterion", "neuroprune_ce", "--np-alpha", str(alpha), "--np-beta", str(beta),
            "--np-penalty-scale", penalty_scale]
    if method == "l1":
        crit += ["--np-penalty", "l1"]
    elif method != "neuroprune":
        raise ValueError(f"unknown method {method}")
    return [*model_args, *crit, "--np-theta", str(theta), "--finetune-from-model", str(init),
            "--max-epoch", str(max_epoch)]


# ----------------------------------------------------------------------------- finalize + eval

def finalize(ckpt: Path, out: Path, threshold: float = 1e-3, logfile: Optional[Path] = None,
             data: Optional[Path] = None) -> Dict:
    """``data``: the data-bin folder, for checkpoints whose stored data path does not resolve here
    (e.g. a dense model trained elsewhere)."""
    js = Path(out).with_suffix(".json")
    if not (Path(out).exists() and js.exists()):
        run([sys.executable, "-m", "neuroprune_fairseq.commands.finalize", "--path", ckpt, "--output", out,
             "--threshold", str(threshold), "--json", js, "--overwrite", *(["--data", data] if data else [])],
            logfile=logfile, env={"PYTHONPATH": str(REPO)})
    return json.loads(js.read_text())


_TRANSLATED = re.compile(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s \(([\d.]+) sentences/s, ([\d.]+) tokens/s\)")


def generate(bin_dir: Path, ckpt: Path, subset: str = "test", beam: int = 5, batch_size: int = 64,
             post_process: str = "sentencepiece", extra: Sequence[str] = (), threads: Optional[int] = None,
             logfile: Optional[Path] = None) -> Dict:
    """Beam search on a whole binarized split. Returns hyps ordered by sentence id, the
    number of source sentences of the split, and fairseq's throughput figures.

    No size filter drops sentences: ``--skip-invalid-size-inputs-valid-test`` is off and
    max positions are large, so fairseq fails loudly instead of silently skipping.
    """
    cmd = [tool("fairseq-generate"), bin_dir, "--user-dir", USER_DIR, "--path", ckpt, "--gen-subset", subset,
           "--beam", str(beam), "--batch-size", str(batch_size), "--post-process", post_process,
           "--max-source-positions", "1024", "--max-target-positions", "1024", "--num-workers", "0", "--required-batch-size-multiple", "1", *extra]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log("$ " + " ".join(_q(str(c)) for c in cmd))
    t0 = time.time()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    wall = time.time() - t0
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        Path(logfile).write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"fairseq-generate failed:\n{r.stderr[-3000:]}")
    hyps: Dict[int, str] = {}
    for line in r.stdout.splitlines():
        if line.startswith("H-"):
            idx, _score, *text = line.split("\t")
            hyps[int(idx[2:])] = text[0] if text else ""
    m = _TRANSLATED.search(r.stdout + r.stderr)
    n_src = len(read_lines(_src_path(bin_dir, subset))) if _src_path(bin_dir, subset) else None
    out = {"hyps": [hyps[i] for i in sorted(hyps)], "ids": sorted(hyps), "wall_s": wall, "n_src": n_src}
    if m:
        out.update(sentences=int(m.group(1).replace(",", "")), gen_s=float(m.group(3)),
                   sentences_per_s=float(m.group(4)), tokens_per_s=float(m.group(5)))
    return out


def _src_path(bin_dir: Path, subset: str) -> Optional[Path]:
    """The text file fairseq binarized (for the sentence count), if it is where we put it."""
    for sub in ("spm", "bpe"):
        p = Path(bin_dir).parent / sub / f"{subset}.de"
        if p.exists():
            return p
    return None


def sacrebleu_score(hyps: Sequence[str], refs: Sequence[str], tokenize: Optional[str] = None,
                    lowercase: bool = False) -> Tuple[float, str]:
    """Corpus BLEU and its signature. Refuses to score fewer hypotheses than references."""
    import sacrebleu

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references: not a test-set BLEU")
    kw = {"lowercase": lowercase}
    if tokenize:
        kw["tokenize"] = tokenize
    metric = sacrebleu.metrics.BLEU(**kw)
    res = metric.corpus_score(list(hyps), [list(refs)])
    return res.score, str(metric.get_signature())


MULTI30K_GEN_CAP = ["--max-len-a", "1.5", "--max-len-b", "12"]


def evaluate_multi30k(prep_dir: Path, ckpt: Path, subset: str = "test", beam: int = 5, batch_size: int = 64,
                      logfile: Optional[Path] = None) -> Dict:
    """Detokenized cased sacrebleu on the raw references (test = test_2016_flickr, 1000 lines)."""
    prep_dir = Path(prep_dir)
    # Multi30k captions: no English side of the 29,000 training pairs is longer than
    # 1.5 x German + 12 sentencepiece tokens (measured; max 1.5x+11.5); the cap only stops
    # degenerate (heavily pruned) models from looping to 200 tokens per sentence.
    gen = generate(prep_dir / "bin", ckpt, subset=subset, beam=beam, batch_size=batch_size, logfile=logfile,
                   extra=MULTI30K_GEN_CAP)
    refs = read_lines(prep_dir / "raw" / f"{subset}.en")
    bleu, sig = sacrebleu_score(gen["hyps"], refs)
    return {"bleu": round(bleu, 2), "sacrebleu_signature": sig, "n_hyps": len(gen["hyps"]), "n_refs": len(refs),
            "n_hyps_eq_n_refs": len(gen["hyps"]) == len(refs), "gen_sentences_per_s": gen.get("sentences_per_s"),
            "gen_wall_s": round(gen["wall_s"], 2)}


# ----------------------------------------------------------------------------- IWSLT14

def evaluate_iwslt(prep_dir: Path, ckpt: Path, subset: str = "test", beam: int = 5, batch_size: int = 128,
                   logfile: Optional[Path] = None) -> Dict:
    """IWSLT14 de-en (prepared by examples/iwslt14_de_en/prepare.py): beam search with BPE
    removed, then two BLEUs:

    * ``bleu``: sacrebleu (13a, lowercase) on Moses-detokenized hypotheses against the
      untokenized references ``raw/test.en`` (``tok/test.en`` detokenized where raw is absent),
      with its signature;
    * ``bleu_tok``: tokenized BLEU as fairseq and the DSP paper report it (lowercased,
      Moses-tokenized hypotheses vs ``tok/test.en``, no further tokenisation), labelled as such.
    """
    from sacremoses import MosesDetokenizer

    prep_dir = Path(prep_dir)
    gen = generate(prep_dir / "bin", ckpt, subset=subset, beam=beam, batch_size=batch_size,
                   post_process="subword_nmt", logfile=logfile)
    tok_refs = read_lines(prep_dir / "tok" / f"{subset}.en")
    md = MosesDetokenizer(lang="en")
    detok = [md.detokenize(h.split(), unescape=True) for h in gen["hyps"]]
    raw = prep_dir / "raw" / f"{subset}.en"
    refs = read_lines(raw) if raw.exists() else [md.detokenize(r.split(), unescape=True) for r in tok_refs]
    bleu, sig = sacrebleu_score(detok, refs, lowercase=True)
    bleu_tok, sig_tok = sacrebleu_score(gen["hyps"], tok_refs, tokenize="none")
    return {"bleu": round(bleu, 2), "sacrebleu_signature": sig, "bleu_tok": round(bleu_tok, 2),
            "bleu_tok_note": "tokenized BLEU (Moses tok, lowercased; sacrebleu tokenize=none), as fairseq/DSP report",
            "n_hyps": len(gen["hyps"]), "n_refs": len(tok_refs), "n_hyps_eq_n_refs": len(gen["hyps"]) == len(tok_refs),
            "gen_sentences_per_s": gen.get("sentences_per_s"), "gen_wall_s": round(gen["wall_s"], 2)}
