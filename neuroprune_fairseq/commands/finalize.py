"""Finalise a trained NeuroPrune checkpoint: the honest sparse model.

    python -m neuroprune_fairseq.commands.finalize --path checkpoints/checkpoint_best.pt \
        --output checkpoints/final.pt --threshold 1e-3 [--data data-bin] [--json final.json] [--overwrite]

1. zeroes every attention (q, k, v, out) and MLP (fc1, fc2) weight with |w| < threshold
   (``--threshold 0`` keeps the weights as they are: only exact zeros count);
2. removes dead MLP neurons: an all-zero fc2 column, or an all-zero fc1 row whose
   constant activation is folded into fc2's bias (exact in eval mode), then the other zeroed
   structure: all-zero input columns of q, k, v and fc1 (the layer gathers its live inputs; an
   input group of Eq. 2 zeroed in a module's [Q; K; V]) and all-zero output rows of the out
   projection and fc2 (the layer computes its live outputs and scatters them among the dead
   outputs' constant biases); ``--no-structure-removal`` keeps them in place;
3. writes a smaller checkpoint that loads in ``fairseq-generate --user-dir neuroprune_fairseq``
   (the optimizer state is dropped: it no longer matches the shapes). A checkpoint of a stock
   fairseq transformer arch (``transformer_iwslt_de_en``) is written as the plugin's
   ``neuroprune_<arch>`` (same model, loads resized MLPs); other model types keep their neurons.
   It never writes over ``--path``, nor over an existing file without ``--overwrite``;
4. prints heads kept, MLP neurons kept, parameters, exact-zero sparsity of the attention +
   MLP matrices relative to the dense model, FLOPs per token against the dense model, and the
   ``fairseq-generate`` command that loads the result.
"""
import argparse
import json
import logging
import math
import os
import sys
from typing import Dict

import torch
from torch import nn

logger = logging.getLogger("neuroprune_fairseq.commands.finalize")


def zero_small_weights_(model: nn.Module, threshold: float) -> int:
    """Set |w| < threshold to exactly 0 in the attention and MLP matrices; returns how many."""
    from ..fairseq_adapter.sites import matrices

    n = 0
    with torch.no_grad():
        for w in matrices(model):
            small = (w.abs() < threshold) & (w != 0)
            n += int(small.sum())
            w.masked_fill_(small, 0.0)
    return n


def remove_dead_mlp_neurons_(model: nn.Module) -> None:
    from ..core import remove_dead_neurons_
    from ..fairseq_adapter.sites import disable_fused_paths_, mlp_sites

    for s in mlp_sites(model):
        remove_dead_neurons_(s.fc1[0], s.fc2, s.module.activation_fn)
    disable_fused_paths_(model)


def remove_zeroed_structure_(model: nn.Module) -> Dict[str, int]:
    """Remove the all-zero input columns of q, k, v, fc1 (gathers) and the all-zero output rows
    of the out projections and fc2 (scatters): :func:`neuroprune_fairseq.core.policy.remove_structure_`."""
    from ..core.policy import remove_structure_
    from ..fairseq_adapter.sites import attention_sites, disable_fused_paths_, mlp_sites

    removed = remove_structure_(attention_sites(model), mlp_sites(model))
    disable_fused_paths_(model)
    return removed


def flops_per_token(model: nn.Module, seq_len: int = 20) -> Dict[str, float]:
    """Multiply-add FLOPs (x2) for one source token through the encoder plus one target
    token through the decoder, at source and target length ``seq_len``.

    Counts the matrices physically present (a zero inside a dense matrix still costs), the
    attention score / weighted-sum products per head, and the output projection.
    """
    from ..fairseq_adapter.sites import attention_sites, mlp_sites

    body = 0.0
    for s in attention_sites(model):  # removed inputs / outputs (gathers, scatters) cost no multiply
        d_attn = s.num_heads * s.head_dim
        body += 2 * sum(lin.weight.numel() for lin in (s.q, s.k, s.v, s.out)) + 2 * 2 * seq_len * d_attn
    for s in mlp_sites(model):
        body += 2 * (s.fc1[0].weight.numel() + s.fc2.weight.numel())
    out = 0.0
    dec = getattr(model, "decoder", None)
    proj = getattr(dec, "output_projection", None)
    if isinstance(proj, nn.Linear):
        out = 2.0 * proj.weight.numel()
    return {"body": body, "output_projection": out, "total": body + out}


