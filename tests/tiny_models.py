"""Tiny models built on the fly for the tests (nothing downloads): a causal LM and a sentence encoder, each
with a tokenizer trained on a few sentences and seeded random weights.

``tests/conftest.py`` holds the session-scoped fixtures over these builders (``tiny_lm_dir``, ``app_lm_dir``,
``tiny_st_dir``, ``tiny_embedder_dir``); a test calls a builder itself only for a model no fixture gives.
"""
from __future__ import annotations

from pathlib import Path

# --- causal LM --------------------------------------------------------------------------------------

TINY_TEXT = [
    "The Tern-3 buoy weighs 42 kg and runs on a 9 Ah battery.",
    "Ilse Varnholt is the chief executive of Kestrelmark Instruments in Orrvik.",
    "Calibrate the conductivity probe every 30 days with a 1413 uS/cm standard.",
    "Question: what does the buoy weigh? Answer: 42 kg.",
    "I don't know. The passages do not say.",
] * 20


def build_tiny_tokenizer(texts=TINY_TEXT, vocab_size: int = 300):
    """A byte-level BPE tokenizer trained on ``texts``, with ChatML special tokens and chat template
    (the one the train-from-scratch path builds, so prompts look like SmolLM2's)."""
    from workbench.training.scratch import train_tokenizer

    return train_tokenizer(texts, vocab_size)


def build_tiny_lm(path: Path, seed: int = 0, init_range: float = 0.02, visible_replies: bool = False) -> Path:
    """Save a 2-layer Llama with hidden size 32 and random weights, plus its tokenizer, to ``path``.

    Args:
        path: the folder to write (created).
        seed: torch seed for the weights.
        init_range: standard deviation of the random weights; at the default a greedy reply repeats one
            token, at 0.5 it varies from token to token.
        visible_replies: give visible replies that differ from question to question (the app, serve and
            MCP tests show them): the attention and MLP weights are scaled up 8x (at the default init the
            last prompt tokens, which every question shares, decide the reply alone), and the generation
            config suppresses the end-of-turn, padding and special tokens and every token that decodes to
            a line break, a control character or partial UTF-8, so a greedy reply is never empty.

    Returns:
        ``path``.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True, initializer_range=init_range)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    if visible_replies:
        _make_replies_visible(model, tok)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _make_replies_visible(model, tok) -> None:
    import torch

    with torch.no_grad():
        for name, w in model.named_parameters():
            if any(k in name for k in ("q_proj", "k_proj", "v_proj", "o_proj", "mlp")):
                w.mul_(8.0)
    bad = [i for i in tok.get_vocab().values()
           if i in tok.all_special_ids or not (s := tok.decode([i])).strip() or "\ufffd" in s
           or not s.replace(" ", "").isprintable()]
    model.generation_config.suppress_tokens = sorted(set(bad))


# --- sentence encoder -------------------------------------------------------------------------------

EMBED_TEXT = [
    "The Tern-3 buoy weighs 42 kg and runs on a 9 Ah battery.",
    "Ilse Varnholt leads Kestrelmark Instruments in Orrvik.",
    "Replace the anode every 18 months and grease the seals.",
    "Economy class is required for flights under 6 hours.",
] * 10


def _wordpiece(path: Path, texts: list[str] | None, vocab_size: int):
    """A lowercasing WordPiece tokenizer trained on ``texts`` (default: ``rag_fakes``' filler sentences), saved
    to ``path``. The trainer breaks ties between merges in no fixed order, so the vocabulary can differ a
    little from build to build; no test depends on its exact pieces."""
    from rag_fakes import WORDS, filler_texts
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    texts = filler_texts(200) + WORDS if texts is None else texts
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(path)
    return fast


def build_tiny_bert(path: Path, seed: int = 0, hidden: int = 32, layers: int = 2, texts: list[str] | None = None,
                    vocab_size: int = 300, classifier: bool = False) -> Path:
    """A BERT with random weights and a WordPiece tokenizer trained on the fly, saved to ``path``.

    Args:
        path: the folder to write.
        seed: torch seed for the weights.
        hidden: hidden size (the intermediate size is twice it; two attention heads).
        layers: number of transformer layers.
        texts: the tokenizer's sentences (default: ``rag_fakes``' filler sentences and words).
        vocab_size: the tokenizer's vocabulary size.
        classifier: a one-label sequence classifier (a cross-encoder) instead of the bare encoder.

    Returns:
        ``path``.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    tok = _wordpiece(path, texts, vocab_size)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=128, num_labels=1)
    model = BertForSequenceClassification(cfg) if classifier else BertModel(cfg)
    model.save_pretrained(path)
    return path


def build_tiny_encoder(path: Path, seed: int = 0, hidden: int = 32, layers: int = 2, normalize: bool = False,
                       texts: list[str] | None = None, vocab_size: int = 300) -> Path:
    """A tiny random sentence-transformers folder (BERT, mean pooling, optionally L2 normalisation).

    Args:
        path: the folder to write; the bare BERT goes next to it, in ``<name>-hf``.
        seed, hidden, layers, texts, vocab_size: as for ``build_tiny_bert``.
        normalize: end with a ``Normalize`` module, so the model's own vectors have unit length.

    Returns:
        ``path``.
    """
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer import modules as st_modules
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models as st_modules

    raw = build_tiny_bert(path.with_name(path.name + "-hf"), seed, hidden, layers, texts, vocab_size)
    mods = [st_modules.Transformer(str(raw), max_seq_length=128), st_modules.Pooling(hidden, "mean")]
    if normalize:
        mods.append(st_modules.Normalize())
    SentenceTransformer(modules=mods, device="cpu").save(str(path))
    return path
