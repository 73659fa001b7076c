"""Tiny models and a local tokenizer, built in-process: real transformers code paths, random weights.

No hub access is needed: the tokenizer is a word-level `tokenizers` model over a fixed word list, the
models come from configs. `save_tiny` writes one to a folder so the command line can load it by path.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PreTrainedTokenizerFast,
)

WORDS = (
    "the of and to in a that is was he for it with as his on be at by i this had not are but from or "
    "have an they which one you were her all she there would their we him been has when who will more no "
    "if out so said what up its about into than them can only other new some could time these two may then"
).split()
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def make_tokenizer(bos: bool = True) -> PreTrainedTokenizerFast:
    """Word-level tokenizer; with `bos` it prepends <s> to every encoding, as OPT's and Llama's do."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def vocab_size() -> int:
    return len(SPECIALS) + len(WORDS)


def tiny_opt(seed: int = 0, **overrides) -> OPTForCausalLM:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab_size(), hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
               max_position_embeddings=64, word_embed_proj_dim=32, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg.update(overrides)
    return OPTForCausalLM(OPTConfig(**cfg)).eval()


def tiny_gpt2(seed: int = 0, **overrides) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab_size(), n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2)
    cfg.update(overrides)
    return GPT2LMHeadModel(GPT2Config(**cfg)).eval()


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size(), hidden_size=32, intermediate_size=48,
                                        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=64, bos_token_id=1, eos_token_id=2)).eval()


def save_tiny(model, folder: Path, bos: bool = True) -> Path:
    """A loadable model folder (config.json, weights, tokenizer) for command-line tests."""
    model.save_pretrained(folder)
    make_tokenizer(bos).save_pretrained(folder)
    return folder


def on_forward_call(setattr_, call: int, action) -> None:
    """Call `action()` as the collection's `call`-th forward call starts (calibration calls count too);
    the call then runs, unless `action` raises. `setattr_` patches the module: pytest's
    monkeypatch.setattr, or the builtin setattr in a process of its own."""
    from neuron_tui.core.model import schedules

    real, calls = schedules.forward_fn, itertools.count(1)

    def patched(model):
        run = real(model)

        def forward(ids):
            if next(calls) == call:
                action()
            run(ids)

        return forward

    setattr_(schedules, "forward_fn", patched)


def interrupt_forward_at(monkeypatch, call: int) -> None:
    """Ctrl-C (KeyboardInterrupt) at the collection's `call`-th forward call, before it runs."""

    def ctrl_c():
        raise KeyboardInterrupt

    on_forward_call(monkeypatch.setattr, call, ctrl_c)


def write_text_corpus(path: Path, n_docs: int = 40, words_per_doc: int = 60, seed: int = 0) -> Path:
    """A corpus file of `n_docs` pseudo-random documents over the tokenizer's words (one per line, jsonl)."""
    import json
    import random

    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n_docs):
            f.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(words_per_doc))}) + "\n")
    return path