def describe(model: nn.Module, dense: nn.Module, seq_len: int) -> Dict:
    from ..core.policy import structure
    from ..fairseq_adapter.sites import attention_sites, head_counts, mlp_sites, model_sparsity

    rep = model_sparsity(model)
    f, fd = flops_per_token(model, seq_len), flops_per_token(dense, seq_len)
    return {
        **structure(attention_sites(model), mlp_sites(model)),
        "heads_kept": sum(head_counts(model)),
        "heads_dense": sum(s.dense_heads for s in attention_sites(model)),
        "heads_per_module": head_counts(model),
        "mlp_neurons_kept": sum(s.fc1[0].out_features for s in mlp_sites(model)),
        "mlp_neurons_dense": sum(s.fc1[0].out_features for s in mlp_sites(dense)),
        "params": sum(p.numel() for p in model.parameters()),
        "params_dense": sum(p.numel() for p in dense.parameters()),
        "matrix_weights_dense": rep.dense,
        "matrix_weights_present": rep.present,
        "matrix_weights_zero": rep.zero,
        "sparsity": rep.sparsity,
        "flops_per_token": f["total"],
        "flops_per_token_dense": fd["total"],
        "flops_ratio": f["total"] / fd["total"],
        "body_flops_ratio": f["body"] / fd["body"],
        "flops_seq_len": seq_len,
    }


