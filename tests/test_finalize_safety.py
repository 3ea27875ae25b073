"""finalize on a stock-arch checkpoint with dead encoder and decoder neurons: exact counts, a
checkpoint that the printed fairseq-generate command loads, and no way to destroy a file."""
import json
import os
import shlex
import sys

import pytest
import torch

from conftest import run_cli
from neuroprune_fairseq.commands.finalize import cli_main as finalize_main
from test_fairseq_e2e import TRAIN, hypotheses

D, FFN = 24, 48
DEAD = {"encoder.layers.1": 5, "decoder.layers.0": 10, "decoder.layers.1": 4}


@pytest.fixture(scope="module")
def stock_checkpoint(tiny_data, tmp_path_factory):
    """1 epoch of stock ``--arch transformer`` (the tiny shape), then dead MLP neurons made by hand:
    fc2 columns zeroed (encoder layer 1, decoder layer 0) and fc1 rows zeroed (decoder layer 1)."""
    run_cli("fairseq_cli.train", ["bin", *TRAIN, "--arch", "transformer", "--np-no-head-pruning", "--max-epoch", "1",
                                  "--save-dir", "stock"], cwd=tiny_data)
    state = torch.load(tiny_data / "stock" / "checkpoint1.pt", map_location="cpu")
    assert state["cfg"]["model"].arch == "transformer"
    m = state["model"]
    m["encoder.layers.1.fc2.weight"][:, :5] = 0
    m["decoder.layers.0.fc2.weight"][:, :10] = 0
    m["decoder.layers.1.fc1.weight"][3:7] = 0
    d = tmp_path_factory.mktemp("fin")
    torch.save(state, d / "dead.pt")
    return tiny_data, d / "dead.pt"


def _generate(cmd, cwd):
    argv = shlex.split(cmd)
    assert argv[0] == "fairseq-generate"
    return run_cli("fairseq_cli.generate", [*argv[1:], "--batch-size", "16", "--cpu"], cwd=cwd)


def test_finalize_stock_arch_counts_decoder_neurons_and_writes_a_loadable_checkpoint(stock_checkpoint, tmp_path, capsys):
    d, src = stock_checkpoint
    out, js = tmp_path / "final.pt", tmp_path / "final.json"
    assert finalize_main(["--path", str(src), "--output", str(out), "--json", str(js), "--data", str(d / "bin")]) == 0
    printed = capsys.readouterr().out
    info = json.loads(js.read_text())
    removed = sum(DEAD.values())
    assert info["mlp_neurons_dense"] == 4 * FFN and info["mlp_neurons_kept"] == 4 * FFN - removed
    # 6 attention modules (4 d^2 each) + 4 MLPs (2 d FFN each), whatever was removed
    assert info["matrix_weights_dense"] == 6 * 4 * D * D + 4 * 2 * D * FFN
    assert info["matrix_weights_dense"] - info["matrix_weights_present"] == removed * 2 * D
    assert f"{removed * 2 * D:,} removed of {info['matrix_weights_dense']:,}" in printed
    assert info["arch"] == "neuroprune_transformer" and info["neurons_removed"]
    state = torch.load(out, map_location="cpu")
    assert state["cfg"]["model"].arch == "neuroprune_transformer"
    assert state["model"]["decoder.layers.0.fc1.weight"].shape == (FFN - 10, D)
    # the printed command loads it, and it translates exactly as the checkpoint it came from
    cmd = [l.strip() for l in printed.splitlines() if l.strip().startswith("fairseq-generate")]
    assert len(cmd) == 1 and f"--path {out}" in cmd[0]
    got = hypotheses(_generate(cmd[0], d).stdout)
    ref = hypotheses(_generate(cmd[0].replace(str(out), str(src)), d).stdout)
    assert len(got) == 40 and {k: v[1] for k, v in got.items()} == {k: v[1] for k, v in ref.items()}


def test_finalize_never_overwrites_without_being_told(stock_checkpoint, tmp_path, capsys):
    d, src = stock_checkpoint
    data = ["--data", str(d / "bin")]
    before = src.read_bytes()
    assert finalize_main(["--path", str(src), "--output", str(src), *data]) == 2
    assert "is the input checkpoint" in capsys.readouterr().err
    os.symlink(src, tmp_path / "alias.pt")  # the same file under another name
    assert finalize_main(["--path", str(src), "--output", str(tmp_path / "alias.pt"), "--overwrite", *data]) == 2
    assert "is the input checkpoint" in capsys.readouterr().err
    assert src.read_bytes() == before
    out = tmp_path / "mine.pt"
    out.write_text("a file of the user's")
    assert finalize_main(["--path", str(src), "--output", str(out), *data]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "a file of the user's"
    js = tmp_path / "report.json"
    js.write_text("{}")
    assert finalize_main(["--path", str(src), "--output", str(tmp_path / "new.pt"), "--json", str(js), *data]) == 2
    assert js.read_text() == "{}" and not (tmp_path / "new.pt").exists()
    assert finalize_main(["--path", str(src), "--output", str(out), "--overwrite", *data]) == 0
    assert torch.load(out, map_location="cpu")["model"]["decoder.layers.0.fc1.weight"].shape == (FFN - 10, D)


def test_finalize_on_a_file_that_is_not_a_checkpoint_says_so(tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a checkpoint\n")
    assert finalize_main(["--path", str(bad), "--output", str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err
    assert f"--path {bad} is not a readable fairseq checkpoint" in err
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    assert finalize_main(["--path", str(tmp_path / "plain.pt"), "--output", str(tmp_path / "o.pt")]) == 2
    assert f"--path {tmp_path / 'plain.pt'} is not a readable fairseq checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()
