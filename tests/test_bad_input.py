"""Nothing silently wrong, nothing overwritten (issue 23): evaluation with another prep's
dictionaries, the logged sparsity under a half-precision loss, an unreached head target, the
README's and finalize's generate commands, input = output in finalize and evaluate, DSP
finalize's head bounds, a file that is not a checkpoint, and bad input to neuroprune-prepare."""
import gzip
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY_ARCH, USER_DIR, run_cli
from neuroprune_fairseq.commands import dsp_finalize
from neuroprune_fairseq.commands.finalize import cli_main as finalize_main
from neuroprune_fairseq.fairseq_adapter.dictionaries import TASK_STATE_KEY, bin_fingerprint, dict_sizes
from neuroprune_fairseq.recipes import datafiles, evaluate, preparation, prepare, steps
from test_fairseq_e2e import TRAIN, heads_in_checkpoint
from test_prepare_evaluate import write_corpus

SIZES = (("train", 200), ("valid", 20), ("test", 15))
VOCAB = 40
# a bijection on letters (case kept): the renamed corpus has the same structure, so its prep has
# dictionaries of the same size, but other tokens at each index
RENAME = str.maketrans("abdeiklmnoprstuvzABDEIKLMNOPRSTUVZQ", "bdeiklmnoprstuvzaBDEIKLMNOPRSTUVZAQ")


def _read(path):
    return Path(path).read_bytes()


@pytest.fixture(scope="module")
def preps(tmp_path_factory):
    """Two preps of one pair (xx->yy) whose dictionaries have the same size and other tokens, and
    a tiny model trained on the first."""
    d = tmp_path_factory.mktemp("bad_input")
    raw_a = write_corpus(d / "raw_a", sizes=SIZES, gz_train=False)
    raw_b = d / "raw_b"
    raw_b.mkdir()
    for f in raw_a.iterdir():
        (raw_b / f.name).write_text(f.read_text().translate(RENAME))
    preparation.prepare(raw_a, d / "prep_a", "xx", "yy", vocab_size=VOCAB)
    preparation.prepare(raw_b, d / "prep_b", "xx", "yy", vocab_size=VOCAB)
    steps.train(d / "prep_a" / "bin", d / "model", [
        *TINY_ARCH, "--share-all-embeddings", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--np-no-head-pruning", "--optimizer", "adam", "--lr", "0.005", "--max-tokens", "2000", "--max-update", "20",
        "--log-interval", "10"], logfile=d / "train.log")
    (d / "in.xx").write_text("ka lo mi\nnu pe\n")
    (d / "in.yy").write_text("IMq OLq AKq\nEPq UNq\n")
    return d


# ---------------------------------------------------------------- 1. dictionaries of another prep

def test_evaluate_refuses_a_prep_with_other_dictionaries_of_the_same_size(preps, tmp_path):
    a, b, ckpt = preps / "prep_a", preps / "prep_b", preps / "model" / "checkpoint_last.pt"
    assert dict_sizes(a / "bin", "xx", "yy") == dict_sizes(b / "bin", "xx", "yy")  # only the tokens differ
    fa, fb = bin_fingerprint(a / "bin", "xx", "yy"), bin_fingerprint(b / "bin", "xx", "yy")
    assert fa != fb
    # recorded at prepare time and at training time (neuroprune_translation's task_state)
    assert json.loads((a / "prep.json").read_text())["dict_sha256"] == fa
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["task_state"][TASK_STATE_KEY] == fa
    out = tmp_path / "hyps.txt"
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--prep-dir", str(b), "--path", str(ckpt), "--src", str(preps / "in.xx"),
                       "--ref", str(preps / "in.yy"), "--output", str(out)])
    msg = str(e.value)
    assert f"--prep-dir {b}" in msg and f"--path {ckpt}" in msg and "word salad" in msg
    assert "pass the --prep-dir that the model was trained on" in msg
    assert not out.exists()
    with pytest.raises(SystemExit, match="not the ones checkpoint"):
        evaluate.main(["--dataset", "multi30k", "--prep-dir", str(b), "--path", str(ckpt)])
    # the right prep passes the check
    assert evaluate.check_dictionaries(a, ckpt, evaluate.read_checkpoint(ckpt)) == "checkpoint fingerprint"


