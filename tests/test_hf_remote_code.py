"""A folder written by ``save_pruned`` loads the HuggingFace way:
``AutoModel*.from_pretrained(dir, trust_remote_code=True)`` in a fresh Python where
``neuroprune_fairseq`` cannot be imported, with outputs equal to the pruned model's.

The reference outputs are computed here and saved to a file; the fresh process (``python -I``,
cwd outside the project, no PYTHONPATH, and a meta-path finder in front that refuses
``neuroprune_fairseq``, since the venv holds an editable install of it) loads the folder, checks
that the plugin is not importable, and writes its outputs for this process to compare."""
import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")

from hf_helpers import tiny_bert, tiny_opt, tiny_t5  # noqa: E402
from neuroprune_fairseq.hf import attention_sites, head_counts, load_pruned, prune_heads, save_pruned  # noqa: E402
from test_hf_io import _prune_some, _zero_structure_  # noqa: E402

FRESH = r'''
import json, sys
class _NoPlugin:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "neuroprune_fairseq":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, _NoPlugin())
try:
    import neuroprune_fairseq
    plugin = "importable"
except ImportError:
    plugin = "not importable"
import torch
import transformers
torch.set_num_threads(1)
folder, inputs_path, out_path = sys.argv[1:4]
inputs = torch.load(inputs_path)
result = {"plugin": plugin, "outputs": {}, "types": {}, "heads": {}, "structured": {}}
for auto_name, key in json.loads(sys.argv[4]):
    auto = getattr(transformers, auto_name)
    model = auto.from_pretrained(folder, trust_remote_code=True)
    assert not model.training
    with torch.no_grad():
        out = model(**inputs)
    result["outputs"][auto_name] = getattr(out, key)
    result["types"][auto_name] = type(model).__name__
    result["heads"][auto_name] = [len(m._np_kept_heads) for m in model.modules() if hasattr(m, "_np_kept_heads")]
    if model.can_generate():
        result["generated"] = model.generate(inputs["input_ids"], max_new_tokens=4, do_sample=False)
    result["structured"][auto_name] = sorted(n for n, m in model.named_modules()
                                             if type(m).__name__ == "StructuredLinear")
try:  # without trust_remote_code: transformers refuses, naming the option
    transformers.AutoModel.from_pretrained(folder)
    result["untrusted"] = "loaded"
except ValueError as e:
    result["untrusted"] = str(e)
result["modules"] = sorted(m for m in sys.modules if m.startswith("neuroprune_fairseq"))
torch.save(result, out_path)
'''


def _bert_inputs():
    return dict(input_ids=torch.tensor([[5, 7, 9, 11, 2], [3, 4, 8, 1, 0]]),
                attention_mask=torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]))


def _t5_inputs():
    return dict(input_ids=torch.tensor([[5, 7, 9, 1]]), decoder_input_ids=torch.tensor([[0, 4, 6]]))


def _opt_inputs():
    return dict(input_ids=torch.tensor([[2, 5, 7, 9, 11]]))


def _base_bert(model, x):
    return model.bert(**x).last_hidden_state


def _base_t5(model, x):
    return model(**x, output_hidden_states=True).decoder_hidden_states[-1]


def _base_opt(model, x):
    return model.model(**x).last_hidden_state


CASES = {
    # family: (make, inputs, reference of the base model, [(auto class, output field)], save kwargs)
    "bert": (tiny_bert, _bert_inputs, _base_bert,
             [("AutoModelForSequenceClassification", "logits"), ("AutoModel", "last_hidden_state")],
             {"max_shard_size": "8KB"}),
    "t5": (tiny_t5, _t5_inputs, _base_t5,
           [("AutoModelForSeq2SeqLM", "logits"), ("AutoModel", "last_hidden_state")], {}),
    "opt": (tiny_opt, _opt_inputs, _base_opt,
            [("AutoModelForCausalLM", "logits"), ("AutoModel", "last_hidden_state")], {}),
}


