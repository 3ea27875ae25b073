#!/usr/bin/env python
"""T5-style summarization with dense fine-tuning, NeuroPrune or the l1 baseline; ROUGE-1/2/L/Lsum.

Real weights (any T5/mT5/Flan-T5 folder or hub id):
    python scripts/run_summarization.py --model /path/to/t5-small --data-file cnndm.jsonl \
        --method neuroprune --np-alpha 1e-4 --np-beta 1e-4 --np-theta 0.3
Smoke run without weights (random T5 from a config; tokenizer defaults to the installed MiniLM's):
    python scripts/run_summarization.py --random-init-config tiny --data-file cnndm.jsonl ...

The data is a JSON-lines file (fields ``article`` and ``reference`` by default) or the hub's
``cnn_dailymail`` (``--dataset cnn_dailymail``, needs ``datasets`` and the internet). Without
``--eval-file`` the file is shuffled (``--seed``) and the first ``--num-eval`` examples are
held out for evaluation, the rest is the training set.
"""
import argparse
import json
import os
import random
import re
import time


from neuroprune_fairseq.recipes.hf_run import (
    ListDataset, add_common_args, add_neuroprune_args, default_model, finish_run, neuroprune_arguments,
    validate_common, warmup_kwargs)

TINY = dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
            relative_attention_num_buckets=32, dropout_rate=0.1, feed_forward_proj="relu")
SMALL = dict(d_model=256, d_kv=32, d_ff=1024, num_layers=4, num_decoder_layers=4, num_heads=8,
             relative_attention_num_buckets=32, dropout_rate=0.1, feed_forward_proj="gated-gelu")


