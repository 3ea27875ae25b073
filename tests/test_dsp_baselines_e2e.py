"""The fair DSP baselines of the head-budget frontier (scripts/sweep_heads.py), end to end on
tiny data, from one dense model: DSP joint trains gates and weights; DSP pipelined trains only
the gates, then the hard top-K pruned model is fine-tuned and only its kept heads' weights
change (an emptied module's zeroed placeholder head stays exactly zero)."""

import pytest
import torch

from test_dsp_e2e import TINY, USER_DIR, run, train_args, write_corpus

pytest.importorskip("fairseq")


def _model(path):
    return torch.load(path, weights_only=False)["model"]


def _qkv_out(m, prefix, n, hd=4):
    """Per head of one attention module: its q/k/v rows and out-projection columns, flat."""
    parts = [m[f"{prefix}.{r}_proj.weight"].reshape(n, hd, -1).flatten(1) for r in "qkv"]
    out = m[f"{prefix}.out_proj.weight"].reshape(-1, n, hd).transpose(0, 1).flatten(1)
    return torch.cat(parts + [out], 1)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    d = tmp_path_factory.mktemp("dspb")
    write_corpus(f"{d}/raw")
    run("fairseq_cli.preprocess", "--source-lang", "de", "--target-lang", "en", "--trainpref", "raw/train",
        "--validpref", "raw/valid", "--testpref", "raw/test", "--destdir", "bin", "--joined-dictionary",
        "--workers", "1", cwd=d)
    run("fairseq_cli.train", "bin", "--user-dir", USER_DIR, "--task", "neuroprune_translation", *TINY,
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--np-no-head-pruning",
        "--optimizer", "adam", "--lr", "0.01", "--max-tokens", "1000", "--max-epoch", "2", "--save-dir", "dense",
        "--no-epoch-checkpoints", "--seed", "1", "--num-workers", "0", cwd=d)
    return d


def test_dsp_joint_from_dense_trains_gates_and_weights(dense):
    d = dense
    run("fairseq_cli.train", *train_args("bin", "joint", "--dsp-mode", "joint", "--dsp-pretrained",
                                         "dense/checkpoint_last.pt", "--max-update", "6", "--dsp-anneal-steps", "4",
                                         "--dsp-lr", "0.2"), cwd=d)
    base, joint = _model(d / "dense" / "checkpoint_last.pt"), torch.load(d / "joint" / "checkpoint_last.pt", weights_only=False)
    assert float(joint["criterion"]["dsp_logits"].abs().max()) > 0  # gates moved from zero
    changed = [k for k, v in base.items() if not torch.equal(joint["model"][k], v)]
    assert any("q_proj" in k for k in changed) and any("fc1" in k for k in changed)  # weights trained too


def test_dsp_pipelined_then_finetune_changes_only_what_it_should(dense):
    from neuroprune_fairseq.commands import dsp_finalize

    d = dense
    # phase 1: gates only
    run("fairseq_cli.train", *train_args("bin", "pipe", "--dsp-mode", "pipelined", "--dsp-pretrained",
                                         "dense/checkpoint_last.pt", "--max-epoch", "1", "--dsp-anneal-steps", "3",
                                         "--dsp-lr", "0.2"), cwd=d)
    base, pipe = _model(d / "dense" / "checkpoint_last.pt"), torch.load(d / "pipe" / "checkpoint_last.pt", weights_only=False)
    assert all(torch.equal(pipe["model"][k], v) for k, v in base.items())
    assert float(pipe["criterion"]["dsp_logits"].abs().max()) > 0
    # hard top-K with K = 3 < 6 modules: at least 3 modules are emptied (zeroed placeholder head)
    info = dsp_finalize.main(["--path", str(d / "pipe" / "checkpoint_last.pt"), "--output", str(d / "pruned.pt"),
                              "--data", str(d / "bin"), "--heads", "3"])
    assert info["heads_kept"] == 3 and len(info["empty_modules"]) >= 3
    # scripts/sweep_heads.py counts a zeroed placeholder as no head, as the finaliser's report does
    from neuroprune_fairseq.fairseq_adapter import checkpoints

    assert checkpoints.active_heads(d / "pruned.pt") == (info["heads_per_module"], info["physical_heads_per_module"])
    # phase 2: fine-tune the pruned model (no gates, no head pruning)
    run("fairseq_cli.train", "bin", "--user-dir", USER_DIR, "--task", "neuroprune_translation", *TINY,
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--np-no-head-pruning",
        "--optimizer", "adam", "--lr", "0.01", "--max-update", "6", "--save-dir", "ft", "--no-epoch-checkpoints",
        "--seed", "2", "--num-workers", "0", "--max-tokens", "1000", "--finetune-from-model", "pruned.pt", cwd=d)
    pruned, ft = _model(d / "pruned.pt"), _model(d / "ft" / "checkpoint_last.pt")
    assert {k: v.shape for k, v in pruned.items()} == {k: v.shape for k, v in ft.items()}  # nothing grew back
    prefixes = [k[: -len(".q_proj.weight")] for k in pruned if k.endswith(".q_proj.weight")]  # model order
    assert len(prefixes) == 6
    active_changed, placeholders = 0, 0
    for prefix, n_phys, n_active in zip(prefixes, info["physical_heads_per_module"], info["heads_per_module"]):
        before, after = _qkv_out(pruned, prefix, n_phys), _qkv_out(ft, prefix, n_phys)
        for h in range(n_phys):
            if before[h].abs().sum() == 0:  # the zeroed placeholder of an emptied module
                placeholders += 1
                assert torch.equal(after[h], before[h]), f"{prefix} placeholder head {h} changed"
            else:
                active_changed += int(not torch.equal(after[h], before[h]))
    assert placeholders == len(info["empty_modules"]) and active_changed == 3  # every kept head trained
