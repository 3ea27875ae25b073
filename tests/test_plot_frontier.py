"""scripts/plot_frontier.py on a small hand-written results file (scripts/sweep_heads.py rows):
the matched table (K per row, method per column, seeds shown), the efficient-frontier points
within 1 and 2 BLEU of dense, and the figure."""
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
from neuroprune_fairseq.recipes import frontier_tables, plot_frontier  # noqa: E402

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
    assert frontier_tables.cell([1.0, 2.0, None], "{:.1f}") == "1.5 (1.0 / 2.0)"
    assert frontier_tables.cell([None], "{:.1f}") == ""
    assert plot_frontier.label({"method": "michel", "mode": None}) == "michel-noft"
    assert plot_frontier.label({"method": "dsp", "mode": "joint"}) == "dsp-joint"
    assert plot_frontier.label({"method": "michel", "K": 5}) == "michel"


def test_dense_ft_reference_and_bleu_per_test_set(tmp_path, capsys):
    """dense-ft rows are the reference (mean over seeds) of every 'within x BLEU'; rows with bleu_sets
    get one matched block per test set; the controls are listed with their BLEU per set."""
    sets = {"dense": (38.97, 38.55), "ft1": (38.6, 38.2), "ft2": (39.0, 38.4), "np": (38.1, 37.0), "dsp": (37.9, 37.6)}

    def row(method, seed, key, K, heads, sp):
        t, v = sets[key]
        return {"method": method, "K": K, "seed": seed, "epochs": 3, "bleu": t, "heads_kept": heads, "sparsity": sp,
                "bleu_sets": {"test_2016_flickr": t, "val": v}, "structured_share": 20.0, "flops_ratio": 0.8}
    rows = [row("dense", 1, "dense", 108, 108, 0.0), row("dense-ft", 1, "ft1", 108, 108, 0.0),
            row("dense-ft", 2, "ft2", 108, 108, 0.0), row("neuroprune", 1, "np", 50, 50, 30.0),
            row("dsp-joint", 1, "dsp", 50, 50, 24.0)]
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot_frontier.main([str(f), "--out", str(tmp_path / "f.png"), "--table", str(tmp_path / "t.md")])
    md = (tmp_path / "t.md").read_text()
    assert "every \"within x BLEU\" below is of dense-ft, 38.80" in md  # (38.6 + 39.0) / 2
    assert "| dense-ft | 2 | 3 | 39.00 | 38.40 | 0.00 | 108 |" in md
    assert "**BLEU test_2016_flickr**" in md and "**BLEU val**" in md
    val = md.split("**BLEU val**")[1].split("**sparsity")[0]
    assert "| K | neuroprune | dsp-joint |" in val and "| 50 | 37.00 | 37.60 |" in val
    one = md.split("**within 1 BLEU of dense-ft (38.80)**")[1].split("**within 2")[0]
    assert "| neuroprune | 50 | 1 | 50 | 30.00 | 38.10 | * |" in one and "| dsp-joint | 50 | 1 | 50 | 24.00 | 37.90 | * |" in one
    assert "| K | neuroprune | dsp-joint |" in md.split("**FLOPs ratio**")[1]
