"""The topology report (``python -m neuroprune_fairseq.commands.topology``) on hand-made checkpoints:
a real 2-update fairseq run whose saved weights are then set to known values (known degrees,
zero rows/columns, zeroed input groups, a removed head, removed neurons), and a HF folder."""
import json
import os

import numpy as np
import pytest
import torch
from fairseq.checkpoint_utils import torch_persistent_save

from neuroprune_fairseq.core.topology import (degree_stats, dead_mlp_neurons, mlp_neuron_degrees, zero_cols,
                                              zero_input_groups, zero_rows, zeroed_heads)
from neuroprune_fairseq.commands.topology import FIGURES, cli_main, main

from conftest import ROOT, TINY_ARCH, USER_DIR, run_cli

D, DE, HD = 24, 48, 4  # TINY_ARCH: width 24, FFN 48, 6 heads of 4
DENSE_TOTAL = 6 * 4 * D * D + 4 * 2 * D * DE  # 6 attention modules, 4 MLP blocks


def test_core_functions_on_small_matrices():
    fc1 = torch.tensor([[1.0, 0.0, 2e-5], [0.0, 0.0, 0.0], [3.0, 1e-4, 1.0]])  # [d_e=3, d=3]
    fc2 = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # [d=2, d_e=3]
    assert mlp_neuron_degrees(fc1, fc2, 1e-4).tolist() == [1 + 2, 0 + 0, 3 + 1]
    assert mlp_neuron_degrees(fc1, fc2, 0.0).tolist() == [2 + 2, 0, 4]
    assert mlp_neuron_degrees([fc1, fc1], fc2, 1e-4).tolist() == [2 + 2, 0, 6 + 1]  # gated MLP
    assert dead_mlp_neurons(fc1, fc2) == [1]  # fc1 row 1 and fc2 column 1 are zero
    s = degree_stats(torch.tensor([3, 0, 4]))
    assert (s["n"], s["mean"], s["min"], s["max"]) == (3, 7 / 3, 0, 4)
    assert s["sd"] == pytest.approx(float(np.std([3, 0, 4])), abs=1e-12)
    assert s["histogram"] == {"degree": [0, 3, 4], "count": [1, 1, 1]}
    w = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert zero_rows(w) == [1] and zero_cols(w) == [0, 2]
    q = torch.tensor([[0.0, 1.0, 5e-5], [0.0, 2.0, 0.0]])
    assert zero_input_groups(q, q, torch.zeros(2, 3)) == [0]
    assert zero_input_groups(q, q, torch.zeros(2, 3), eps=1e-4) == [0, 2]
    qk = torch.ones(6, 3)
    qk[2:4] = 0
    out = torch.ones(3, 6)
    out[:, 2:4] = 0
    assert zeroed_heads(qk, qk, qk, out, head_dim=2) == [1]


# ----------------------------------------------------------------------------- fairseq
def _set_known_weights_(m):
    """Known topology in a trained state dict ``m`` (see the expectations below)."""
    # encoder.layers.0 MLP: every weight 0.5, then known holes
    m["encoder.layers.0.fc1.weight"] = torch.full((DE, D), 0.5)
    m["encoder.layers.0.fc2.weight"] = torch.full((D, DE), 0.5)
    m["encoder.layers.0.fc1.weight"][0] = 0  # neuron 0: no input -> degree 24, dead
    m["encoder.layers.0.fc2.weight"][:, 1] = 0  # neuron 1: no output -> degree 24, dead
    m["encoder.layers.0.fc1.weight"][2, :10] = 5e-5  # neuron 2: 10 connections below eps -> 38
    m["encoder.layers.0.fc1.weight"][3, :5] = 0  # neuron 3: 5 + 3 zero -> 40
    m["encoder.layers.0.fc2.weight"][:3, 3] = 0
    # encoder.layers.1 MLP: 8 neurons removed (as finalize does)
    for k in ("fc1.weight", "fc1.bias"):
        m[f"encoder.layers.1.{k}"] = m[f"encoder.layers.1.{k}"][:40].clone()
    m["encoder.layers.1.fc2.weight"] = m["encoder.layers.1.fc2.weight"][:, :40].clone()
    # encoder.layers.0 attention: input groups 3 and 7 zero in q, k, v
    for r in "qkv":
        m[f"encoder.layers.0.self_attn.{r}_proj.weight"][:, [3, 7]] = 0
    # encoder.layers.1 attention: head 2 removed
    keep = [i for i in range(6 * HD) if not 2 * HD <= i < 3 * HD]
    p = "encoder.layers.1.self_attn."
    for r in "qkv":
        m[p + f"{r}_proj.weight"] = m[p + f"{r}_proj.weight"][keep].clone()
        m[p + f"{r}_proj.bias"] = m[p + f"{r}_proj.bias"][keep].clone()
    m[p + "out_proj.weight"] = m[p + "out_proj.weight"][:, keep].clone()


