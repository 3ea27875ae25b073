"""Tiny random HF models for the tests (no download)."""
import torch

torch.set_num_threads(1)


def tiny_bert(num_labels=2, seed=0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=24, max_position_embeddings=32, num_labels=num_labels,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg).eval()


def tiny_t5(seed=0, ff="relu"):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_decoder_layers=2,
                   num_heads=4, dropout_rate=0.0, feed_forward_proj=ff, decoder_start_token_id=0,
                   pad_token_id=0, eos_token_id=1)
    return T5ForConditionalGeneration(cfg).eval()


def tiny_opt(seed=0):
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    cfg = OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, ffn_dim=24, num_attention_heads=4,
                    max_position_embeddings=32, word_embed_proj_dim=16, dropout=0.0, attention_dropout=0.0,
                    pad_token_id=1, bos_token_id=2, eos_token_id=2)
    return OPTForCausalLM(cfg).eval()


def duplicate_heads_(site, pairs, bias_embeddings=()):
    """Make head ``j`` an exact copy of head ``i`` (q/k/v rows and biases) for ``(i, j)``;
    also copy column i to j of each T5 relative-bias embedding given."""
    hd = site.head_dim
    with torch.no_grad():
        for i, j in pairs:
            for lin in (site.q, site.k, site.v):
                lin.weight[j * hd:(j + 1) * hd] = lin.weight[i * hd:(i + 1) * hd]
                if lin.bias is not None:
                    lin.bias[j * hd:(j + 1) * hd] = lin.bias[i * hd:(i + 1) * hd]
            for emb in bias_embeddings:
                emb.weight[:, j] = emb.weight[:, i]


class TinyClassificationData(torch.utils.data.Dataset):
    """n random 6-token sequences, label = first token > 30 (the HF trainer tests' data)."""

    def __init__(self, n=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(3, 60, (n, 6), generator=g)
        self.labels = (self.ids[:, 0] > 30).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(6, dtype=torch.long), "labels": self.labels[i]}


def tiny_trainer_args(tmp_path, epochs=2):
    """TrainingArguments of the HF trainer tests: batch 4, lr 1e-3 constant, CPU, no saving."""
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path), num_train_epochs=epochs, per_device_train_batch_size=4,
                             learning_rate=1e-3, save_strategy="no", report_to=[], use_cpu=True,
                             disable_tqdm=True, logging_steps=1, seed=0, lr_scheduler_type="constant")

