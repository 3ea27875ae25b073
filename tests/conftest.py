import os
import random
import subprocess
import sys

import pytest

# register the plugin (criterion, task, models) for in-process tests
import fairseq  # noqa: F401,E402
import neuroprune_fairseq.plugin  # noqa: F401,E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(ROOT, "neuroprune_fairseq")

TINY_ARCH = [
    "--arch", "neuroprune_transformer", "--encoder-layers", "2", "--decoder-layers", "2",
    "--encoder-embed-dim", "24", "--decoder-embed-dim", "24", "--encoder-ffn-embed-dim", "48",
    "--decoder-ffn-embed-dim", "48", "--encoder-attention-heads", "6", "--decoder-attention-heads", "6",
]


def run_cli(module, args, cwd, check=True, env=None):
    """Run a fairseq command line tool (``fairseq_cli.train`` ...) as a user would."""
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, env=e)
    if check and p.returncode != 0:
        raise AssertionError(f"{module} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A tiny generated translation task (reverse + uppercase), binarized by fairseq-preprocess."""
    d = tmp_path_factory.mktemp("tiny")
    rng = random.Random(0)
    words = [f"w{i}" for i in range(30)]
    for split, n in [("train", 600), ("valid", 60), ("test", 40)]:
        with open(d / f"{split}.src", "w") as fs, open(d / f"{split}.tgt", "w") as ft:
            for _ in range(n):
                s = [rng.choice(words) for _ in range(rng.randint(3, 8))]
                fs.write(" ".join(s) + "\n")
                ft.write(" ".join(reversed(s)).upper() + "\n")
    run_cli("fairseq_cli.preprocess", [
        "--source-lang", "src", "--target-lang", "tgt", "--trainpref", "train", "--validpref", "valid",
        "--testpref", "test", "--destdir", "bin", "--joined-dictionary", "--workers", "1"], cwd=d)
    return d