EXPECTED_DEGREES = [24, 24, 38, 40] + [48] * 44


@pytest.fixture(scope="module")
def checkpoints(tiny_data):
    d = tiny_data
    run_cli("fairseq_cli.train", [
        "bin", *TINY_ARCH, "--user-dir", USER_DIR, "--task", "neuroprune_translation", "--np-no-head-pruning",
        "--criterion", "label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "0.001", "--max-tokens", "500",
        "--max-update", "2", "--save-dir", "ck_topology", "--no-epoch-checkpoints", "--no-progress-bar",
        "--seed", "1", "--num-workers", "0", "--cpu"], cwd=d)
    state = torch.load(d / "ck_topology" / "checkpoint_last.pt", map_location="cpu")
    _set_known_weights_(state["model"])
    a = d / "ck_topology" / "handmade.pt"
    torch_persistent_save(state, str(a))
    # B: A plus the DSP-style record of which original heads survive, and a module whose
    # only remaining head is a zeroed placeholder (record: no head kept)
    p = "decoder.layers.1.encoder_attn."
    rows = list(range(4 * HD, 5 * HD))
    for r in "qkv":
        state["model"][p + f"{r}_proj.weight"] = torch.zeros(HD, D)
        state["model"][p + f"{r}_proj.bias"] = state["model"][p + f"{r}_proj.bias"][rows].clone()
    state["model"][p + "out_proj.weight"] = torch.zeros(D, HD)
    full = list(range(6))
    state["neuroprune_finalize"] = {"kept_heads": [full, [0, 1, 3, 4, 5], full, full, full, []]}
    b = d / "ck_topology" / "recorded.pt"
    torch_persistent_save(state, str(b))
    return d, a, b


def test_fairseq_report_numbers(checkpoints, tmp_path):
    d, a, b = checkpoints
    out = tmp_path / "report"
    rep = main(["--path", str(a), "--compare", str(b), "--labels", "A", "B", "--out", str(out),
                    "--data", str(d / "bin")])
    with open(out / "topology.json") as f:
        assert json.load(f) == json.loads(json.dumps(rep))
    for name in FIGURES:
        assert (out / name).stat().st_size > 10_000, name
    A, B = rep["checkpoints"]
    assert [c["label"] for c in rep["checkpoints"]] == ["A", "B"] and rep["eps"] == 1e-4

    mlp = {m["name"]: m for m in A["mlp"]}
    m0 = mlp["encoder.layers.0"]
    assert m0["degree_max_possible"] == 2 * D
    assert m0["degree"]["histogram"] == {"degree": [24, 38, 40, 48], "count": [2, 1, 1, 44]}
    assert m0["degree"]["mean"] == pytest.approx(np.mean(EXPECTED_DEGREES), abs=1e-12)
    assert m0["degree"]["sd"] == pytest.approx(np.std(EXPECTED_DEGREES), abs=1e-12)
    assert (m0["dead_neurons"], m0["dead_neuron_indices"]) == (2, [0, 1])
    assert (m0["zero_rows_fc1"], m0["zero_cols_fc2"]) == (1, 1)
    assert m0["weights_zero"] == 24 + 24 + 5 + 3 and m0["sparsity"] == pytest.approx(100 * 56 / (2 * D * DE))
    m1 = mlp["encoder.layers.1"]
    assert (m1["neurons_dense"], m1["neurons_present"], m1["neurons_removed"]) == (48, 40, 8)
    assert m1["degree"]["n"] == 48 and m1["degree"]["histogram"]["degree"][0] == 0
    assert m1["degree"]["histogram"]["count"][0] == 8  # the removed neurons count as degree 0
    assert m1["sparsity"] == pytest.approx(100 * 8 * 2 * D / (2 * D * DE))

    attn = {x["name"]: x for x in A["attention"]}
    a0 = attn["encoder.layers.0.self_attn"]
    assert (a0["zero_input_groups"], a0["zero_input_group_indices"], a0["input_groups"]) == (2, [3, 7], D)
    assert a0["zero_rows"] == {"q": 0, "k": 0, "v": 0} and a0["kept_positions"] == list(range(6))
    assert a0["weights_zero"] == 3 * D * 2 and a0["sparsity"] == pytest.approx(100 * 144 / (4 * D * D))
    a1 = attn["encoder.layers.1.self_attn"]
    assert (a1["heads_dense"], a1["heads_present"], a1["heads_kept"], a1["kept_positions"]) == (6, 5, 5, "unknown")
    assert a1["weights_present"] == 4 * D * D - 4 * D * HD and a1["sparsity"] == pytest.approx(100 / 6)

    s = A["summary"]
    assert s["heads_per_module"] == [6, 5, 6, 6, 6, 6] and (s["heads_kept"], s["heads_dense"]) == (35, 36)
    assert s["head_positions"] == "not recorded"
    assert s["weights_dense"] == DENSE_TOTAL and s["weights_zero"] == 144 + 56
    assert s["sparsity"] == pytest.approx(100 * (144 + 56 + 4 * D * HD + 8 * 2 * D) / DENSE_TOTAL)
    assert (s["mlp_neurons_present"], s["mlp_neurons_dense"], s["mlp_degree"]["n"]) == (4 * DE - 8, 4 * DE, 4 * DE)
    assert (s["dead_neurons"], s["zero_input_groups"], s["input_groups"]) == (2, 2, 6 * D)

    # the project's own sparsity on the same model agrees
    from neuroprune_fairseq.fairseq_adapter.sites import model_sparsity
    from neuroprune_fairseq.fairseq_adapter.checkpoints import load

    model = load(str(a), str(d / "bin")).model
    assert model_sparsity(model).sparsity == pytest.approx(s["sparsity"], abs=1e-9)

    # B: recorded positions and the zeroed placeholder head
    battn = {x["name"]: x for x in B["attention"]}
    assert battn["encoder.layers.1.self_attn"]["kept_positions"] == [0, 1, 3, 4, 5]
    c = battn["decoder.layers.1.encoder_attn"]
    assert (c["heads_present"], c["heads_kept"], c["zeroed_heads"], c["kept_positions"]) == (1, 0, [0], [])
    assert c["zero_input_groups"] == D and c["zero_rows"] == {"q": HD, "k": HD, "v": HD} and c["zero_cols_out"] == HD
    assert B["summary"]["heads_per_module"] == [6, 5, 6, 6, 6, 0]
    assert B["summary"]["head_positions"].startswith("checkpoint")


