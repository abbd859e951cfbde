"""Test doubles for the retrieval tests: a seeded hash-of-words embedder, tiny random encoders, chunks."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from workbench.core.records import Chunk
from workbench.retrieval.index import bm25_tokenize

WORDS = ("buoy battery anode seal grease calibration probe standard winter harbour mooring sensor firmware "
         "release travel policy expense laptop office kettle pump valve pressure filter cable antenna").split()


class StubEmbedder:
    """Deterministic bag-of-words embedder: each word maps to a seeded Gaussian vector; a text is the
    normalised sum. Texts sharing words are close, so dense search behaves like a lexical matcher.

    Args:
        dim: vector size.
        skip_digits: ignore tokens containing digits (so part numbers are invisible to dense search,
            like an English embedder blurring identifiers).
        name: recorded in the manifest; also seeds the fingerprint.
    """

    def __init__(self, dim: int = 64, skip_digits: bool = False, name: str = "stub-hash"):
        self.dim = dim
        self.skip_digits = skip_digits
        self.name = self.stored_name = name
        self.fingerprint = hashlib.sha256(f"{name}/{dim}/{skip_digits}".encode()).hexdigest()[:16]
        self.encoded: list[str] = []  # every text passed to encode, to check incremental builds

    def _word(self, w: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(f"{self.name}:{w}".encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def _vec(self, text: str) -> np.ndarray:
        toks = [t for t in bm25_tokenize(text) if not (self.skip_digits and any(ch.isdigit() for ch in t))]
        v = sum((self._word(t) for t in toks), np.zeros(self.dim, np.float32))
        n = np.linalg.norm(v)
        return v / n if n > 0 else np.full(self.dim, 1 / np.sqrt(self.dim), np.float32)

    def iter_encode(self, texts, progress=False, role="passage", desc=""):
        texts = list(texts)
        self.encoded.extend(texts)
        for start in range(0, len(texts), 8):
            idx = np.arange(start, min(start + 8, len(texts)))
            yield idx, np.stack([self._vec(texts[i]) for i in idx])

    def encode(self, texts, progress=False, role="passage"):
        out = np.zeros((len(texts), self.dim), np.float32)
        for idx, vecs in self.iter_encode(texts, progress, role):
            out[idx] = vecs
        return out


def make_chunks(texts: list[str], doc_of=lambda i: f"doc{i}.md") -> list[Chunk]:
    """One chunk per text, each in its own document unless ``doc_of`` says otherwise."""
    out, counts = [], {}
    for i, t in enumerate(texts):
        doc = doc_of(i)
        n = counts[doc] = counts.get(doc, -1) + 1
        out.append(Chunk(id=f"{doc}#{n}", text=t, doc=doc, span=(0, len(t)), heading="", n_tokens=len(t.split())))
    return out


def filler_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sentences of common words (background chunks)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=12)) + f" note {i}." for i in range(n)]


def _wordpiece(path: Path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(filler_texts(200) + WORDS, trainers.WordPieceTrainer(vocab_size=300,
                                                                                 special_tokens=specials))
    fast = BertTokenizerFast(tokenizer_object=tok)
    fast.save_pretrained(path)
    return fast


def build_tiny_bert(path: Path, seed: int = 0, hidden: int = 32, classifier: bool = False) -> Path:
    """A 2-layer BERT with random weights (and a WordPiece tokenizer trained on the fly) saved to ``path``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    tok = _wordpiece(path)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=128, num_labels=1)
    model = BertForSequenceClassification(cfg) if classifier else BertModel(cfg)
    model.save_pretrained(path)
    return path


def build_tiny_sentence_encoder(path: Path, seed: int = 0, hidden: int = 32) -> Path:
    """A tiny random sentence-transformers folder (BERT + mean pooling) at ``path``."""
    from sentence_transformers import SentenceTransformer

    raw = build_tiny_bert(path.with_name(path.name + "-hf"), seed, hidden)
    SentenceTransformer(str(raw), device="cpu").save(str(path))
    return path
