"""End to end, as a user runs it: fairseq-train with pruning, resume, fairseq-generate /
fairseq-interactive on pruned checkpoints, finalize, 2-worker data parallel, bad input."""
import math
import os
import re
import socket

import pytest
import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.configs import GenerationConfig
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from neuroprune_fairseq.fairseq_adapter.sites import attention_modules, head_counts, mlp_modules, prune_redundant_heads_
from neuroprune_fairseq.commands.finalize import cli_main as finalize_main

from conftest import TINY_ARCH, USER_DIR, run_cli

TRAIN = TINY_ARCH + [
    "--user-dir", USER_DIR, "--task", "neuroprune_translation", "--criterion", "neuroprune_ce",
    "--label-smoothing", "0.1", "--np-alpha", "0.05", "--np-beta", "0.1", "--np-theta", "0.3",
    "--np-penalty-scale", "token",  # per-token penalty: the tiny runs below prune within 3 epochs
    "--optimizer", "adam", "--lr", "0.005", "--max-tokens", "500", "--log-interval", "5",
    "--no-progress-bar", "--seed", "1", "--num-workers", "0", "--cpu",
]
GEN = ["--user-dir", USER_DIR, "--beam", "5", "--batch-size", "16", "--cpu"]


def heads_in_checkpoint(path):
    state = torch.load(path, map_location="cpu")  # weights_only: allowed by the plugin
    hd = 4  # 24 / 6
    return [v.shape[0] // hd for k, v in state["model"].items() if k.endswith("q_proj.weight")], state


def hypotheses(stdout):
    return {int(m.group(1)): (float(m.group(2)), m.group(3)) for m in re.finditer(r"^H-(\d+)\t(\S+)\t(.*)$", stdout, re.M)}


@pytest.fixture(scope="module")
def trained(tiny_data):
    p = run_cli("fairseq_cli.train", ["bin", *TRAIN, "--max-epoch", "3", "--save-dir", "ck"], cwd=tiny_data)
    return tiny_data, p.stdout + p.stderr


def test_training_prunes_heads_and_logs_everything(trained):
    d, log = trained
    after = [int(n) for n in re.findall(r"NeuroPrune epoch 00\d: heads \d+ -> (\d+)", log)]
    assert len(after) == 3 and after[-1] < 36 and after == sorted(after, reverse=True), log[-3000:]
    final = after[-1]
    heads, state = heads_in_checkpoint(d / "ck" / "checkpoint3.pt")
    assert sum(heads) == final and len(heads) == 6  # 2 enc self + 2 dec self + 2 cross
    assert min(heads) >= 1
    # fairseq's own log lines carry the penalties, heads (total and per module) and sparsity
    line = [l for l in log.splitlines() if "| train | epoch 003" in l][0]
    for key in ("r_attn", "r_mlp", "penalty", "heads", "sparsity", "heads_per_module"):
        assert f"| {key} " in line, line
    assert re.search(r"min_dist=\d\.\d+ theta=0.3", log)
    h2, _ = heads_in_checkpoint(d / "ck" / "checkpoint2.pt")
    assert len(set(h2)) > 1, h2  # modules with different head counts, used below


def test_saved_adam_state_is_sliced_with_the_weights(trained):
    d, _ = trained
    _, s2 = heads_in_checkpoint(d / "ck" / "checkpoint2.pt")
    shapes = [tuple(v["exp_avg"].shape) for v in s2["last_optimizer_state"]["state"].values()]
    for k, v in s2["model"].items():
        if k.endswith(("q_proj.weight", "out_proj.weight")):
            assert tuple(v.shape) in shapes


def test_resume_continues_with_same_heads_and_step(trained, tmp_path):
    d, _ = trained
    import shutil

    save = tmp_path / "resume"
    shutil.copytree(d / "ck", save)
    heads3, state3 = heads_in_checkpoint(save / "checkpoint3.pt")
    updates3 = state3["optimizer_history"][-1]["num_updates"]
    shutil.copy(save / "checkpoint3.pt", save / "checkpoint_last.pt")
    p = run_cli("fairseq_cli.train", ["bin", *TRAIN, "--max-epoch", "4", "--save-dir", str(save)], cwd=d)
    log = p.stdout + p.stderr
    # fairseq names the epoch to run next: the end-of-epoch-3 checkpoint resumes at epoch 4
    assert f"(epoch 4 @ {updates3} updates)" in log
    line = [l for l in log.splitlines() if "| train_inner | epoch 004" in l][0]
    assert f"heads_per_module={'.'.join(map(str, heads3))}," in line  # trained epoch 4 with the same heads
    assert "begin training epoch 4" in log
    heads4, state4 = heads_in_checkpoint(save / "checkpoint4.pt")
    assert state4["optimizer_history"][-1]["num_updates"] > updates3
    # weights kept through pruning are still trained
    same = [k for k, v in state3["model"].items() if k.endswith("q_proj.weight") and state4["model"][k].shape == v.shape]
    assert same
    for k in same:
        assert not torch.equal(state3["model"][k], state4["model"][k])


def _in_memory_generation(task, model, split="test"):
    gen = task.build_generator([model], GenerationConfig(beam=5))
    itr = task.get_batch_iterator(dataset=task.dataset(split), max_sentences=16).next_epoch_itr(shuffle=False)
    out = {}
    for sample in itr:
        hyps = task.inference_step(gen, [model], sample)
        for i, sid in enumerate(sample["id"].tolist()):
            h = hyps[i][0]
            out[sid] = (h["score"].item() / math.log(2), task.target_dictionary.string(h["tokens"].int().cpu()))
    return out


def test_generate_and_interactive_on_pruned_checkpoint_match_in_memory_model(trained, tmp_path):
    d, _ = trained
    state = checkpoint_utils.load_checkpoint_to_cpu(str(d / "ck" / "checkpoint2.pt"), {"data": str(d / "bin")})
    task = tasks.setup_task(state["cfg"].task)
    model = task.build_model(state["cfg"].model)
    model.load_state_dict(state["model"], strict=True, model_cfg=state["cfg"].model)
    model.eval()
    task.load_dataset("test")
    # make the widest attention module hold two exact twins, then prune in memory
    mha = max((m for _, _, m in attention_modules(model)), key=lambda m: m.num_heads)
    assert mha.num_heads >= 2, head_counts(model)
    hd = mha.head_dim
    with torch.no_grad():
        for lin in (mha.q_proj, mha.k_proj, mha.v_proj):
            lin.weight[hd:2 * hd] = lin.weight[:hd]
            lin.bias[hd:2 * hd] = lin.bias[:hd]
    before = _in_memory_generation(task, model)
    heads_before = head_counts(model)
    prune_redundant_heads_(model, theta=0.0)
    assert sum(head_counts(model)) == sum(heads_before) - 1
    mem = _in_memory_generation(task, model)
    assert [mem[i][1] for i in sorted(mem)] == [before[i][1] for i in sorted(before)]  # exact merge
    state["model"] = model.state_dict()
    path = tmp_path / "pruned.pt"
    torch.save(state, path)

    p = run_cli("fairseq_cli.generate", ["bin", *GEN, "--path", str(path)], cwd=d)
    hyps = hypotheses(p.stdout)
    assert len(hyps) == 40 == len(mem)
    for sid, (score, text) in mem.items():
        assert hyps[sid][1] == text
        assert abs(hyps[sid][0] - score) < 1e-3

    src = re.search(r"^S-0\t(.*)$", p.stdout, re.M).group(1)
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "fairseq_cli.interactive", "bin", *GEN, "--path", str(path),
                        "--source-lang", "src", "--target-lang", "tgt", "--buffer-size", "16"], cwd=d, input=src + "\n",
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"^H-0\t\S+\t(.*)$", r.stdout, re.M).group(1) == hyps[0][1]


