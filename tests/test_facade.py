"""Issue 24: one vocabulary. Both adapters implement the core's one model facade, a name means one
thing (site-level functions of core.policy carry other names than the model-level facade methods),
deciding is apart from cutting, and the fairseq pieces declare what they ask of each other."""
import ast
import os
from types import SimpleNamespace

import pytest

from neuroprune_fairseq.core import policy
from neuroprune_fairseq.core.facade import PrunableModel
from neuroprune_fairseq.core.sites import AttentionSite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_LEVEL = ("head_counts", "prune_redundant_heads_", "matrices", "dense_matrix_count", "pad_to_dense_")


def test_policy_names_are_not_the_facade_names():
    for name in MODEL_LEVEL:
        assert not hasattr(policy, name), name  # site-level: site_head_counts, prune_sites_, ...
        assert callable(getattr(PrunableModel, name)), name


def test_surgery_makes_no_plan():
    """core/surgery.py executes plans: it imports nothing that decides (redundancy, head_target, policy)."""
    tree = ast.parse(open(os.path.join(ROOT, "neuroprune_fairseq", "core", "surgery.py")).read())
    runtime = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]  # TYPE_CHECKING imports are not run
    assert all(not (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] in ("redundancy", "head_target", "policy"))
               for n in runtime)
    from neuroprune_fairseq.core import surgery

    assert not hasattr(surgery, "elim_redundant_") and not hasattr(surgery, "plan_redundant_heads")


def test_fairseq_adapter_implements_the_facade_and_declares_its_contracts():
    pytest.importorskip("fairseq")
    from neuroprune_fairseq.fairseq_adapter.contracts import NeuroPruneTask, penalty_by_proximal_step
    from neuroprune_fairseq.fairseq_adapter.sites import FairseqAttentionSite, FairseqModel
    from neuroprune_fairseq.fairseq_adapter.task import NeuroPruneTranslationTask

    assert issubclass(FairseqModel, PrunableModel) and issubclass(FairseqAttentionSite, AttentionSite)
    assert issubclass(NeuroPruneTranslationTask, NeuroPruneTask)
    # a task that is not a NeuroPruneTask never takes the penalty off the loss, whatever it holds
    assert not penalty_by_proximal_step(SimpleNamespace(penalty_by_proximal_step=True))
    task = NeuroPruneTask()
    assert not penalty_by_proximal_step(task) and task.train_itr is None
    task._train_itr = "itr"  # the earlier private name, still set by recipes/bench_speed.py
    assert task.train_itr == "itr"


def test_hf_adapter_implements_the_facade_with_one_attention_site():
    from neuroprune_fairseq.hf import roles
    from neuroprune_fairseq.hf.pruning import HfModel

    assert issubclass(HfModel, PrunableModel)
    assert roles.AttentionSite is AttentionSite and issubclass(roles.HfAttentionSite, AttentionSite)
