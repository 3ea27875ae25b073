"""End to end on tiny generated data: fairseq-train with DSP (joint, then pipelined),
finalisation, and stock fairseq-generate on the finalised checkpoint."""
import json
import os
import random
import re
import subprocess
import sys

import pytest
import torch

pytest.importorskip("fairseq")

import neuroprune_fairseq  # noqa: E402

USER_DIR = os.path.dirname(os.path.abspath(neuroprune_fairseq.__file__))
N_TEST = 30
K = 8
TINY = [
    "--arch", "neuroprune_transformer", "--encoder-layers", "2", "--decoder-layers", "2",
    "--encoder-embed-dim", "24", "--decoder-embed-dim", "24", "--encoder-ffn-embed-dim", "48",
    "--decoder-ffn-embed-dim", "48", "--encoder-attention-heads", "6", "--decoder-attention-heads", "6",
    "--share-all-embeddings", "--dropout", "0.0",
]


def run(module, *args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.path.dirname(USER_DIR))
    p = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, f"{module} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout + p.stderr


def write_corpus(raw):
    rng = random.Random(0)
    vocab = [f"s{i}" for i in range(20)]
    os.makedirs(raw)
    for split, n in (("train", 400), ("valid", 40), ("test", N_TEST)):
        with open(f"{raw}/{split}.de", "w") as fs, open(f"{raw}/{split}.en", "w") as ft:
            for _ in range(n):
                s = [rng.choice(vocab) for _ in range(rng.randint(3, 8))]
                fs.write(" ".join(s) + "\n")
                ft.write(" ".join("t" + w[1:] for w in reversed(s)) + "\n")


def train_args(data, save_dir, *extra):
    return [data, "--user-dir", USER_DIR, "--task", "dsp_translation", *TINY,
            "--criterion", "dsp_ce", "--label-smoothing", "0.1", "--dsp-heads", K,
            "--optimizer", "adam", "--lr", "0.01", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "5",
            "--max-tokens", "1000", "--save-dir", save_dir, "--no-epoch-checkpoints", "--log-format", "simple",
            "--log-interval", "5", "--seed", "1", "--num-workers", "0", *extra]


def test_dsp_train_finalise_generate(tmp_path):
    from fairseq import checkpoint_utils

    from neuroprune_fairseq.commands import dsp_finalize
    from neuroprune_fairseq.core.dsp import hard_topk_mask
    from neuroprune_fairseq.fairseq_adapter.head_gates import HeadGateHooks
    from neuroprune_fairseq.fairseq_adapter.sites import head_counts

    d = str(tmp_path)
    write_corpus(f"{d}/raw")
    run("fairseq_cli.preprocess", "--source-lang", "de", "--target-lang", "en", "--trainpref", "raw/train",
        "--validpref", "raw/valid", "--testpref", "raw/test", "--destdir", "bin", "--joined-dictionary",
        "--workers", "1", cwd=d)

    # joint: weights and gates
    log = run("fairseq_cli.train", *train_args("bin", "joint", "--max-epoch", "3", "--dsp-anneal-steps", "20",
                                               "--dsp-init-std", "0.01"), cwd=d)
    assert "dsp_t" in log and "topk_heads_per_module" in log
    state = torch.load(f"{d}/joint/checkpoint_last.pt", weights_only=False)
    logits = state["criterion"]["dsp_logits"]
    assert logits.shape == (36,) and float(logits.std()) > 0.01  # the gates trained

    # finalise
    info = dsp_finalize.main(["--path", f"{d}/joint/checkpoint_last.pt", "--output", f"{d}/final.pt",
                              "--data", f"{d}/bin", "--report", f"{d}/final.json"])
    top = set(torch.topk(logits.float(), K).indices.tolist())
    kept = {i * 6 + h for i, ks in enumerate(info["kept_heads"]) for h in ks}
    assert kept == top and info["heads_kept"] == K and info["method"] == "dsp"
    assert json.load(open(f"{d}/final.json"))["heads_per_module"] == [len(ks) for ks in info["kept_heads"]]

    # the finalised checkpoint (loaded the normal way) computes what the hard-masked model does
    from neuroprune_fairseq.fairseq_adapter.checkpoints import load

    masked = load(f"{d}/joint/checkpoint_last.pt", f"{d}/bin", from_checkpoint=True)
    masked_model, task = masked.model, masked.task
    hooks = HeadGateHooks(masked_model)
    hooks.mask = hard_topk_mask(logits.float(), K)
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([f"{d}/final.pt"], task=task)
    final = models[0].eval()
    assert type(final).__name__ == "NeuroPruneTransformerModel"
    assert head_counts(final) == info["physical_heads_per_module"] and "criterion" not in torch.load(
        f"{d}/final.pt", weights_only=False)
    task.load_dataset("valid")
    itr = task.get_batch_iterator(task.dataset("valid"), max_sentences=8).next_epoch_itr(shuffle=False)
    sample = next(iter(itr))
    with torch.no_grad():
        a = masked_model(**sample["net_input"])[0]
        b = final(**sample["net_input"])[0]
    assert float((a - b).abs().max()) < 1e-5

    # stock fairseq-generate on the finalised checkpoint translates every test sentence
    out = run("fairseq_cli.generate", "bin", "--user-dir", USER_DIR, "--path", "final.pt", "--gen-subset", "test",
              "--beam", "5", "--batch-size", "16", "--required-batch-size-multiple", "1", cwd=d)
    assert re.search(rf"Translated {N_TEST} sentences", out), out[-2000:]
    assert sum(1 for line in out.splitlines() if line.startswith("H-")) == N_TEST

    # pipelined: only the gates train on the joint run's weights
    run("fairseq_cli.train", *train_args("bin", "pipe", "--dsp-mode", "pipelined", "--dsp-pretrained",
                                         "joint/checkpoint_last.pt", "--max-update", "4"), cwd=d)
    pipe = torch.load(f"{d}/pipe/checkpoint_last.pt", weights_only=False)
    for name, w in state["model"].items():
        assert torch.equal(pipe["model"][name], w), name
    assert float(pipe["criterion"]["dsp_logits"].abs().max()) > 0  # gates moved from their zero init
