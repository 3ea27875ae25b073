"""The GLUE results table by target sparsity (Fig. 4's analogue) on hand-written rows."""
import json
import subprocess
import sys


def _row(task, method, s, sparsity, **m):
    r = {"task": task, "method": method, "sparsity": sparsity, "heads_kept": 72 if method != "neuroprune" else 60,
         "heads_dense": 72, "train_time_s": 1, "eval_examples_per_s": 1, "tag": f"{method}-v4", **m}
    if s is not None:
        r["np_target_sparsity"] = s
    return r


def test_by_sparsity_table_and_plot(tmp_path):
    rows = [_row("MRPC", "dense", None, 0.0, accuracy=0.66, f1=0.75),
            _row("MRPC", "neuroprune", 50, 51.6, accuracy=0.71, f1=0.821),
            _row("MRPC", "l1", 50, 50.0, accuracy=0.70, f1=0.786),
            _row("MRPC", "l1", 90, 90.2, accuracy=0.68, f1=0.80),
            _row("CoLA", "neuroprune", 25, 25.5, accuracy=0.69, mcc=0.054),
            _row("SST-2", "dense", None, 0.0, accuracy=0.836),
            {**_row("SST-2", "dense", None, 0.0, accuracy=0.5), "tag": "dense-v3"}]  # filtered out by --tag-suffix
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    png = tmp_path / "p.png"
    out = subprocess.run([sys.executable, "-m", "neuroprune_fairseq.recipes.hf_table", str(f), "--tag-suffix", "v4",
                          "--by-sparsity", "--plot", str(png)], capture_output=True, text=True, check=True).stdout
    mrpc = out[out.index("**MRPC** (f1"):out.index("**CoLA**")]
    assert "| dense | 75.0 (0.0%, 72/72 heads) | |" in mrpc
    assert "| 50 | 82.1 (51.6%, 60/72 heads) | 78.6 (50.0%, 72/72 heads) |" in mrpc
    assert "| 90 | - | 80.0 (90.2%, 72/72 heads) |" in mrpc
    assert "**CoLA** (mcc" in out and "| 25 | 5.4 (25.5%, 60/72 heads) | - |" in out
    assert "| dense | 83.6 (0.0%, 72/72 heads) | |" in out and "50.0 (0.0%" not in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