def test_finalize_writes_smaller_checkpoint_with_identical_outputs(trained, tmp_path, capsys):
    d, _ = trained
    src = d / "ck" / "checkpoint2.pt"
    out, js = tmp_path / "final.pt", tmp_path / "final.json"
    assert finalize_main(["--path", str(src), "--output", str(out), "--json", str(js)]) == 2  # data dir is relative
    assert "pass --data" in capsys.readouterr().err
    data = ["--data", str(d / "bin")]
    assert finalize_main(["--path", str(src), "--output", str(out), "--json", str(js), *data]) == 0
    printed = capsys.readouterr().out
    assert "heads kept" in printed and "sparsity" in printed and "FLOPs per token" in printed
    import json

    info = json.loads(js.read_text())
    heads, _ = heads_in_checkpoint(src)
    assert info["heads_kept"] == sum(heads) and info["heads_dense"] == 36
    assert info["params"] < info["params_dense"] and 0 < info["sparsity"] < 100
    assert 0 < info["flops_ratio"] < 1
    g1 = hypotheses(run_cli("fairseq_cli.generate", ["bin", *GEN, "--path", str(src)], cwd=d).stdout)
    g2 = hypotheses(run_cli("fairseq_cli.generate", ["bin", *GEN, "--path", str(out)], cwd=d).stdout)
    assert len(g1) == 40 and {k: v[1] for k, v in g1.items()} == {k: v[1] for k, v in g2.items()}
    # a threshold zeroes weights and counts them
    out2 = tmp_path / "final2.pt"
    assert finalize_main(["--path", str(src), "--output", str(out2), "--threshold", "0.05", "--json", str(js), *data]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err  # the first run's report
    assert finalize_main(["--path", str(src), "--output", str(out2), "--threshold", "0.05", "--json", str(js), *data,
                          "--overwrite"]) == 0
    info2 = json.loads(js.read_text())
    assert info2["zeroed_below_threshold"] > 0 and info2["sparsity"] > info["sparsity"]
    assert finalize_main(["--path", str(tmp_path / "missing.pt"), "--output", str(out2)]) == 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_two_workers(args, cwd, backend="legacy_ddp"):
    """``fairseq-train args`` as 2 data-parallel CPU workers (gloo, ``--ddp-backend backend``); both
    must succeed. Returns each worker's output."""
    import subprocess, sys

    port = _free_port()
    args = [*args, "--distributed-world-size", "2", "--ddp-backend", backend, "--distributed-backend", "gloo",
            "--distributed-no-spawn", "--distributed-init-method", f"tcp://127.0.0.1:{port}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "fairseq_cli.train", *args, "--distributed-rank", str(r)],
                              cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for r in (0, 1)]
    outs = [p.communicate(timeout=1800)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    return outs


def test_two_worker_data_parallel_prunes_identically(tiny_data, tmp_path):
    outs = train_two_workers(["bin", *TRAIN, "--max-epoch", "3", "--save-dir", str(tmp_path / "ddp")], tiny_data)
    log = outs[0]
    assert "the 2 workers pruned identically" in log
    after = [int(n) for n in re.findall(r"NeuroPrune epoch 00\d: heads \d+ -> (\d+)", log)]
    assert after and after[-1] < 36, log[-3000:]
    assert "| train | epoch 003" in log  # training went on after pruning


def _cfg(extra):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, input_args=["bin", *TRAIN, *extra])
    return convert_namespace_to_omegaconf(args)


@pytest.mark.parametrize("extra, message", [
    (["--np-alpha", "-1"], "--np-alpha must be a finite number >= 0"),
    (["--np-beta", "nan"], "--np-beta must be a finite number >= 0"),
    (["--np-eps", "inf"], "--np-eps must be a finite number >= 0"),
    (["--np-eps", "0"], "--np-eps must be > 0"),
    (["--np-attn-modules", "encoder,foo"], "--np-attn-modules got ['foo']"),
    (["--np-penalty-scale", "sentence"], "--np-penalty-scale must be 'batch' or 'token'"),
])
def test_bad_criterion_options_fail_clearly(tiny_data, extra, message):
    cfg = _cfg(extra)
    cfg.task.data = str(tiny_data / "bin")
    task = tasks.setup_task(cfg.task)
    with pytest.raises(ValueError) as e:
        task.build_criterion(cfg.criterion)
    assert message in str(e.value)


def test_criterion_with_stock_translation_task_warns_once_that_nothing_is_pruned(tiny_data, caplog):
    stock = [a for a in TRAIN if a not in ("--np-theta", "0.3")]
    stock[stock.index("neuroprune_translation")] = "translation"
    args = options.parse_args_and_arch(options.get_training_parser(), input_args=["bin", *stock])
    cfg = convert_namespace_to_omegaconf(args)
    cfg.task.data = str(tiny_data / "bin")
    task = tasks.setup_task(cfg.task)
    with caplog.at_level("WARNING", logger="neuroprune_fairseq.fairseq_adapter.criterion"):
        task.build_criterion(cfg.criterion)
    warned = [r.getMessage() for r in caplog.records if "head pruning needs --task neuroprune_translation" in r.getMessage()]
    assert len(warned) == 1 and "TranslationTask" in warned[0]
    caplog.clear()
    cfg = _cfg([])
    cfg.task.data = str(tiny_data / "bin")
    with caplog.at_level("WARNING", logger="neuroprune_fairseq.fairseq_adapter.criterion"):
        tasks.setup_task(cfg.task).build_criterion(cfg.criterion)
    assert not [r for r in caplog.records if "head pruning needs" in r.getMessage()]


@pytest.mark.parametrize("extra, message", [
    (["--np-theta", "-0.1"], "--np-theta must be a finite number >= 0"),
    (["--distributed-world-size", "2", "--ddp-backend", "slowmo"], "needs --ddp-backend c10d / pytorch_ddp"),
    (["--distributed-world-size", "2", "--ddp-backend", "pytorch_ddp"], None),  # rebuilt after each pruning
    (["--distributed-world-size", "2", "--ddp-backend", "c10d"], None),
    (["--bf16"], "on GPUs use --fp16, --memory-efficient-fp16 or --amp"),
    (["--memory-efficient-bf16"], "on GPUs use --fp16, --memory-efficient-fp16 or --amp"),
    (["--memory-efficient-fp16", "--np-proximal"], None),  # accepted: the optimizer steps the model's own weights
    (["--fp16", "--np-proximal"], None),  # accepted: the step acts on the fp32 master copy
    (["--fp16", "--fp16-no-flatten-grads", "--np-proximal"], None),
])
def test_bad_task_options_fail_before_training(tiny_data, extra, message):
    cfg = _cfg(extra)
    cfg.task.data = str(tiny_data / "bin")
    if message is None:
        tasks.setup_task(cfg.task)
        return
    with pytest.raises(ValueError) as e:
        tasks.setup_task(cfg.task)
    assert message in str(e.value)


def test_stock_arch_is_refused_with_the_fix(tiny_data):
    p = run_cli("fairseq_cli.train", ["bin", *TRAIN, "--arch", "transformer_iwslt_de_en", "--max-epoch", "1",
                                      "--save-dir", "never"], cwd=tiny_data, check=False)
    assert p.returncode != 0
    assert "use --arch neuroprune_transformer_iwslt_de_en" in p.stderr
    assert "begin training epoch" not in p.stdout + p.stderr
    assert not list((tiny_data / "never").glob("*.pt"))  # fairseq only made the empty directory


@pytest.mark.parametrize("criterion, penalty, scale", [("neuroprune_ce", "neuroprune", "batch"), ("l1_ce", "l1", "batch"),
                                                      ("neuroprune_ce", "neuroprune", "token"), ("l1_ce", "l1", "token")])
def test_criterion_loss_is_task_loss_plus_scaled_penalties(tiny_data, criterion, penalty, scale):
    from neuroprune_fairseq.core import attention_group_penalty, l1_penalty, mlp_preferential_attachment_penalty

    cfg = _cfg(["--criterion", criterion, "--np-alpha", "0.3", "--np-beta", "0.7", "--np-attn-modules", "encoder,cross",
                "--np-penalty-scale", scale])
    cfg.task.data = str(tiny_data / "bin")
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    model = task.build_model(cfg.model)
    with torch.no_grad():  # make Eq. 1's row weights non-zero
        for _, _, layer in mlp_modules(model):
            layer.fc1.weight[:3, :5] = 0
    crit = task.build_criterion(cfg.criterion)
    sample = next(iter(task.get_batch_iterator(dataset=task.dataset("valid"), max_sentences=8).next_epoch_itr(shuffle=False)))
    model.eval()  # no dropout; in eval mode the penalty is not added
    task_loss, sample_size, _ = crit(model, sample)
    model.train()
    model.apply(lambda m: setattr(m, "p", 0.0) if isinstance(getattr(m, "p", None), float) else None)  # dropout off
    total, _, log = crit(model, sample)
    mods = attention_modules(model)
    attn = [m for name, kind, m in mods if kind in ("encoder", "cross")]
    assert len(attn) == 4  # 2 encoder self + 2 cross, not the decoder self-attention
    mlp = [layer for _, _, layer in mlp_modules(model)]
    if penalty == "neuroprune":
        r_attn = sum(attention_group_penalty(m.q_proj.weight, m.k_proj.weight, m.v_proj.weight) for m in attn)
        r_mlp = sum(mlp_preferential_attachment_penalty(l.fc1.weight, l.fc2.weight, 1e-4) for l in mlp)
        assert r_mlp.item() > 0
    else:
        r_attn = l1_penalty(w for m in attn for w in (m.q_proj.weight, m.k_proj.weight, m.v_proj.weight))
        r_mlp = l1_penalty(w for l in mlp for w in (l.fc1.weight, l.fc2.weight))
    assert sample_size > 1
    reg = 0.3 * r_attn + 0.7 * r_mlp
    expected = task_loss + (reg if scale == "batch" else sample_size * reg)  # batch: the paper's literal sum
    assert torch.allclose(total, expected, rtol=1e-5)
    assert abs(log["np_r_attn"] - r_attn.item()) < 1e-3 * max(1.0, r_attn.item())
    assert abs(log["np_r_mlp"] - r_mlp.item()) < 1e-3 * max(1.0, r_mlp.item())
    assert abs(log["np_pen"] - (total - task_loss).item()) < 1e-3 * max(1.0, log["np_pen"])
    assert log["np_heads"] == 36 and log["np_sparsity"] > 0


@pytest.mark.parametrize("arch, width, ffn", [("neuroprune_iwslt_de_en", 528, 1024), ("neuroprune_multi30k_cpu", 120, 480)])
def test_paper_architectures_have_18_modules_of_6_heads(tiny_data, arch, width, ffn):
    args = [a for a in TRAIN if a not in TINY_ARCH] + ["--arch", arch]
    parser = options.get_training_parser()
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, input_args=["bin", *args]))
    cfg.task.data = str(tiny_data / "bin")
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    mods = attention_modules(model)
    assert [k for _, k, _ in mods].count("encoder") == 6 and [k for _, k, _ in mods].count("cross") == 6
    assert len(mods) == 18 and head_counts(model) == [6] * 18
    assert {m.head_dim for _, _, m in mods} == {width // 6}
    assert {layer.fc1.weight.shape for _, _, layer in mlp_modules(model)} == {(ffn, width)}


def test_model_without_fairseq_attention_is_refused(tiny_data):
    args = [a for a in TRAIN if a not in TINY_ARCH] + ["--arch", "lstm", "--encoder-layers", "1", "--decoder-layers", "1"]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), input_args=["bin", *args]))
    cfg.task.data = str(tiny_data / "bin")
    task = tasks.setup_task(cfg.task)
    with pytest.raises(ValueError, match="has no fairseq MultiheadAttention"):
        task.build_model(cfg.model)


