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
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

PACKAGE = Path(__file__).resolve().parent.parent
REPO = PACKAGE.parent
USER_DIR = str(PACKAGE)
BIN = Path(sys.executable).parent
#: OMP_NUM_THREADS of every subprocess unless the caller's environment sets it
DEFAULT_THREADS = "2"


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
    full_env.setdefault("OMP_NUM_THREADS", DEFAULT_THREADS)
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


def run_module(module: str, args: Sequence, logfile: Optional[Path] = None) -> float:
    """``python -m module args`` with this package importable (:func:`run`'s failure handling)."""
    return run([sys.executable, "-m", module, *args], logfile=logfile, env={"PYTHONPATH": str(REPO)})


def device_desc() -> str:
    """Where the subprocesses run, for the results rows (train times compare only on one device):
    the GPU's name, else the CPU cores and the OMP threads each job uses."""
    import torch

    if torch.cuda.is_available():
        return f"cuda {torch.cuda.get_device_name(0)}"
    return f"cpu {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', DEFAULT_THREADS)}"


def recovery_target_epoch(epochs: int) -> int:
    """The default epoch after which NeuroPrune/l1 reach the head target K: E - 1 (E when E = 1),
    so the last epoch fine-tunes at K after the final merge (as DSP pipelined and Michel do after
    pruning). The main job and ``frontier_gpu.sh`` both take it from here."""
    return max(int(epochs) - 1, 1)


def append_row(results: Path, row: dict) -> None:
    """Append one JSON line to a results file under an exclusive lock (parallel jobs may share it)."""
    import fcntl

    with open(results, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        fcntl.flock(fh, fcntl.LOCK_UN)


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


# ----------------------------------------------------------------------------- text files

def read_lines(path: Path) -> List[str]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh]