def test_fairseq_options_and_bad_input(checkpoints, tmp_path, capsys):
    d, a, _ = checkpoints
    out = tmp_path / "r"
    p = run_cli("neuroprune_fairseq.commands.topology", ["--path", str(a), "--out", str(out), "--data", str(d / "bin"),
                "--removed-neurons", "skip", "--eps", "0", "--heatmap-modules", "encoder.layers.1.self_attn"], cwd=ROOT)
    assert p.returncode == 0 and "sparsity 4.20%" in p.stdout and "heads 35/36" in p.stdout, p.stdout
    with open(out / "topology.json") as f:
        rep = json.load(f)
    assert rep["eps"] == 0 and rep["removed_neurons"] == "skip"
    mlp = {m["name"]: m for m in rep["checkpoints"][0]["mlp"]}
    assert mlp["encoder.layers.1"]["degree"]["n"] == 40  # removed neurons left out
    assert mlp["encoder.layers.0"]["degree"]["histogram"]["degree"] == [24, 40, 48]  # eps 0: 5e-5 counts
    assert not (out / "heatmap_mlp.png").exists() and (out / "heatmap_attention.png").exists()
    with pytest.raises(SystemExit):  # existing report, no --overwrite
        cli_main(["--path", str(a), "--out", str(out), "--data", str(d / "bin")])
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["--path", str(a), "--compare", str(a), "--labels", "x", "--out", str(tmp_path / "x")])
    assert "2 checkpoints" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["--path", str(a), "--out", str(tmp_path / "y"), "--data", str(d / "bin"), "--heatmap-modules", "nope"])
    assert "nope" in capsys.readouterr().err and not (tmp_path / "y" / "topology.json").exists()
    with pytest.raises(SystemExit):
        cli_main(["--path", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "z")])
    assert "no such checkpoint" in capsys.readouterr().err


