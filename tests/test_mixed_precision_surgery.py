"""Head pruning under fairseq's mixed-precision optimizer wrappers, on CPU.

``--fp16`` (flat fp32 master copy), ``--fp16 --fp16-no-flatten-grads`` and ``--bf16`` (one fp32
master tensor per parameter) use ``FP16Optimizer``; ``--memory-efficient-fp16/bf16`` use
``MemoryEfficientFP16Optimizer`` (no master copy, fp32 state of the fp16 parameters). Each is
built as fairseq's trainer builds it, takes an Adam step, is pruned, and must then hold a
master copy equal to the model's weights, optimizer state of the new shapes that still holds
the surviving slices' values, and take further steps.
"""
import pytest
import torch
from fairseq import optim, options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.modules import MultiheadAttention
from torch import nn

from neuroprune_fairseq.fairseq_adapter.fairseq_optim import has_master_copy, master_weights, optimizer_surgery
from neuroprune_fairseq.fairseq_adapter.sites import head_counts, prune_redundant_heads_

D, HEADS, HD = 24, 6, 4


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = MultiheadAttention(D, HEADS, self_attention=True)
        self.fc1, self.fc2 = nn.Linear(D, 2 * D), nn.Linear(2 * D, D)

    def forward(self, x):
        h, _ = self.attn(x, x, x)
        return self.fc2(torch.relu(self.fc1(h)))


def build(flags, monkeypatch):
    """Model and optimizer as fairseq's trainer builds them for these command-line flags."""
    args = options.parse_args_and_arch(options.get_training_parser(), input_args=[
        "data", "--arch", "transformer", "--optimizer", "adam", "--lr", "0.001", "--cpu", *flags])
    cfg = convert_namespace_to_omegaconf(args)
    torch.manual_seed(0)
    model = Tiny()
    with torch.no_grad():  # heads 1 and 2 start as copies of head 0: pruned at theta 0.05
        for lin in (model.attn.q_proj, model.attn.k_proj, model.attn.v_proj):
            for h in (1, 2):
                lin.weight[h * HD:(h + 1) * HD] = lin.weight[:HD]
                lin.bias[h * HD:(h + 1) * HD] = lin.bias[:HD]
    model = model.to(torch.bfloat16 if cfg.common.bf16 else torch.float16)
    params = [p for p in model.parameters() if p.requires_grad]
    # the flat master copy is keyed by CUDA device index; a CPU tensor's index is None
    monkeypatch.setattr(torch.cuda, "current_device", lambda: None)
    if cfg.common.memory_efficient_fp16 or cfg.common.memory_efficient_bf16:
        opt = optim.MemoryEfficientFP16Optimizer.build_optimizer(cfg, params)
    else:
        opt = optim.FP16Optimizer.build_optimizer(cfg, params)
    return model, opt


def step(model, opt, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 3, D, generator=g).to(next(model.parameters()).dtype)
    loss = model(x).float().pow(2).mean()
    opt.zero_grad()
    opt.backward(loss)
    opt.multiply_grads(1.0)
    opt.clip_grad_norm(0.0)
    opt.step()
    return float(loss)


def state_per_param(model, opt):
    """``{param name: {state key: tensor of the param's shape}}`` and the master copy."""
    torch_opt = opt.optimizer
    out = {}
    masters = master_weights(opt)
    for i, (name, p) in enumerate(model.named_parameters()):
        if masters is None:
            st = torch_opt.state[p]
            out[name] = {k: v.clone() for k, v in st.items() if torch.is_tensor(v) and v.dim() > 0}
        else:
            fp32 = opt.fp32_params
            if isinstance(fp32, dict):
                flat = fp32[None]
                off = sum(q.numel() for q in list(model.parameters())[:i])
                st = torch_opt.state[flat]
                out[name] = {k: v[off:off + p.numel()].view(p.shape).clone() for k, v in st.items() if torch.is_tensor(v) and v.dim() == 1}
            else:
                st = torch_opt.state[fp32[i]]
                out[name] = {k: v.clone() for k, v in st.items() if torch.is_tensor(v) and v.dim() > 0}
            out[name]["master"] = masters[i].clone()
    return out