def format_report(d: Dict) -> str:
    from ..core.structure import format_structure

    return "\n".join([
        f"heads kept        {d['heads_kept']} / {d['heads_dense']}  per module {'.'.join(map(str, d['heads_per_module']))}",
        f"MLP neurons kept  {d['mlp_neurons_kept']} / {d['mlp_neurons_dense']}",
        f"parameters        {d['params']:,} / {d['params_dense']:,} dense ({100.0 * d['params'] / d['params_dense']:.1f}%)",
        f"sparsity          {d['sparsity']:.2f}% of attention+MLP matrix weights are exactly zero or removed "
        f"({d['matrix_weights_zero']:,} zero + {d['matrix_weights_dense'] - d['matrix_weights_present']:,} removed "
        f"of {d['matrix_weights_dense']:,})",
        f"FLOPs per token   {d['flops_per_token']:.4g} vs dense {d['flops_per_token_dense']:.4g} "
        f"(ratio {d['flops_ratio']:.3f}; attention+MLP only {d['body_flops_ratio']:.3f}; length {d['flops_seq_len']})",
        f"structure         {format_structure(d)}",
    ])


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file: the same resolved path (symlinks followed), or, when
    both exist, the same file under two names (hard link)."""
    return os.path.realpath(a) == os.path.realpath(b) or (
        os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b))


def check_distinct(**paths: str) -> None:
    """Refuse two options naming the same file (``--path``, ``--output``, ``--json``...): the
    second write would replace the first, or an input, whatever ``--overwrite`` says."""
    named = [(k, v) for k, v in paths.items() if v]
    for i, (k1, v1) in enumerate(named):
        for k2, v2 in named[i + 1:]:
            if not same_file(v1, v2):
                continue
            o1, o2 = f"--{k1.replace('_', '-')}", f"--{k2.replace('_', '-')}"
            if k1 == "path":
                raise ValueError(f"{o2} {v2} is the input checkpoint --path {v1} (the same file); write it to "
                                 "another file (--overwrite never replaces the input)")
            raise ValueError(f"{o1} {v1} and {o2} {v2} are the same file: the second write would replace the "
                             "first; give each its own file (--overwrite does not allow this)")


def check_output(path: str, output: str, overwrite: bool = False) -> None:
    """Never replace the input checkpoint; never replace any other file unless told to."""
    if same_file(output, path):
        raise ValueError(f"--output {output} is the input checkpoint --path; write the finalised model to another file")
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"--output {output} exists; pass --overwrite to replace it, or choose another file")


def generate_command(output: str, data: str) -> str:
    """The ``fairseq-generate`` command line that loads a checkpoint written by this plugin."""
    import shlex

    user_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package: neuroprune_fairseq
    # absolute paths: a checkpoint's data path may be relative to where it was trained (prep/bin);
    # fairseq resolves it against the current directory, as the check in checkpoints.load() did
    data = os.pathsep.join(os.path.abspath(d) for d in str(data).split(os.pathsep))
    # fairseq's default --required-batch-size-multiple 8 loses hypotheses in this fairseq (see the README)
    return (f"fairseq-generate {shlex.quote(data)} --user-dir {shlex.quote(user_dir)} "
            f"--path {shlex.quote(os.path.abspath(output))} --beam 5 --required-batch-size-multiple 1")


def finalize(path: str, output: str, threshold: float = 0.0, data: str = None, seq_len: int = 20,
             overwrite: bool = False, structured: bool = True) -> Dict:
    """``structured``: also remove all-zero input columns and output rows (gathers / scatters)."""
    if not (threshold >= 0 and math.isfinite(threshold)):
        raise ValueError(f"--threshold must be a finite number >= 0, got {threshold}")
    check_output(path, output, overwrite)
    from ..fairseq_adapter import checkpoints

    ck = checkpoints.load(path, data)
    state, model, dense = ck.state, ck.model, ck.dense()
    arch = checkpoints.neuroprune_arch(state["cfg"].model)
    zeroed = zero_small_weights_(model, threshold) if threshold > 0 else 0
    removed_io = {"inputs": 0, "outputs": 0}
    if arch is None:
        logger.warning(f"{type(model).__name__} is not a fairseq transformer this plugin can reload with "
                       "resized MLPs: dead MLP neurons are zeroed but not removed")
    else:
        remove_dead_mlp_neurons_(model)
        if structured:
            removed_io = remove_zeroed_structure_(model)
        if arch:  # a stock transformer arch: save as its neuroprune_ twin, which loads resized MLPs
            checkpoints.as_neuroprune_(state)
    info = describe(model, dense, seq_len)
    info.update({"zeroed_below_threshold": zeroed, "threshold": threshold, "source": path, "output": output,
                 "arch": getattr(state["cfg"].model, "arch", None), "neurons_removed": arch is not None,
                 "inputs_removed": removed_io["inputs"], "output_rows_removed": removed_io["outputs"]})
    state["model"] = model.state_dict()
    state["last_optimizer_state"] = None
    state.setdefault("extra_state", {})["neuroprune_finalized"] = {"threshold": threshold}
    checkpoints.save(state, output)
    info["generate_command"] = generate_command(output, data or state["cfg"].task.data)
    return info


def cli_main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", required=True, help="trained checkpoint (e.g. checkpoints/checkpoint_best.pt)")
    p.add_argument("--output", required=True, help="where to write the finalised checkpoint")
    p.add_argument("--threshold", type=float, default=0.0, help="zero attention/MLP weights with |w| < this (default 0: exact zeros only)")
    p.add_argument("--data", default=None, help="data-bin directory, if it moved since training (dictionaries are read from it)")
    p.add_argument("--flops-seq-len", type=int, default=20, help="source/target length for attention FLOPs (default 20)")
    p.add_argument("--json", default=None, help="also write the report as JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace --output (and --json) if they exist (never --path)")
    p.add_argument("--no-structure-removal", action="store_true",
                   help="keep all-zero input columns (q, k, v, fc1) and output rows (out projection, fc2) in place; "
                        "by default they are removed (gathers / scatters, same outputs). Heads and dead neurons are removed anyway")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        check_distinct(path=args.path, output=args.output, json=args.json)
        if args.json:
            check_output(args.path, args.json, args.overwrite)
        info = finalize(args.path, args.output, args.threshold, args.data, args.flops_seq_len, args.overwrite,
                        structured=not args.no_structure_removal)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"neuroprune-finalize: error: {e}", file=sys.stderr)
        return 2
    print(format_report(info))
    print(f"wrote {args.output}; translate with it (needs the plugin: --user-dir):")
    print(f"  {info['generate_command']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