def test_without_a_recorded_fingerprint_the_checkpoints_data_folder_decides(preps, tmp_path, capsys):
    """A checkpoint of another task (no fingerprint): its data folder's dictionaries are compared,
    found as stored, from here, or relative to the checkpoint's folder (a relative prep/bin)."""
    a, b = preps / "prep_a", preps / "prep_b"
    state = torch.load(preps / "model" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    state["task_state"].pop(TASK_STATE_KEY)
    run_dir = tmp_path / "run"
    shutil.copytree(a, run_dir / "prep")
    state["cfg"]["task"]["data"] = "prep/bin"  # relative, as a run started in run_dir stores it
    ckpt = run_dir / "ckpt" / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save(state, ckpt)
    assert evaluate.check_dictionaries(a, ckpt, evaluate.read_checkpoint(ckpt)).startswith("same dictionaries as")
    with pytest.raises(ValueError, match=r"differ from those in the data folder of checkpoint") as e:
        evaluate.check_dictionaries(b, ckpt, evaluate.read_checkpoint(ckpt))
    assert str(run_dir / "prep" / "bin") in str(e.value) and str(b) in str(e.value)
    # the data folder is gone: a warning, no refusal
    shutil.rmtree(run_dir / "prep")
    assert evaluate.check_dictionaries(b, ckpt, evaluate.read_checkpoint(ckpt)) == "unchecked"
    assert "cannot check that --prep-dir" in capsys.readouterr().err


# ---------------------------------------------------------------- 2. counts under a half-precision loss

def test_logged_sparsity_is_finite_and_exact_with_a_half_precision_model(tiny_data):
    """258,048 matrix weights, 3/4 of them zero: a count above fp16's 65,504 that used to be
    cast to the loss dtype (inf); the penalties here are fp16 as under --fp16."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    from neuroprune_fairseq.fairseq_adapter.sites import matrices, model_sparsity

    arch = list(TINY_ARCH)
    for flag in ("--encoder-embed-dim", "--decoder-embed-dim"):
        arch[arch.index(flag) + 1] = "96"
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(tiny_data / "bin"), "--user-dir", USER_DIR, "--task", "neuroprune_translation", *arch,
        "--criterion", "neuroprune_ce", "--label-smoothing", "0.1", "--np-no-head-pruning", "--cpu", "--max-tokens", "300"])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model, crit = task.build_model(cfg.model), task.build_criterion(cfg.criterion)
    task.load_dataset("valid")
    sample = next(iter(task.get_batch_iterator(task.dataset("valid"), max_tokens=300).next_epoch_itr(shuffle=False)))
    torch.manual_seed(0)
    with torch.no_grad():
        for w in matrices(model):
            w.masked_fill_(torch.rand_like(w) < 0.75, 0.0)
    model.half().train()
    assert crit.penalties(model)[0].dtype == torch.float16
    zeros = sum(int((w == 0).sum()) for w in matrices(model))
    assert zeros > 65504 and torch.tensor(float(zeros)).half().isinf()  # what the old cast produced
    _, _, log = crit(model, sample)
    assert math.isfinite(log["np_sparsity"]) and log["np_sparsity"] == pytest.approx(model_sparsity(model).sparsity, abs=1e-9)
    assert 74 < log["np_sparsity"] < 76


# ---------------------------------------------------------------- 3. an unreached head target

@pytest.fixture(scope="module")
def short_run(tiny_data):
    """The issue's case on tiny data: target 18 of 36 heads at epoch 1 of 2, --max-update 4 (< 1 epoch)."""
    p = run_cli("fairseq_cli.train", ["bin", *TRAIN, "--np-target-heads", "18", "--np-target-epoch", "1",
                                      "--max-epoch", "2", "--max-update", "4", "--save-dir", "short_run"], cwd=tiny_data)
    return tiny_data, tiny_data / "short_run" / "checkpoint_last.pt", p.stdout + p.stderr


def test_max_update_before_the_target_epoch_is_warned_at_start_and_end(short_run):
    _, ckpt, log = short_run
    start = re.search(r"--max-update 4 ends the run before epoch 1 ends \(about (\d+) updates are needed, (\d+) per epoch\)", log)
    assert start, log[-3000:]
    assert int(start.group(1)) == int(start.group(2)) > 4
    assert "--np-target-heads 18 (reached at --np-target-epoch 1) will not be reached" in log
    assert f"Raise --max-update to at least {start.group(1)}" in log
    end = re.search(r"the run ends \(--max-update 4\) with 36 heads \(6\.6\.6\.6\.6\.6 per module\): the head target "
                    r"--np-target-heads 18 was NOT reached", log)
    assert end, log[-3000:]
    assert log.index(start.group(0)) < log.index(end.group(0))
    assert sum(heads_in_checkpoint(ckpt)[0]) == 36


def test_updates_until_target_counts_like_max_update():
    from neuroprune_fairseq.fairseq_adapter.target_heads import updates_until_target

    class Itr:
        def __init__(self, epoch, n, taken):
            self.epoch, self.n, self.iterations_in_epoch = epoch, n, taken

        def __len__(self):
            return self.n

    # first step of a fresh run, 10 batches per epoch: epoch 1 prunes in update #9 (0-based), so 10 are needed
    assert updates_until_target(Itr(1, 10, 1), 0, 1) == 10
    assert updates_until_target(Itr(1, 10, 1), 0, 2) == 20
    # --update-freq 3: 4 updates per epoch (the last one of 1 batch)
    assert updates_until_target(Itr(1, 10, 3), 0, 2, update_freq=3) == 8
    # resumed in epoch 2 after 13 updates, at its 4th batch
    assert updates_until_target(Itr(2, 10, 4), 13, 2) == 20
    assert updates_until_target(Itr(3, 10, 1), 20, 2) is None  # past the target epoch


# ---------------------------------------------------------------- 4. / 5. finalize: generate command, same files

def test_finalize_refuses_two_options_naming_one_file_and_prints_absolute_paths(short_run, tmp_path, monkeypatch, capsys):
    d, ckpt, _ = short_run
    data = ["--data", str(d / "bin")]
    before = _read(ckpt)
    b = tmp_path / "b.pt"
    for extra in ([], ["--overwrite"]):
        assert finalize_main(["--path", str(ckpt), "--output", str(b), "--json", str(b), *data, *extra]) == 2
        assert f"--output {b} and --json {b} are the same file" in capsys.readouterr().err
        assert not b.exists()
        assert finalize_main(["--path", str(ckpt), "--output", str(b), "--json", str(ckpt), *data, *extra]) == 2
        assert f"--json {ckpt} is the input checkpoint --path {ckpt}" in capsys.readouterr().err
        os.symlink(b, tmp_path / "alias.json")  # the same file under another name, not yet written
        assert finalize_main(["--path", str(ckpt), "--output", str(b), "--json", str(tmp_path / "alias.json"),
                              *data, *extra]) == 2
        assert "are the same file" in capsys.readouterr().err
        os.unlink(tmp_path / "alias.json")
    assert _read(ckpt) == before and not b.exists()
    # the printed command: absolute data path (the checkpoint stores the relative 'bin'), batches of any size
    monkeypatch.chdir(d)
    assert finalize_main(["--path", str(ckpt), "--output", str(b), "--json", str(tmp_path / "b.json")]) == 0
    assert state_data(ckpt) == "bin"
    cmd = [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("fairseq-generate")]
    assert len(cmd) == 1 and cmd[0].startswith(f"fairseq-generate {d / 'bin'} --user-dir ")
    assert cmd[0].endswith(f"--path {b} --beam 5 --required-batch-size-multiple 1")


def state_data(ckpt):
    return torch.load(ckpt, map_location="cpu", weights_only=False)["cfg"]["task"]["data"]


def test_readme_generate_commands_pass_required_batch_size_multiple_1():
    text = Path(ROOT, "README.md").read_text()
    blocks = re.findall(r"fairseq-(?:generate|interactive) .*?(?:\n(?!\s)|\Z)", text, re.S)
    commands = [b for b in blocks if "--path" in b and "--beam" in b]
    assert len(commands) >= 3
    for c in commands:
        assert "--required-batch-size-multiple 1" in c, c
    assert "fairseq's default `--required-batch-size-multiple 8`" in text


# ---------------------------------------------------------------- 6. / 8. evaluate: outputs, inputs, bad files

def test_evaluate_never_writes_over_an_input_and_names_bad_inputs(preps, tmp_path):
    a, ckpt = preps / "prep_a", preps / "model" / "checkpoint_last.pt"
    src, ref = tmp_path / "s.xx", tmp_path / "r.yy"
    shutil.copy(preps / "in.xx", src)
    shutil.copy(preps / "in.yy", ref)
    keep = {p: _read(p) for p in (src, ref, ckpt)}
    base = ["--prep-dir", str(a), "--path", str(ckpt), "--src", str(src), "--ref", str(ref)]
    cases = [(["--output", str(src), "--overwrite"], f"--output {src} is the input --src"),
             (["--output", str(ref), "--overwrite"], f"--output {ref} is the input --ref"),
             (["--output", str(ckpt), "--overwrite"], f"--output {ckpt} is the input --path"),
             (["--json", str(src)], f"--json {src} is the input --src"),
             (["--output", str(tmp_path / "o"), "--json", str(tmp_path / "o"), "--overwrite"], "are the same file")]
    for extra, msg in cases:
        with pytest.raises(SystemExit) as e:
            evaluate.main(base + extra)
        assert msg in str(e.value)
        assert "are the same file" in msg or "never an input" in str(e.value)
    assert {p: _read(p) for p in keep} == keep
    # --overwrite still replaces an earlier output
    out = tmp_path / "hyps.txt"
    out.write_text("old\n")
    evaluate.main(base + ["--output", str(out), "--overwrite"])
    assert len(datafiles.read_lines(out)) == 2
    # not a checkpoint: finalize's loader names the file
    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint\n")
    with pytest.raises(SystemExit, match=f"--path {re.escape(str(bad))} is not a readable fairseq checkpoint"):
        evaluate.main(["--prep-dir", str(a), "--path", str(bad), "--src", str(src)])
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(SystemExit, match="is not a readable fairseq checkpoint|no 'model' and 'cfg'"):
        evaluate.main(["--prep-dir", str(a), "--path", str(tmp_path / "plain.pt"), "--dataset", "multi30k"])
    # an empty --src
    empty = tmp_path / "empty.xx"
    empty.write_text("")
    with pytest.raises(SystemExit, match=f"--src {re.escape(str(empty))} is empty"):
        evaluate.main(["--prep-dir", str(a), "--path", str(ckpt), "--src", str(empty), "--output", str(tmp_path / "e")])
    assert not (tmp_path / "e").exists()


# ---------------------------------------------------------------- 7. DSP finalize bounds

def test_dsp_finalize_heads_out_of_range_is_the_training_bound(short_run, tmp_path):
    d, ckpt, _ = short_run
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    state["criterion"] = {"dsp_logits": torch.randn(36)}  # a checkpoint holding 36 gate logits
    dsp = tmp_path / "dsp.pt"
    torch.save(state, dsp)
    out = tmp_path / "final.pt"
    for k in ("0", "500", "-3"):
        with pytest.raises(SystemExit, match=rf"--heads must be in \[1, 36\] \(the model has 36 heads; training accepts "
                                             rf"the same range for --dsp-heads\), got {k}"):
            dsp_finalize.main(["--path", str(dsp), "--output", str(out), "--data", str(d / "bin"), "--heads", k])
        assert not out.exists()
    info = dsp_finalize.main(["--path", str(dsp), "--output", str(out), "--data", str(d / "bin"), "--heads", "36"])
    assert info["heads_kept"] == 36 and out.exists()


# ---------------------------------------------------------------- 9. / 10. neuroprune-prepare

def test_prepare_names_bad_input_and_leaves_no_partial_folder(tmp_path):
    raw = write_corpus(tmp_path / "raw", sizes=(("train", 40), ("valid", 5), ("test", 5)), gz_train=False)
    out = tmp_path / "out"

    def refused(match, **kw):
        with pytest.raises(ValueError, match=match):
            preparation.prepare(kw.pop("raw", raw), out, "xx", "yy", **kw)
        assert not out.exists()

    for v in (0, -5):
        refused(rf"--vocab-size must be a positive integer .* got {v}", vocab_size=v)
    with pytest.raises(SystemExit, match="--vocab-size must be a positive integer"):
        prepare.main(["--data-dir", str(raw), "--src-lang", "xx", "--tgt-lang", "yy", "--out", str(out), "--vocab-size", "0"])
    # a non-UTF-8 byte: file, line and byte named (plain and gzip)
    good = (raw / "train.yy").read_bytes()
    lines = good.split(b"\n")
    lines[6] = lines[6] + b" caf\xe9"
    (raw / "train.yy").write_bytes(b"\n".join(lines))
    refused(rf"{re.escape(str(raw / 'train.yy'))}, line 7: byte 0xe9 .* is not UTF-8 .*iconv", vocab_size=30)
    (raw / "train.yy").unlink()
    with gzip.open(raw / "train.yy.gz", "wb") as fh:
        fh.write(b"\n".join(lines))
    refused(rf"train\.yy\.gz, line 7: byte 0xe9", vocab_size=30)
    (raw / "train.yy.gz").unlink()
    (raw / "train.yy").write_bytes(good)
    # empty training files; a training side of empty lines; an empty test split
    for name in ("train.xx", "train.yy"):
        (raw / name).write_text("")
    refused(r"the train split is empty \(.*train\.xx and .*train\.yy have no lines\)", vocab_size=30)
    (raw / "train.xx").write_text("\n" * 40)
    (raw / "train.yy").write_bytes(good)
    refused(rf"{re.escape(str(raw / 'train.xx'))} has 40 lines but all are empty", vocab_size=30)
    raw = write_corpus(tmp_path / "raw2", sizes=(("train", 40), ("valid", 5), ("test", 5)), gz_train=False)
    for name in ("test.xx", "test.yy"):
        (raw / name).write_text("")
    refused(r"the test split is empty", raw=raw, vocab_size=30)
    # a failure inside sentencepiece (vocabulary too large) removes what it wrote, in a folder that existed too
    raw = write_corpus(tmp_path / "raw3", sizes=(("train", 40), ("valid", 5), ("test", 5)), gz_train=False)
    refused("--vocab-size 5000 is too large", raw=raw, vocab_size=5000)
    refused(r"--vocab-size 5 is too small for this training corpus: its characters and the unknown token need (\d+) "
            r"pieces .*pass --vocab-size \1 or more", raw=raw, vocab_size=5)
    out.mkdir()
    (out / "mine.txt").write_text("the user's")
    with pytest.raises(ValueError, match="too large"):
        preparation.prepare(raw, out, "xx", "yy", vocab_size=5000)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_prepare_rerun_with_other_settings_is_refused_or_rebuilt(tmp_path):
    raw = write_corpus(tmp_path / "raw", sizes=(("train", 60), ("valid", 5), ("test", 5)), gz_train=False)
    other = write_corpus(tmp_path / "other", sizes=(("train", 60), ("valid", 5), ("test", 5)), gz_train=False)
    out = tmp_path / "prep"
    preparation.prepare(raw, out, "xx", "yy", vocab_size=40)
    first = _read(out / "bin" / "dict.xx.txt")
    # the same settings (the vocabulary omitted: the one prepared) return the folder as it is
    assert preparation.prepare(raw, out, "xx", "yy") == out / "bin"
    assert preparation.prepare(raw, out, "xx", "yy", vocab_size=40) == out / "bin"
    with pytest.raises(ValueError, match=r"already prepared with other settings: --vocab-size 45 \(prepared with 40\)"
                                         r".*pass --overwrite to rebuild"):
        preparation.prepare(raw, out, "xx", "yy", vocab_size=45)
    with pytest.raises(ValueError, match=rf"--data-dir {re.escape(str(other.resolve()))} \(prepared from "
                                         rf"{re.escape(str(raw.resolve()))}\)"):
        preparation.prepare(other, out, "xx", "yy")
    with pytest.raises(SystemExit, match=r"--vocab-size 45 \(prepared with 40\)"):
        prepare.main(["--data-dir", str(raw), "--src-lang", "xx", "--tgt-lang", "yy", "--out", str(out), "--vocab-size", "45"])
    assert _read(out / "bin" / "dict.xx.txt") == first
    # told to: rebuilt with the new settings
    prepare.main(["--data-dir", str(raw), "--src-lang", "xx", "--tgt-lang", "yy", "--out", str(out), "--vocab-size", "45",
                  "--overwrite"])
    meta = json.loads((out / "prep.json").read_text())
    assert meta["vocab_size"] == 45 and meta["dict_sha256"] == bin_fingerprint(out / "bin", "xx", "yy")
    import sentencepiece as spm

    assert spm.SentencePieceProcessor(model_file=str(out / "spm.model")).get_piece_size() == 45
