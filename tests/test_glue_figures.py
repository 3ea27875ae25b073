"""Issue 22's GLUE figure tables (recipes/glue_figures.py) and their driver's bad input."""
import json
import os
import subprocess
import sys

import pytest

from neuroprune_fairseq.recipes import glue_figures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _row(task, tag, acc, sparsity=0.0, heads=72, **kw):
    return {"task": task, "method": "x", "tag": tag, "accuracy": acc, "sparsity": sparsity, "heads_kept": heads,
            "heads_dense": 72, "train_time_s": 12.4, "eval_examples_per_s": 50.0, "train_samples": 4, "epochs": 1.0,
            **kw}


@pytest.fixture
def glue_dir(tmp_path):
    d = tmp_path / "SST-2"
    d.mkdir()
    (d / "train.tsv").write_text("sentence\tlabel\na\t1\nb\t1\nc\t0\n")
    (d / "dev.tsv").write_text("sentence\tlabel\nd\t1\ne\t0\nf\t0\ng\t0\n")
    return str(tmp_path)


def test_majority_is_the_most_frequent_training_label(glue_dir):
    # training majority is 1; one dev example in four has it
    assert glue_figures.majority("SST-2", glue_dir)["accuracy"] == pytest.approx(0.25)
    assert glue_figures.majority("SST-2", None) is None


def test_tables_pair_seeds_and_points(glue_dir, tmp_path):
    rows = [_row("SST-2", "fig-dense-s1", 0.80, before={"accuracy": 0.5}), _row("SST-2", "fig-dense-s2", 0.82),
            _row("SST-2", "fig-np50-s1", 0.77, 50.0), _row("SST-2", "fig-np50-s2", 0.79, 50.0),
            _row("SST-2", "fig-cofi90-s1", 0.70, 90.1), _row("SST-2", "fig-dsp36-s1", 0.75, 0.0, 36),
            _row("SST-2", "fig-npK18-s1", 0.74, 0.5, 18), _row("SST-2", "not-a-figure-tag", 0.1),
            _row("SST-2", "fig-l150-s1", 0.72, 50.0), _row("SST-2", "fig-l125-s1", 0.76, 25.0),
            _row("RTE", "fig-dense-s1", 0.60)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, png = tmp_path / "t.md", tmp_path / "t.png"
    glue_figures.main([str(path), "--data-dir", glue_dir, "--out", str(out), "--plot", str(png)])
    text = out.read_text()
    assert "majority class 25.0; dense before fine-tuning 50.0" in text
    assert "| dense | - | 80.0 / 82.0 | 0.0 | 72/72 | 12 | 50.0 |" in text
    assert "| NeuroPrune | 50 | 77.0 / 79.0 | 50.0 | 72/72 |" in text
    assert "| CoFi | 90 | 70.0 | 90.1 |" in text
    assert "| l1 | 50 | 72.0 | 50.0 |" in text and "| l1 | 25 | 76.0 | 25.0 |" in text  # the 1 of l1 is no point
    assert "| DSP joint | 36 | 75.0 | 0.0 | 36/72 |" in text
    assert "| NeuroPrune target_heads | 18 | 74.0 | 0.5 | 18/72 |" in text
    assert png.stat().st_size > 0
    # the plot's line joins the seed means, each seed a marker
    pts = glue_figures.plot_points(glue_figures.index(rows)["SST-2"], "np", "sparsity", "accuracy")
    assert [(x, round(m, 6), ys) for x, m, ys in pts] == [(50.0, 78.0, [77.0, 79.0])]
    assert [p[0] for p in glue_figures.plot_points(glue_figures.index(rows)["SST-2"], "l1", "sparsity", "accuracy")] == [25.0, 50.0]
    fig4, fig5 = text.split("### Fig. 5")
    assert "**RTE**" in fig4 and "**RTE**" not in fig5  # a dense-only task: in the sparsity table only
    assert "majority class not computed (RTE: no file" in fig4  # its folder is not in --data-dir


def test_no_figure_rows_is_an_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(_row("SST-2", "other", 0.5)) + "\n")
    with pytest.raises(SystemExit, match="no fig-"):
        glue_figures.main([str(path)])


@pytest.mark.parametrize("job, message", [("MRPC bogus 50 1", "unknown method 'bogus'"),
                                          ("MRPC dense 0 2", "POINT '-' for dense"),
                                          ("MRPC np - 1", "POINT '-' for dense"),
                                          ("MRPC np 50", "TASK METHOD POINT SEED"),
                                          ("MRPC np 50 1 extra", "TASK METHOD POINT SEED")])
def test_driver_refuses_a_bad_job_before_any_training(tmp_path, job, message):
    # the good job comes first: nothing may train (no log, no row) before every job is checked
    env = dict(os.environ, GLUE_DIR=str(tmp_path), PYTHON=sys.executable, RESULTS=str(tmp_path / "r.jsonl"),
               LOGDIR=str(tmp_path / "logs"))
    p = subprocess.run(["bash", "scripts/glue_figures.sh", "MRPC dense - 1", job], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and f"bad job '{job}'" in p.stderr and message in p.stderr
    assert p.stdout == "" and not (tmp_path / "r.jsonl").exists() and not (tmp_path / "logs").exists()


@pytest.mark.parametrize("script", sorted(f for f in os.listdir(os.path.join(ROOT, "scripts")) if f.endswith(".py")))
def test_every_script_prints_its_help(script):
    p = subprocess.run([sys.executable, os.path.join("scripts", script), "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "usage:" in p.stdout
