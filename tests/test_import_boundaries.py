"""The HuggingFace adapter never imports fairseq or the fairseq adapter; fairseq's
``--user-dir neuroprune_fairseq`` still registers every fairseq component. Each check runs in
a fresh interpreter (this test process has fairseq and the plugin loaded already)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAIRSEQ_SIDE = ("'fairseq' in sys.modules", "[m for m in sys.modules if m.startswith('neuroprune_fairseq.fairseq_adapter') "
                "or m in ('neuroprune_fairseq.plugin', 'neuroprune_fairseq.commands')]")


def run(code):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip().splitlines()[-1]


def test_hf_and_its_trainer_import_no_fairseq():
    pytest.importorskip("transformers")
    code = ("import sys\n"
            "import neuroprune_fairseq.hf\n"
            "from neuroprune_fairseq.hf import NeuroPruneTrainer, NeuroPruneArguments, prune_redundant_heads_\n"
            "assert NeuroPruneTrainer.__module__ == 'neuroprune_fairseq.hf.trainer'\n"
            f"print({FAIRSEQ_SIDE[0]}, {FAIRSEQ_SIDE[1]})")
    assert run(code) == "False []"


def test_hf_imports_no_fairseq_adapter_when_fairseq_is_loaded():
    pytest.importorskip("transformers")
    pytest.importorskip("fairseq")
    code = ("import sys\n"
            "import fairseq\n"
            "from neuroprune_fairseq.hf import NeuroPruneTrainer\n"
            "from fairseq.criterions import CRITERION_REGISTRY\n"
            f"print({FAIRSEQ_SIDE[1]}, 'neuroprune_ce' in CRITERION_REGISTRY)")
    assert run(code) == "[] False"


def test_user_dir_registers_every_fairseq_component():
    pytest.importorskip("fairseq")
    code = ("import argparse, os\n"
            "from fairseq import utils\n"
            "utils.import_user_module(argparse.Namespace(user_dir=os.path.join(os.getcwd(), 'neuroprune_fairseq')))\n"
            "from fairseq.criterions import CRITERION_REGISTRY\n"
            "from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY\n"
            "from fairseq.tasks import TASK_REGISTRY\n"
            "names = ['neuroprune_ce', 'l1_ce', 'dsp_ce']\n"
            "ok = all(n in CRITERION_REGISTRY for n in names)\n"
            "ok &= all(n in TASK_REGISTRY for n in ['neuroprune_translation', 'dsp_translation'])\n"
            "ok &= 'neuroprune_transformer' in MODEL_REGISTRY\n"
            "ok &= all(a in ARCH_MODEL_REGISTRY for a in ['neuroprune_iwslt_de_en', 'neuroprune_multi30k_cpu', "
            "'neuroprune_transformer_iwslt_de_en'])\n"
            "print(ok)")
    assert run(code) == "True"


CORE = os.path.join(ROOT, "neuroprune_fairseq", "core")
FORBIDDEN = ("fairseq", "transformers")


def test_core_imports_neither_fairseq_nor_transformers():
    """Every ``neuroprune_fairseq.core.*`` module, imported in a fresh interpreter, loads no fairseq and
    no transformers (and neither does the package itself: no --user-dir, no registration)."""
    modules = sorted(f[:-3] for f in os.listdir(CORE) if f.endswith(".py") and f != "__init__.py")
    assert "facade" in modules and "policy" in modules
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module('neuroprune_fairseq.core.' + m)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))")
    assert run(code) == "[]"


def test_core_source_names_neither_fairseq_nor_transformers():
    """A static scan of core/*.py: no import statement (top level or inside a function) of fairseq,
    transformers, or a module outside ``core`` of this package."""
    import ast

    bad = []
    for f in sorted(os.listdir(CORE)):
        if not f.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(CORE, f)).read(), filename=f)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [(a.name, 0) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "", node.level)]
            else:
                continue
            for name, level in names:
                top = name.split(".")[0]
                if (level == 0 and (top in FORBIDDEN or top == "neuroprune_fairseq")) or level > 1:
                    bad.append(f"{f}:{node.lineno}: {'.' * level}{name}")
    assert not bad, bad


def test_registration_is_explicit_and_idempotent():
    """``register()`` registers every component once; calling it again, or fairseq's --user-dir import
    after it, registers nothing twice (no duplicate-registration error)."""
    pytest.importorskip("fairseq")
    code = ("import argparse, os, sys\n"
            "import neuroprune_fairseq\n"
            "before = 'neuroprune_fairseq.plugin' in sys.modules\n"
            "neuroprune_fairseq.register()\n"
            "neuroprune_fairseq.register()\n"
            "from fairseq import utils\n"
            "utils.import_user_module(argparse.Namespace(user_dir=os.path.join(os.getcwd(), 'neuroprune_fairseq')))\n"
            "from fairseq.criterions import CRITERION_REGISTRY\n"
            "from fairseq.tasks import TASK_REGISTRY\n"
            "print(before, 'neuroprune_ce' in CRITERION_REGISTRY and 'neuroprune_translation' in TASK_REGISTRY)")
    assert run(code) == "False True"