# ----------------------------------------------------------------------------- HF
def test_hf_pruned_folder(tmp_path):
    pytest.importorskip("transformers")
    from hf_helpers import tiny_bert
    from neuroprune_fairseq.hf import attention_sites, mlp_sites, prune_heads, save_pruned

    model = tiny_bert()
    sites = attention_sites(model)
    prune_heads(model, {sites[1].name: [0, 3]})  # 4 heads -> original 0 and 3
    mlp = mlp_sites(model)[0]
    with torch.no_grad():
        mlp.fc1[0].weight.fill_(0.5)
        mlp.fc2.weight.fill_(-0.5)
        mlp.fc2.weight[:, 5] = 0  # neuron 5: no output
        mlp.fc1[0].weight[7, :] = 0  # neuron 7: no input
        sites[0].q.weight[:, 2] = 0
        sites[0].k.weight[:, 2] = 0
        sites[0].v.weight[:, 2] = 0
    save_pruned(model, str(tmp_path / "m"), structured=False)  # zeros in place
    save_pruned(model, str(tmp_path / "s"))  # the default: what is zeroed whole is removed
    rs = main(["--path", str(tmp_path / "s"), "--out", str(tmp_path / "rs")])["checkpoints"][0]
    assert rs["attention"][0]["zero_input_group_indices"] == [2]  # shown in place again
    assert rs["summary"]["structure"]["input_groups_zeroed"] == 1 and rs["summary"]["structure"]["mlp_neurons_dead"] == 2
    tiny_bert().save_pretrained(str(tmp_path / "plain"))  # a plain HF folder, dense
    rep = main(["--path", str(tmp_path / "m"), "--compare", str(tmp_path / "plain"), "--out", str(tmp_path / "r")])
    c, plain = rep["checkpoints"]
    assert plain["format"] == "hf" and plain["summary"]["head_positions"] == "all heads present"
    assert (plain["summary"]["sparsity"], plain["summary"]["heads_kept"]) == (0.0, 8)
    assert c["format"] == "hf" and c["summary"]["head_positions"] == "neuroprune_pruned.json"
    a0, a1 = c["attention"]
    assert a1["kept_positions"] == [0, 3] and (a1["heads_present"], a1["heads_dense"]) == (2, 4)
    assert a0["zero_input_group_indices"] == [2] and a0["kept_positions"] == [0, 1, 2, 3]
    m0 = c["mlp"][0]
    assert m0["dead_neuron_indices"] == [5, 7] and m0["degree_max_possible"] == 32
    assert m0["degree"]["histogram"] == {"degree": [16, 32], "count": [2, 22]}  # 5 and 7 keep one side
    hd = 4
    assert c["summary"]["weights_dense"] == 2 * 4 * 16 * 16 + 2 * 2 * 16 * 24
    assert a1["weights_present"] == 4 * 16 * 2 * hd
    for name in FIGURES:
        assert os.path.getsize(tmp_path / "r" / name) > 10_000


def test_neuroprune_run_records_kept_head_positions(tiny_data, tmp_path):
    """A real NeuroPrune run saves which original heads each module keeps (task_state), the
    topology report shows them, and finalize keeps the record."""
    import re

    d = tiny_data
    p = run_cli("fairseq_cli.train", [
        "bin", *TINY_ARCH, "--user-dir", USER_DIR, "--task", "neuroprune_translation", "--criterion", "neuroprune_ce",
        "--np-alpha", "0.05", "--np-beta", "0.1", "--np-target-heads-per-module", "2", "--np-target-epoch", "1",
        "--optimizer", "adam", "--lr", "0.005", "--max-tokens", "500", "--max-epoch", "1",
        "--save-dir", str(tmp_path / "ck"), "--no-epoch-checkpoints", "--no-progress-bar", "--seed", "1",
        "--num-workers", "0", "--cpu"], cwd=d)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    logged = {m.group(1): [int(x) for x in m.group(2).split(",")]
              for m in re.finditer(r"(\S+) \[\w+\]: heads 6->2 kept=\[([\d, ]+)\]", p.stdout + p.stderr)}
    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    record = state["task_state"]["neuroprune_kept_heads"]
    assert len(record) == 6 and all(len(v) == 2 and v == sorted(v) and set(v) <= set(range(6)) for v in record.values())
    assert logged == record  # what the pruning logged is what the checkpoint says
    run_cli("neuroprune_fairseq.commands.finalize", ["--path", str(tmp_path / "ck" / "checkpoint_last.pt"),
                                                     "--output", str(tmp_path / "final.pt"), "--data", str(d / "bin")], cwd=ROOT)
    rep = main(["--path", str(tmp_path / "final.pt"), "--out", str(tmp_path / "rep"), "--data", str(d / "bin")])
    attn = rep["checkpoints"][0]["attention"]
    assert {a["name"]: a["kept_positions"] for a in attn} == record
    assert "task_state" in rep["checkpoints"][0]["summary"]["head_positions"]