def read_jsonl(path, text_field, summary_field):
    if not os.path.isfile(path):
        raise SystemExit(f"error: no file {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            ex = json.loads(line)
            if text_field not in ex or summary_field not in ex:
                raise SystemExit(f"error: {path}:{lineno}: needs fields {text_field!r} and {summary_field!r}, "
                                 f"has {sorted(ex)}")
            out.append((ex[text_field], ex[summary_field]))
    if not out:
        raise SystemExit(f"error: {path} holds no examples")
    return out


def load_hub(name, split):
    try:
        import datasets
    except ImportError as e:
        raise SystemExit("error: --dataset needs the `datasets` package (or give --data-file)") from e
    if name == "cnn_dailymail":
        ds = datasets.load_dataset("cnn_dailymail", "3.0.0", split=split)
        return [(ex["article"], ex["highlights"]) for ex in ds]
    ds = datasets.load_dataset(name, split=split)
    return [(ex["document"], ex["summary"]) for ex in ds]


def sentences(text):
    """Newline-separated sentences, as rougeLsum expects (a simple splitter, no nltk)."""
    return "\n".join(s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip())


def rouge(preds, refs):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    totals = {k: 0.0 for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")}
    for p, r in zip(preds, refs):
        s = scorer.score(sentences(r), sentences(p))
        for k in totals:
            totals[k] += s[k].fmeasure
    return {k: 100.0 * v / max(len(preds), 1) for k, v in totals.items()}


def random_config(spec, vocab_size, pad_id, eos_id):
    from transformers import T5Config

    if spec in ("tiny", "small"):
        kw = dict(TINY if spec == "tiny" else SMALL)
    elif os.path.isfile(spec):
        with open(spec) as f:
            kw = json.load(f)
    else:
        raise SystemExit(f"error: --random-init-config {spec}: 'tiny', 'small' or a JSON file of T5Config fields")
    kw.update(vocab_size=vocab_size, pad_token_id=pad_id, eos_token_id=eos_id, decoder_start_token_id=pad_id)
    return T5Config(**kw)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("data")
    src.add_argument("--data-file", default=os.environ.get("SUMMARIZATION_FILE"),
                     help="JSON lines with article/reference fields (default $SUMMARIZATION_FILE)")
    src.add_argument("--eval-file", default=None, help="separate JSON-lines eval file")
    src.add_argument("--dataset", default=None, help="hub dataset instead of files, e.g. cnn_dailymail")
    src.add_argument("--text-field", default="article")
    src.add_argument("--summary-field", default="reference")
    src.add_argument("--num-eval", type=int, default=50, help="held-out examples when there is no --eval-file")
    m = p.add_argument_group("model")
    m.add_argument("--random-init-config", default=None,
                   help="build a random T5 ('tiny', 'small', or a JSON file of T5Config fields) instead of loading --model")
    m.add_argument("--tokenizer", default=None, help="tokenizer folder/id (default: --model; with "
                   "--random-init-config: the installed MiniLM tokenizer)")
    m.add_argument("--source-prefix", default="summarize: ")
    m.add_argument("--max-source-length", type=int, default=512)
    m.add_argument("--max-target-length", type=int, default=128)
    m.add_argument("--num-beams", type=int, default=1)
    add_common_args(p)
    add_neuroprune_args(p)
    p.set_defaults(results_file="results/hf_summarization.jsonl", lr=3e-4, batch_size=8, eval_batch_size=16)
    args = p.parse_args(argv)

    validate_common(args)
    np_args = neuroprune_arguments(args)
    if not args.data_file and not args.dataset:
        raise SystemExit("error: give --data-file (JSON lines) or --dataset (hub)")
    if args.random_init_config is None and not args.model:
        raise SystemExit("error: give --model (a T5 folder or hub id) or --random-init-config for a random T5")
    if args.model and (os.path.isabs(args.model) or args.model.startswith(".")) and not os.path.isdir(args.model):
        raise SystemExit(f"error: --model {args.model}: no such folder")
    if args.num_eval <= 0:
        raise SystemExit("error: --num-eval must be > 0")

    if args.dataset:
        train, dev = load_hub(args.dataset, "train"), load_hub(args.dataset, "validation")
    else:
        data = read_jsonl(args.data_file, args.text_field, args.summary_field)
        if args.eval_file:
            train, dev = data, read_jsonl(args.eval_file, args.text_field, args.summary_field)
        else:
            random.Random(args.seed).shuffle(data)
            if len(data) <= args.num_eval:
                raise SystemExit(f"error: {len(data)} examples, not more than --num-eval {args.num_eval}")
            dev, train = data[:args.num_eval], data[args.num_eval:]
    if args.max_train_samples:
        train = train[:args.max_train_samples]
    if args.max_eval_samples:
        dev = dev[:args.max_eval_samples]

    import tempfile

    import torch
    from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, Seq2SeqTrainer,
                              Seq2SeqTrainingArguments, set_seed)
    from transformers.utils import logging as hf_logging

    from neuroprune_fairseq.hf import NeuroPruneTrainerMixin, heads_summary, model_sparsity

    class NeuroPruneSeq2SeqTrainer(NeuroPruneTrainerMixin, Seq2SeqTrainer):
        pass

    if args.threads:
        torch.set_num_threads(args.threads)
    set_seed(args.seed)
    hf_logging.set_verbosity_error()
    tok_path = args.tokenizer or (args.model if args.random_init_config is None else default_model())
    tok = AutoTokenizer.from_pretrained(tok_path)
    if args.random_init_config is not None:
        eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        from transformers import T5ForConditionalGeneration

        model = T5ForConditionalGeneration(random_config(args.random_init_config, len(tok), pad, eos))
        model_name = f"random-t5-{args.random_init_config}"
    else:
        model = AutoModelForSeq2SeqLM.from_pretrained(args.model)
        model_name = args.model

    def encode(pairs):
        items = []
        for text, summary in pairs:
            enc = tok(args.source_prefix + text, truncation=True, max_length=args.max_source_length)
            enc["labels"] = tok(text_target=summary, truncation=True, max_length=args.max_target_length)["input_ids"]
            items.append(dict(enc))
        return ListDataset(items)

    train_ds = encode(train)
    out_dir = args.output_dir or tempfile.mkdtemp(prefix="np_sum_")
    targs = Seq2SeqTrainingArguments(
        output_dir=out_dir, num_train_epochs=args.epochs, learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size, weight_decay=args.weight_decay, seed=args.seed,
        save_strategy="no", eval_strategy="no", logging_steps=25, report_to=[], disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), **warmup_kwargs(args.warmup_ratio))
    trainer = NeuroPruneSeq2SeqTrainer(model=model, args=targs, train_dataset=train_ds,
                                       data_collator=DataCollatorForSeq2Seq(tok, model=model), neuroprune=np_args)
    t0 = time.time()
    trainer.train()
    train_time = time.time() - t0
    model = trainer.model.eval()

    preds = []
    t0 = time.time()
    with torch.no_grad():
        for i in range(0, len(dev), args.eval_batch_size):
            batch = [args.source_prefix + t for t, _ in dev[i:i + args.eval_batch_size]]
            enc = tok(batch, truncation=True, max_length=args.max_source_length, padding=True, return_tensors="pt")
            enc = {k: v.to(model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            out = model.generate(**enc, max_new_tokens=args.max_target_length, num_beams=args.num_beams, do_sample=False)
            preds.extend(tok.batch_decode(out, skip_special_tokens=True))
    eval_time = time.time() - t0
    scores = rouge(preds, [s for _, s in dev])
    kept, dense = heads_summary(model)
    sp = model_sparsity(model)
    result = {
        "task": "summarization", "method": args.method, **{k: round(v, 2) for k, v in scores.items()},
        "heads_kept": kept, "heads_dense": dense, "sparsity": round(sp.sparsity, 3),
        "train_time_s": round(train_time, 1), "eval_examples_per_s": round(len(dev) / eval_time, 2),
        "train_samples": len(train_ds), "eval_samples": len(dev), "epochs": args.epochs, "lr": args.lr,
        "model": os.path.basename(os.path.normpath(model_name)) if os.path.isdir(str(model_name)) else model_name,
        "threads": torch.get_num_threads(), "example_prediction": preds[0][:200] if preds else "",
    }
    return finish_run(result, args, np_args, trainer, model, tok)


if __name__ == "__main__":
    main()