def _fresh_load(tmp_path, folder, x, autos):
    torch.save(x, tmp_path / "inputs.pt")
    out = tmp_path / "fresh.pt"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
               PYTHONWARNINGS="ignore")
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    r = subprocess.run([sys.executable, "-I", "-c", FRESH, str(folder), str(tmp_path / "inputs.pt"), str(out),
                        json.dumps(autos)], capture_output=True, text=True, timeout=600, cwd=run_dir, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-4000:]
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("family", sorted(CASES))
def test_remote_code_load_in_fresh_process_outputs_equal(tmp_path, family):
    make, inputs, base, autos, save_kwargs = CASES[family]
    model = make()
    _prune_some(model)
    sites = attention_sites(model)
    if len(sites) > 2:  # a further removal in a middle module: head counts differ per module
        prune_heads(model, {sites[1].name: [0, 2, 3]})
    _zero_structure_(model)
    assert len(set(head_counts(model))) > 1
    x = inputs()
    with torch.no_grad():
        ref = {autos[0][0]: getattr(model(**x), autos[0][1]), "AutoModel": base(model, x)}
    folder = tmp_path / "pruned"
    save_pruned(model, str(folder), **save_kwargs)
    config = json.load(open(folder / "config.json"))
    assert config["model_type"] == "neuroprune_pruned"
    assert {a for a, _ in autos} | {"AutoConfig"} <= set(config["auto_map"])
    assert os.path.exists(folder / "modeling_neuroprune.py") and os.path.exists(folder / "neuroprune_layers.py")
    if save_kwargs:
        assert config["neuroprune"]["weights"].endswith(".index.json")  # sharded

    ours = load_pruned(str(folder))
    with torch.no_grad():
        ours_out = getattr(ours(**x), autos[0][1])

        generated = ours.generate(x["input_ids"], max_new_tokens=4, do_sample=False) if ours.can_generate() else None

    got = _fresh_load(tmp_path, folder, x, autos)
    assert got["plugin"] == "not importable" and got["modules"] == []
    assert got["types"][autos[0][0]] == type(model).__name__
    assert got["types"]["AutoModel"] == {"bert": "BertModel", "t5": "T5Model", "opt": "OPTModel"}[family]
    for auto, _ in autos:
        # the same numbers as the pruned model (the removed structure sums in another order) ...
        torch.testing.assert_close(got["outputs"][auto], ref[auto], rtol=0, atol=1e-5)
    # ... and bit-exact with load_pruned, which rebuilds the same modules
    assert torch.equal(got["outputs"][autos[0][0]], ours_out)
    assert got["heads"][autos[0][0]] == head_counts(ours) == head_counts(model)
    assert got["structured"][autos[0][0]], "the saved copy has gathers / scatters"
    assert "trust_remote_code=True" in got["untrusted"]
    if generated is not None:  # T5 and OPT: greedy decoding with the KV cache through the pruned modules
        assert torch.equal(got["generated"], generated)
    else:
        assert "generated" not in got


def test_modeling_files_import_only_torch_transformers_and_each_other():
    """The remote code must run where this project is not installed: every file ``save_pruned``
    copies imports torch, transformers, safetensors and the stdlib, and relatively only files
    ``save_pruned`` copies too (transformers' loader copies those into its module cache)."""
    import ast

    from transformers.dynamic_module_utils import get_imports, get_relative_imports

    from neuroprune_fairseq.hf.io import remote_code_files

    files = remote_code_files()
    names = [os.path.basename(f) for f in files]
    assert names[0] == "modeling_neuroprune.py" and "neuroprune_layers.py" in names, names
    for f in files:
        third_party = set(get_imports(f)) - set(sys.stdlib_module_names)
        assert third_party <= {"torch", "transformers", "safetensors"}, (f, third_party)
        tree = ast.parse(open(f).read())
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
        assert not [m for m in modules if m.startswith("neuroprune")], (f, modules)
        relative = [(n.level, n.module) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]
        assert all(level == 1 and f"{m}.py" in names for level, m in relative), (f, relative)
        # transformers finds relative imports with a regex: it must see every one the AST sees
        assert sorted(m for _, m in relative) == sorted(get_relative_imports(f)), f


def test_remote_layers_match_their_twins_in_the_package():
    """The remote code copies package code on purpose (it cannot import it): its StructuredLinear,
    rebuilt by _resize_linear_ / _as_structured_like_ from a state dict, gives the outputs of
    core's (bit-exact), and its head-path lookup equals roles'."""
    from neuroprune_fairseq.core.structured_linear import (BUFFERS, StructuredLinear, as_structured_like_,
                                                           structure_linear_)
    from neuroprune_fairseq.core.surgery import resize_linear_
    from neuroprune_fairseq.hf import neuroprune_layers as remote
    from neuroprune_fairseq.hf.roles import _get

    assert remote.BUFFERS == BUFFERS
    torch.manual_seed(0)
    x = torch.randn(3, 4, 12)
    for inputs, outputs in [(True, True), (True, False), (False, True)]:
        dense = torch.nn.Linear(12, 10)
        with torch.no_grad():
            dense.weight[:, [1, 5, 6]] = 0
            dense.weight[[0, 4], :] = 0
        structure_linear_(dense, inputs=inputs, outputs=outputs)
        ours = dense
        assert isinstance(ours, StructuredLinear)
        state = dense.state_dict()
        rebuilt = {}
        for name, resize, restructure in [("remote", remote._resize_linear_, remote._as_structured_like_),
                                          ("core", resize_linear_, as_structured_like_)]:
            m = torch.nn.Linear(12, 10)
            resize(m, *state["weight"].shape)
            restructure(m, state, "")
            m.load_state_dict(state, strict=True)
            rebuilt[name] = m
        assert type(rebuilt["remote"]) is remote.StructuredLinear
        assert type(rebuilt["core"]) is StructuredLinear
        assert rebuilt["remote"].extra_repr() == rebuilt["core"].extra_repr() == ours.extra_repr()
        with torch.no_grad():
            want = ours(x)
            assert torch.equal(rebuilt["remote"](x), want) and torch.equal(rebuilt["core"](x), want)
    model = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    for path in ["", "0", "0.0", "0.1", "1.0", "0.0.weight"]:
        assert remote._get(model, path) is _get(model, path), path
