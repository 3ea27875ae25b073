"""scripts/plot_frontier.py on a small hand-written results file (scripts/sweep_heads.py rows):
the matched table (K per row, method per column, seeds shown), the efficient-frontier points
within 1 and 2 BLEU of dense, and the figure."""
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
from neuroprune_fairseq.recipes import plot_frontier  # noqa: E402

ROWS = [
    {"method": "dense", "K": 108, "seed": 1, "epochs": 0, "bleu": 32.5, "heads_kept": 108, "sparsity": 1.0,
     "train_wall_s": 0.0, "gen_sentences_per_s": 40.0},
    {"method": "neuroprune", "K": 50, "seed": 1, "epochs": 3, "bleu": 31.8, "heads_kept": 50, "sparsity": 40.0,
     "train_wall_s": 60.0, "gen_sentences_per_s": 50.0},
    {"method": "neuroprune", "K": 50, "seed": 2, "epochs": 3, "bleu": 31.2, "heads_kept": 50, "sparsity": 42.0,
     "train_wall_s": 62.0, "gen_sentences_per_s": 52.0},
    {"method": "neuroprune", "K": 25, "seed": 1, "epochs": 3, "bleu": 30.0, "heads_kept": 25, "sparsity": 48.0,
     "train_wall_s": 58.0, "gen_sentences_per_s": 55.0},
    {"method": "dsp-joint", "K": 50, "seed": 1, "epochs": 3, "bleu": 30.9, "heads_kept": 50, "sparsity": 23.0,
     "train_wall_s": 70.0, "gen_sentences_per_s": 45.0},
    {"method": "dsp-joint", "K": 25, "seed": 1, "epochs": 3, "bleu": 27.0, "heads_kept": 25, "sparsity": 33.0,
     "train_wall_s": 71.0, "gen_sentences_per_s": 47.0},
    {"method": "michel", "K": 25, "seed": 1, "epochs": 3, "bleu": 28.0, "heads_kept": 25, "sparsity": 33.0,
     "train_wall_s": 65.0, "gen_sentences_per_s": 46.0},
    # a scripts/sweep_dsp.py row (no fine-tuning after pruning): labelled apart
    {"method": "dsp", "mode": "pipelined", "K": 50, "bleu": 28.6, "heads_kept": 50, "sparsity": 23.0},
]


def test_frontier_tables_and_figure(tmp_path, capsys):
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out, md_path = tmp_path / "f.png", tmp_path / "t.md"
    plot_frontier.main([str(f), "--out", str(out), "--table", str(md_path)])
    assert out.stat().st_size > 20_000
    md = md_path.read_text()
    assert md == capsys.readouterr().out.split("wrote ")[0].rstrip("\n") + "\n"
    # matched table: methods in a fixed order, K descending, two seeds as mean (s1 / s2)
    assert "| K | neuroprune | dsp-joint | michel | dsp-pipelined-noft |" in md
    assert "| 50 | 31.50 (31.80 / 31.20) | 30.90 |  | 28.60 |" in md
    assert "| 25 | 30.00 | 27.00 | 28.00 |  |" in md
    assert "| 50 | 41.00 (40.00 / 42.00) | 23.00 |  | 23.00 |" in md  # sparsity
    assert "| 50 | 61 (60 / 62) | 70 |  |  |" in md  # train s
    assert "| 25 | 55.0 | 47.0 | 46.0 |  |" in md  # generation sentences/s
    assert "(seeds 1, 2: mean, then each seed in order)" in md
    # efficient frontier: within 1 BLEU of dense (32.5) are dense and NeuroPrune K=50 seed 1 only
    one = md.split("**within 1 BLEU")[1].split("**within 2 BLEU")[0]
    assert "| neuroprune | 50 | 1 | 50 | 40.00 | 31.80 | * |" in one
    assert "seed" in one and "| neuroprune | 50 | 2 |" not in one and "dsp-joint" not in one
    two = md.split("**within 2 BLEU")[1].split("Matched head counts")[0]
    assert "| neuroprune | 50 | 2 | 50 | 42.00 | 31.20 | * |" in two  # more sparsity at the same heads
    assert "| neuroprune | 50 | 1 | 50 | 40.00 | 31.80 |  |" in two
    assert "| neuroprune | 25 |" not in two  # 30.0 is 2.5 below dense
    assert "| dsp-joint | 50 | 1 | 50 | 23.00 | 30.90 | * |" in two and "michel" not in two
    # NeuroPrune vs the nearest DSP point (DSP joint preferred over the no-fine-tuning rows)
    assert "| neuroprune heads | neuroprune BLEU | dsp-joint BLEU | dsp-joint heads |" in md


def test_cell_and_labels():
    assert plot_frontier.cell([1.0, 2.0, None], "{:.1f}") == "1.5 (1.0 / 2.0)"
    assert plot_frontier.cell([None], "{:.1f}") == ""
    assert plot_frontier.label({"method": "michel", "mode": None}) == "michel-noft"
    assert plot_frontier.label({"method": "dsp", "mode": "joint"}) == "dsp-joint"
    assert plot_frontier.label({"method": "michel", "K": 5}) == "michel"