def check_consistent(model, opt):
    masters = master_weights(opt)
    if masters is not None:
        assert len(masters) == len(list(model.parameters()))
        for m, p in zip(masters, model.parameters()):
            assert m.dtype == torch.float32 and m.shape == p.shape
            assert torch.equal(m.to(p.dtype), p.data)  # master == model (cast)
        if isinstance(opt.fp32_params, dict):
            flat = opt.fp32_params[None]
            assert flat.numel() == sum(p.numel() for p in model.parameters()) == flat.grad.numel()
            assert [flat] == opt.optimizer.param_groups[0]["params"]
            for v in opt.optimizer.state[flat].values():
                if torch.is_tensor(v) and v.dim() == 1:
                    assert v.numel() == flat.numel()
        else:
            for p, p32 in zip(model.parameters(), opt.fp32_params):
                assert p32.grad is None or p32.grad.shape == p32.shape
                for v in opt.optimizer.state[p32].values():
                    if torch.is_tensor(v) and v.dim() > 0:
                        assert v.shape == p32.shape
    else:
        for p in model.parameters():
            for v in opt.optimizer.state[p].values():
                if torch.is_tensor(v) and v.dim() > 0:
                    assert v.shape == p.shape and v.dtype == torch.float32


@pytest.mark.parametrize("flags, master", [
    (["--fp16"], "flat"),
    (["--fp16", "--fp16-no-flatten-grads"], "per-param"),
    (["--bf16"], "per-param"),
    (["--memory-efficient-fp16"], None),
    (["--memory-efficient-bf16"], None),
])
def test_pruning_under_fairseq_mixed_precision_optimizers(flags, master, monkeypatch):
    model, opt = build(flags, monkeypatch)
    assert has_master_copy(opt) == (master is not None)
    assert (master == "flat") == isinstance(getattr(opt, "fp32_params", None), dict)
    step(model, opt, 1)
    check_consistent(model, opt)
    before = state_per_param(model, opt)
    assert set(before["attn.q_proj.weight"]) >= {"exp_avg", "exp_avg_sq"}

    with optimizer_surgery(opt) as o:
        (result,) = prune_redundant_heads_(model, 0.05, "heuristic", o)
    name, plan = result[:2]
    assert len(plan.keep) == 4 and set(plan.keep) > {3, 4, 5} and head_counts(model) == [4]  # one of 0,1,2 kept
    rows = torch.tensor([r for h in plan.keep for r in range(h * HD, (h + 1) * HD)])

    check_consistent(model, opt)
    after = state_per_param(model, opt)
    for key in before["attn.q_proj.weight"]:  # the surviving rows keep their state (and master) exactly
        for lin in ("q_proj", "k_proj", "v_proj"):
            assert torch.equal(after[f"attn.{lin}.weight"][key], before[f"attn.{lin}.weight"][key][rows])
            assert torch.equal(after[f"attn.{lin}.bias"][key], before[f"attn.{lin}.bias"][key][rows])
        assert torch.equal(after["fc1.weight"][key], before["fc1.weight"][key])
        if key != "master":  # the merge changed the out-projection's weights, not its state
            assert torch.equal(after["attn.out_proj.weight"][key], before["attn.out_proj.weight"][key][:, rows])
    if master:  # the merged columns: master follows the model; the other columns keep fp32 bits
        out_w = after["attn.out_proj.weight"]["master"]
        assert torch.equal(out_w[:, HD:], before["attn.out_proj.weight"]["master"][:, rows[HD:]])  # heads 3,4,5
        assert not torch.equal(out_w[:, :HD], before["attn.out_proj.weight"]["master"][:, rows[:HD]])  # merged

    w_before = model.attn.q_proj.weight.detach().clone()
    losses = [step(model, opt, s) for s in (2, 3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(model.attn.q_proj.weight, w_before)  # the pruned module still trains
    check_consistent(model, opt)