@pytest.mark.parametrize("criterion", ["neuroprune_ce", "l1_ce"])
def test_task_loss_is_exactly_label_smoothed_cross_entropy(tiny_data, criterion):
    """Regression: the criterion once shadowed label smoothing's eps with --np-eps."""
    from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion

    cfg = _cfg(["--criterion", criterion, "--np-alpha", "0", "--np-beta", "0", "--label-smoothing", "0.1"])
    cfg.task.data = str(tiny_data / "bin")
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    torch.manual_seed(0)
    model = task.build_model(cfg.model).eval()
    sample = next(iter(task.get_batch_iterator(dataset=task.dataset("valid"), max_sentences=8).next_epoch_itr(shuffle=False)))
    ours, _, log = task.build_criterion(cfg.criterion)(model, sample)
    ref, _, ref_log = LabelSmoothedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=0.1)(model, sample)
    assert torch.equal(ours, ref) and torch.equal(log["nll_loss"], ref_log["nll_loss"])
    # smoothing 0.1 is really applied: not the 1e-4 (--np-eps) the bug used
    shadowed, _, _ = LabelSmoothedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=1e-4)(model, sample)
    assert abs(ours.item() - shadowed.item()) > 1e-4 * abs(ours.item())


def test_theta_scan_predicts_what_pruning_keeps(trained, capsys):
    from neuroprune_fairseq.fairseq_adapter.checkpoints import load
    from neuroprune_fairseq.commands.theta_scan import cli_main as scan_main

    d, _ = trained
    src, data = d / "ck" / "checkpoint2.pt", str(d / "bin")
    heads, _ = heads_in_checkpoint(src)
    rows = scan_main(["--path", str(src), "--data", data, "--theta", "0", "0.3", "1000"])
    printed = capsys.readouterr().out
    assert [r["heads"] for r in rows] == heads and "total" in printed
    assert [r["kept"]["0"] for r in rows] == heads  # nothing is within distance 0
    assert [r["kept"]["1000"] for r in rows] == [1] * len(heads)  # everything is similar: one head each
    assert all(r["min_dist"] is None or r["min_dist"] <= r["median_dist"] for r in rows)
    model = load(str(src), data).model
    prune_redundant_heads_(model, 0.3)
    assert head_counts(model) == [r["kept"]["0.3"] for r in rows]
    with pytest.raises(SystemExit):
        scan_main(["--path", str(src), "--data", data, "--theta", "-1"])