def write_lines(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")


# ----------------------------------------------------------------------------- training

MULTI30K_MODEL = [
    "--arch", "neuroprune_multi30k_cpu", "--share-all-embeddings",
    "--dropout", "0.2", "--optimizer", "adam", "--adam-betas", "(0.9,0.98)",
    "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "400",
    "--max-tokens", "4096", "--label-smoothing", "0.1",
]
#: the shared pre-norm start (../shared/models/multi30k_de_en_prenorm, the main job's dense recipe) and the
#: fine-tuning schedule every method gets from it (issues 20/21): Adam lr 1e-3, inverse_sqrt, 100 warm-up updates
MULTI30K_PRENORM_FT = [
    "--arch", "neuroprune_multi30k_cpu", "--share-all-embeddings", "--encoder-normalize-before",
    "--decoder-normalize-before", "--dropout", "0.1", "--optimizer", "adam", "--adam-betas", "(0.9,0.98)",
    "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100",
    "--max-tokens", "2048", "--label-smoothing", "0.1",
]
#: the paper's IWSLT14 model and fairseq's IWSLT recipe (examples/iwslt14_de_en/train_dense.sh)
IWSLT14_MODEL = [
    "--arch", "neuroprune_iwslt_de_en", "--share-decoder-input-output-embed",
    "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--clip-norm", "0.0",
    "--lr", "5e-4", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4000",
    "--dropout", "0.3", "--weight-decay", "0.0001", "--label-smoothing", "0.1", "--max-tokens", "4096",
]
COMMON_TRAIN = [
    # no --source-lang/--target-lang: fairseq infers the pair from a bin dir holding one pair
    "--task", "neuroprune_translation",
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
        run_module("neuroprune_fairseq.commands.finalize", ["--path", ckpt, "--output", out, "--threshold", str(threshold),
                                                             "--json", js, "--overwrite", *(["--data", data] if data else [])],
                   logfile=logfile)
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


def bin_langs(bin_dir: Path) -> Optional[Tuple[str, str]]:
    """(source, target) of a fairseq bin dir holding one pair (from ``dict.X.txt`` + ``*.X-Y.X.idx``)."""
    pairs = {p.name.split(".")[1] for p in Path(bin_dir).glob("*.*-*.*.idx")}
    if len(pairs) != 1:
        return None
    src, tgt = pairs.pop().split("-", 1)
    return src, tgt


def prep_langs(prep_dir: Path) -> Tuple[str, str]:
    """(source, target) of a prepared folder: ``prep.json``, else its bin dir's file names."""
    meta = Path(prep_dir) / "prep.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        return m["src_lang"], m["tgt_lang"]
    langs = bin_langs(Path(prep_dir) / "bin")
    if langs is None:
        raise FileNotFoundError(f"{prep_dir}: no prep.json and no single language pair in {Path(prep_dir) / 'bin'}")
    return langs


def split_name(prep_dir: Path, subset: str) -> str:
    """The name a split is reported under: the stem of the raw file it was prepared from
    (prep.json; Multi30k: test -> test_2016_flickr, valid -> val), else the split name."""
    meta = Path(prep_dir) / "prep.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        f = m.get("files", {}).get(subset, {}).get(m["tgt_lang"], {}).get("path")
        if f:
            name = Path(f).name
            for suffix in (".gz", "." + m["tgt_lang"]):
                name = name[: -len(suffix)] if name.endswith(suffix) else name
            return name
    return subset


def _src_path(bin_dir: Path, subset: str) -> Optional[Path]:
    """The text file fairseq binarized (for the sentence count), if it is where we put it."""
    langs = bin_langs(bin_dir)
    if langs is None:
        return None
    for sub in ("spm", "bpe"):
        p = Path(bin_dir).parent / sub / f"{subset}.{langs[0]}"
        if p.exists():
            return p
    return None


def sacrebleu_score(hyps: Sequence[str], refs: Sequence[str], tokenize: Optional[str] = None,
                    lowercase: bool = False, trg_lang: str = "") -> Tuple[float, str]:
    """Corpus BLEU and its signature. Refuses to score fewer hypotheses than references.
    ``trg_lang``: sacrebleu's per-language default tokenizer (zh, ja-mecab, ko-mecab; else 13a)."""
    import sacrebleu

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references: not a test-set BLEU")
    kw = {"lowercase": lowercase, "trg_lang": trg_lang}
    if tokenize:
        kw["tokenize"] = tokenize
    metric = sacrebleu.metrics.BLEU(**kw)
    res = metric.corpus_score(list(hyps), [list(refs)])
    return res.score, str(metric.get_signature())


# Multi30k de-en, measured: no English side of the 29,000 training pairs is longer than
# 1.5 x German + 12 sentencepiece tokens. Only for a prep folder made before prep.json existed.
LEGACY_GEN_CAP = (1.5, 12)


def gen_cap(prep_dir: Path) -> List[str]:
    """``--max-len-a/--max-len-b`` of a prepared folder (``prep.json``; see recipes.prepare). The cap
    lets every training target through and stops degenerate (heavily pruned) models from looping."""
    meta = Path(prep_dir) / "prep.json"
    a, b = LEGACY_GEN_CAP
    if meta.exists():
        m = json.loads(meta.read_text())
        a, b = m["gen_max_len_a"], m["gen_max_len_b"]
    return ["--max-len-a", f"{a:g}", "--max-len-b", str(b)]


def evaluate_prep(prep_dir: Path, ckpt: Path, subset: str = "test", beam: int = 5, batch_size: int = 64,
                  logfile: Optional[Path] = None) -> Dict:
    """Detokenized cased sacrebleu of a split of a ``neuroprune-prepare`` folder against its raw
    references ``raw/{subset}.{tgt}`` (Multi30k: test = test_2016_flickr, 1000 lines)."""
    prep_dir = Path(prep_dir)
    _src, tgt = prep_langs(prep_dir)
    gen = generate(prep_dir / "bin", ckpt, subset=subset, beam=beam, batch_size=batch_size, logfile=logfile,
                   extra=gen_cap(prep_dir))
    refs = read_lines(prep_dir / "raw" / f"{subset}.{tgt}")
    bleu, sig = sacrebleu_score(gen["hyps"], refs, trg_lang=tgt)
    return {"bleu": round(bleu, 2), "sacrebleu_signature": sig, "n_hyps": len(gen["hyps"]), "n_refs": len(refs),
            "n_hyps_eq_n_refs": len(gen["hyps"]) == len(refs), "gen_sentences_per_s": gen.get("sentences_per_s"),
            "gen_wall_s": round(gen["wall_s"], 2)}


# ----------------------------------------------------------------------------- IWSLT14

def evaluate_iwslt(prep_dir: Path, ckpt: Path, subset: str = "test", beam: int = 5, batch_size: int = 128,
                   logfile: Optional[Path] = None) -> Dict:
    """IWSLT14 (de-en; prepared by examples/iwslt14_de_en/prepare.py): beam search with BPE
    removed, then two BLEUs:

    * ``bleu``: sacrebleu (13a, lowercase) on Moses-detokenized hypotheses against the
      untokenized references ``raw/test.en`` (``tok/test.en`` detokenized where raw is absent),
      with its signature;
    * ``bleu_tok``: tokenized BLEU as fairseq and the DSP paper report it (lowercased,
      Moses-tokenized hypotheses vs ``tok/test.en``, no further tokenisation), labelled as such.
    """
    from sacremoses import MosesDetokenizer

    prep_dir = Path(prep_dir)
    _src, tgt = bin_langs(prep_dir / "bin") or ("de", "en")  # IWSLT14 de-en, the pair iwslt14.py prepares
    gen = generate(prep_dir / "bin", ckpt, subset=subset, beam=beam, batch_size=batch_size,
                   post_process="subword_nmt", logfile=logfile)
    tok_refs = read_lines(prep_dir / "tok" / f"{subset}.{tgt}")
    md = MosesDetokenizer(lang=tgt)
    detok = [md.detokenize(h.split(), unescape=True) for h in gen["hyps"]]
    raw = prep_dir / "raw" / f"{subset}.{tgt}"
    refs = read_lines(raw) if raw.exists() else [md.detokenize(r.split(), unescape=True) for r in tok_refs]
    bleu, sig = sacrebleu_score(detok, refs, lowercase=True)
    bleu_tok, sig_tok = sacrebleu_score(gen["hyps"], tok_refs, tokenize="none")
    return {"bleu": round(bleu, 2), "sacrebleu_signature": sig, "bleu_tok": round(bleu_tok, 2),
            "bleu_tok_note": "tokenized BLEU (Moses tok, lowercased; sacrebleu tokenize=none), as fairseq/DSP report",
            "n_hyps": len(gen["hyps"]), "n_refs": len(tok_refs), "n_hyps_eq_n_refs": len(gen["hyps"]) == len(tok_refs),
            "gen_sentences_per_s": gen.get("sentences_per_s"), "gen_wall_s": round(gen["wall_s"], 2)}
