"""Typed, grouped configuration for every stage, and the shipped YAML presets (``workbench/core/presets/*.yaml``).

Each stage function takes its own dataclass; ``RunConfig`` groups them for ``workbench run`` and the
presets. Unknown keys in a preset are an error, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from workbench.core.errors import WorkbenchError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
DEFAULT_BASE_MODEL = "SmolLM2-135M-Instruct"
CONFIG_DIR = Path(__file__).resolve().parent / "presets"
"""The presets that ship inside the package (package data, so a wheel install has them too)."""


@dataclass
class IngestConfig:
    """How documents become chunks."""

    chunk_tokens: int = 256
    """Chunk budget in tokenizer tokens, never exceeded (a sentence longer than it is split by tokens)."""
    overlap_tokens: int = 32
    """Tokens of trailing sentences repeated at the start of the next chunk."""
    language: str = "auto"
    """Corpus language (ISO 639-1 code such as en or pt): "auto" detects it per document. It picks the spaCy
    sentence pipeline, BM25 stopwords and stemmer, answer cleaning and question-synthesis templates."""
    tokenizer: str = "default"
    """"default" (the embedder's tokenizer), "whitespace", or a Hugging Face tokenizer id/folder."""
    near_duplicate_threshold: float = 0.9
    """MinHash Jaccard estimate at or above which a document is flagged a near-duplicate."""
    workers: int = 0
    """Processes that read and chunk documents: 0 = auto (one per core, up to 4, for corpora over 16 MB)."""

    def __post_init__(self):
        if self.workers < 0:
            raise WorkbenchError(f"workers={self.workers} is negative", "use 0 (auto) or a positive number")
        if self.chunk_tokens < 8:
            raise WorkbenchError(f"chunk_tokens={self.chunk_tokens} is too small", "use 8 or more")
        if not 0 <= self.overlap_tokens < self.chunk_tokens:
            raise WorkbenchError("overlap_tokens must be >= 0 and < chunk_tokens", "lower overlap_tokens")
        if not 0 < self.near_duplicate_threshold <= 1:
            raise WorkbenchError("near_duplicate_threshold must be in (0, 1]", "use e.g. 0.9")


@dataclass
class IndexConfig:
    """How chunks become a searchable index."""

    embedder: str = DEFAULT_EMBEDDER
    """Sentence-transformers model: the embedded default, a hub id, or a local folder."""
    kind: str = "auto"
    """FAISS index: auto (by corpus size), flat, hnsw or ivfpq."""
    batch_size: int = 64
    """Encoding batch size."""
    device: str = "auto"

    def __post_init__(self):
        if self.kind not in {"auto", "flat", "hnsw", "ivfpq"}:
            raise WorkbenchError(f"unknown index kind {self.kind!r}", "use auto, flat, hnsw or ivfpq")
        if self.batch_size < 1:
            raise WorkbenchError(f"index batch_size={self.batch_size}", "use 1 or more")


@dataclass
class RetrieveConfig:
    """How passages are found for a question."""

    mode: str = "hybrid"
    """dense, sparse (BM25) or hybrid (reciprocal-rank fusion of both)."""
    k: int = 2
    """Passages handed to the model (2 measured best for the embedded 135M model; larger models read more)."""
    candidates: int = 50
    """Candidates taken from each retriever before fusion / reranking."""
    rrf_k: int = 60
    """Reciprocal-rank-fusion constant."""
    dense_weight: float | None = None
    """Weight of the dense ranking in the fusion (BM25's is 1); None: 1, or less when the embedder is not
    known to cover the corpus language (``workbench.retrieval.retrieve.UNCOVERED_DENSE_WEIGHT``)."""
    reranker: str | None = None
    """Optional cross-encoder id/folder that reorders the fused candidates."""
    max_query_chars: int = 2000
    """Longer queries are refused (an embedder reads only its first few hundred tokens)."""

    def __post_init__(self):
        if self.mode not in {"dense", "sparse", "hybrid"}:
            raise WorkbenchError(f"unknown retrieval mode {self.mode!r}", "use dense, sparse or hybrid")
        if self.k < 1:
            raise WorkbenchError("k must be at least 1", "use k >= 1")
        if self.candidates < 1 or self.rrf_k < 0 or self.max_query_chars < 1:
            raise WorkbenchError("candidates and max_query_chars must be >= 1 and rrf_k >= 0", "fix the preset")
        if self.dense_weight is not None and self.dense_weight < 0:
            raise WorkbenchError(f"dense_weight={self.dense_weight} is negative", "use a weight >= 0, or null (auto)")


@dataclass
class ModelConfig:
    """Which base LLM, where it runs."""

    base_model: str = DEFAULT_BASE_MODEL
    """The embedded SmolLM2, a Hugging Face id, a local folder, or a .gguf file."""
    device: str = "auto"
    """auto (CUDA, then MPS, then CPU), cuda, mps or cpu."""
    dtype: str = "auto"
    """auto (bf16 on CUDA, fp32 elsewhere), float32, bfloat16 or float16."""
    cpu_dtype: str = "float32"
    """How a model answers on CPU (never on CUDA or MPS, never in training): float32 (the weights as loaded),
    bfloat16, auto (bfloat16 where the CPU computes it natively, AVX512-BF16 or AMX, and ``dtype`` is auto;
    else float32) or int8 (dynamic int8 linear layers). Demo, SmolLM2-135M, 48 eval questions on a quiet 2-core
    AVX512-BF16 CPU (``bench/demo_speed.py``): bfloat16 answers 1.67x faster over base, rag, ft, ft_rag (2.24x,
    1.84x, 1.17x, 1.52x) and keeps RAG answers (rag 98% identical, F1 0.558 both), but free closed-book replies flip on
    near-ties (base 69% identical, F1 0.029 -> 0.069; ft 94%, 0.364 -> 0.354): outside the tolerance for a
    default (every system >= 97% identical, F1 within 0.01). int8 is worse (next-token agreement 42% on demo
    prompts: the model's outlier activations defeat per-tensor int8)."""
    backend: str = "local"
    """local (load the weights here) or openai (send prompts to an OpenAI-compatible server: vLLM, llama.cpp,
    Ollama, ``workbench serve``; ``workbench.answering.remote``). Prompts are still built here, with ``base_model``'s
    tokenizer counting tokens when it loads (else a characters/4 estimate)."""
    base_url: str | None = None
    """The server's OpenAI-compatible base URL (backend openai), e.g. http://127.0.0.1:8000/v1."""
    model: str | None = None
    """Served model name for base and rag (backend openai); None: the first one the server lists."""
    lora_model: str = "{adapter}"
    """Served model name for an adapter's systems (ft, ft_rag) over backend openai; ``{adapter}`` is the
    adapter's name. vLLM: ``--enable-lora --lora-modules NAME=adapters/NAME``; ``workbench serve`` answers to
    the bare adapter name too."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the server's API key (backend openai; unset: no key sent)."""
    concurrency: int = 8
    """Requests in flight at once (backend openai)."""
    timeout_s: float = 120.0
    """Seconds one request may take (backend openai)."""
    retries: int = 2
    """Retries of a request that failed to connect, timed out or got HTTP 429/5xx (backend openai)."""
    remote_copy: str = "snap"
    """Over backend openai, copy-constrained decoding (``generate.copy_spans``) needs logits: "snap" replaces a
    grounded reply by the closest span of the passage sentences it could have copied, "free" keeps it as is."""

    def __post_init__(self):
        if not self.base_model.strip():
            raise WorkbenchError("base_model is empty", "name the embedded default, a folder, a .gguf or a hub id")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device.strip().lower()):
            raise WorkbenchError(f"unknown device {self.device!r}", "use auto, cpu, cuda, cuda:N or mps")
        if self.dtype not in {"auto", "float32", "bfloat16", "float16"}:
            raise WorkbenchError(f"unknown dtype {self.dtype!r}", "use auto, float32, bfloat16 or float16")
        if self.cpu_dtype not in {"auto", "float32", "bfloat16", "int8"}:
            raise WorkbenchError(f"unknown cpu_dtype {self.cpu_dtype!r}", "use auto, float32, bfloat16 or int8")
        if self.backend not in {"local", "openai"}:
            raise WorkbenchError(f"unknown model backend {self.backend!r}", "use local or openai")
        if self.backend == "openai" and not (self.base_url or "").strip():
            raise WorkbenchError("model.backend openai needs model.base_url",
                                 "set it to the server's OpenAI-compatible URL, e.g. http://127.0.0.1:8000/v1")
        if self.remote_copy not in {"snap", "free"}:
            raise WorkbenchError(f"unknown remote_copy {self.remote_copy!r}", "use snap or free")
        if self.concurrency < 1 or self.retries < 0 or self.timeout_s <= 0:
            raise WorkbenchError("concurrency must be >= 1, retries >= 0 and timeout_s > 0", "fix the preset")


@dataclass
class GenerateConfig:
    """Decoding settings shared by every system."""

    max_new_tokens: int = 24
    """Answers are one short line; the first line is all that is kept."""
    temperature: float = 0.0
    """0 means greedy."""
    batch_size: int = 32
    """Most prompts generated together."""
    batch_tokens: int = 4096
    """Most (padded) prompt tokens generated together: long RAG prompts go in smaller batches. On 2 CPU
    cores, 64 demo RAG prompts (~330 tokens) took 61 s in batches of 8, 63 s of 16, 82 s of 32, while 217
    closed-book prompts took 63 s in batches of 16 and 51 s of 32 (24 new tokens)."""
    context_tokens: int = 2048
    """Prompt budget (passages are trimmed to fit it and the model's own window)."""
    copy_spans: bool = True
    """With passages, constrain each reply to a word-aligned span copied from the passage sentences closest
    to the question, or "I don't know" (``workbench.answering.copying``, ``workbench.answering.prompt.copy_sources``): measured
    to lift the embedded 135M model's RAG F1 on the demo from 0.34 to 0.55."""


    def __post_init__(self):
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.batch_tokens < 1:
            raise WorkbenchError("max_new_tokens, batch_size and batch_tokens must be >= 1", "fix the preset")
        if self.temperature < 0:
            raise WorkbenchError(f"temperature={self.temperature} is negative", "use 0 (greedy) or more")
        if self.context_tokens < 64:
            raise WorkbenchError(f"context_tokens={self.context_tokens} is too small", "use 64 or more")


@dataclass
class PromptConfig:
    """How a question becomes a prompt and a reply becomes an answer (``workbench.answering.prompt``,
    ``workbench.answering.postprocess``). Figures: SmolLM2-135M on demo questions (``bench/rag_prompt.py``)."""

    reply_start: str = "The answer is:"
    """Text the assistant's reply to a RAG prompt starts with (the model continues it); empty: none. It
    skips the restatement small models open with. Measured (60 questions, k=3): none F1 0.29, "The answer
    is:" 0.36, "Answer:" 0.21."""
    copy_sentences: int = 4
    """Sentences of the passages a grounded reply may copy from: those closest to the question (0: the whole
    passages). Measured (180 questions, k=2, with the start rules and abstain_bias -3): 3 sentences F1 0.50,
    4: 0.55, 5: 0.52."""
    copy_sentences_uncovered: int = 1
    """``copy_sentences`` for a corpus in a language the embedder is known not to cover (the sentences are then
    ranked by shared stems, and the embedded English models read such text poorly: fewer places to copy
    from pay off). Measured on 60 squad-pt-dev train questions with the embedded models: 4 sentences F1
    0.039, 1 sentence 0.146."""
    abstain_bias: float = -3.0
    """Log-score added to a grounded reply that starts the abstention phrase (a small model offered few
    places to copy from declines answerable questions). Measured with 5 sentences: 0 -> F1 0.49, -1.5 ->
    0.52, -3 -> 0.52 (answerable questions declined: 13%, 6%, 2%)."""
    passage_sentences: int = 0
    """Sentences kept from each passage in the prompt (best-matching, in document order); 0 keeps whole
    chunks. Measured (30 questions): 3 sentences cut F1 from 0.35 to 0.15."""
    few_shot: int = 0
    """Worked examples (``workbench.answering.prompt.WORKED_EXAMPLES``, at most 3) shown before RAG prompts. Measured
    (30 questions): 3 examples cut F1 from 0.23 to 0.06 (the model copied "I don't know")."""
    question_first: bool = False
    """Also state the question before the passages (it always follows them). Measured: F1 0.35 -> 0.27."""
    best_passage_last: bool = False
    """Show passages in reverse rank order ([n] keeps its rank). Measured (90 questions): 0.309 vs 0.311."""
    answer_reserve: int = 48
    """Tokens of the context budget kept free for the reply."""
    min_passage_tokens: int = 24
    """A passage that would have to be cut shorter than this is left out instead."""
    strip_echo: bool = True
    """Drop a restatement of the question from a full-sentence reply (``postprocess.strip_echo``)."""
    quantity_phrases: bool = True
    """A grounded reply starting with a number, date or time becomes the whole quantity phrase of the
    passage ("14" -> "14 hours"; ``workbench.answering.quantity``). Measured (180 questions): F1 0.547 -> 0.605."""

    def __post_init__(self):
        if not 0 <= self.few_shot <= 3:
            raise WorkbenchError(f"few_shot={self.few_shot}", "use 0 to 3 worked examples")
        if self.copy_sentences < 0 or self.copy_sentences_uncovered < 0 or self.passage_sentences < 0:
            raise WorkbenchError("copy_sentences and passage_sentences must be >= 0", "use 0 for whole passages")
        if self.answer_reserve < 1 or self.min_passage_tokens < 1:
            raise WorkbenchError("answer_reserve and min_passage_tokens must be >= 1", "fix the preset")


@dataclass
class FinetuneConfig:
    """Fine-tuning hyper-parameters (LoRA modes and training from scratch)."""

    mode: str = "sft"
    """sft, cpt, raft or scratch."""
    epochs: float = 3.0
    max_steps: int = -1
    """If > 0, overrides epochs."""
    learning_rate: float = 2e-3
    """LoRA peak learning rate; a high rate and small batches memorise the demo's facts in three passes
    (the ``quick`` preset records the measurements)."""
    batch_size: int = 4
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    max_seq_len: int = 256
    packing: bool = True
    cpu_bf16: bool = False
    """On a CPU that computes bfloat16 natively (AVX512-BF16, AMX), train under bfloat16 autocast (weights and
    optimizer stay float32). Demo LoRA steps on 2 cores: 1.47x the tokens/s of float32; off until a full run
    shows the same held-out loss (``bench/demo_speed.py --stages finetune --new finetune.cpu_bf16=true``).
    Never applies on CUDA/MPS (``model.dtype`` decides there)."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: str = "all-linear"
    synthesize: str = "auto"
    """auto (only when the QA file has no train split), always, or never."""
    paraphrases: int = 0
    """Extra rule-based rewordings added per gold training question (0 = none); synthesized questions get
    ``synth.wordings`` instead."""
    anchor_questions: int = 0
    """Per trained fact, questions synthesized from the document sentence holding its answer."""
    raft_passages: int = 2
    """RAFT: passages per prompt (the gold one plus distractors); keep it at ``retrieve.k``."""
    raft_distractor_only: float = 0.2
    """RAFT: share of examples whose passages leave out the gold one."""
    heldout_fraction: float = 0.05
    save_steps: int = 50
    seed: int = 0
    # training from scratch
    scratch_vocab_size: int = 4096
    scratch_hidden_size: int = 256
    scratch_layers: int = 4
    scratch_heads: int = 4
    scratch_pretrain_epochs: float = 20.0
    scratch_learning_rate: float = 1e-3
    """Peak learning rate of scratch pre-training (instruction tuning uses half)."""

    def __post_init__(self):
        if self.mode not in {"sft", "cpt", "raft", "scratch"}:
            raise WorkbenchError(f"unknown fine-tuning mode {self.mode!r}", "use sft, cpt, raft or scratch")
        if self.synthesize not in {"auto", "always", "never"}:
            raise WorkbenchError(f"unknown synthesize={self.synthesize!r}", "use auto, always or never")
        if self.batch_size < 1 or self.grad_accum < 1 or self.max_seq_len < 16:
            raise WorkbenchError("batch_size and grad_accum must be >= 1 and max_seq_len >= 16", "fix the preset")
        if not 0 <= self.heldout_fraction < 0.5 or not 0 <= self.raft_distractor_only <= 1:
            raise WorkbenchError("heldout_fraction must be in [0, 0.5) and raft_distractor_only in [0, 1]",
                                 "fix the preset")
        if self.epochs <= 0 or self.learning_rate <= 0 or self.scratch_learning_rate <= 0:
            raise WorkbenchError("epochs and the learning rates must be > 0", "fix the preset")
        if self.max_steps == 0 or self.max_steps < -1:
            raise WorkbenchError(f"max_steps={self.max_steps}: use a number of steps >= 1, or -1 to train for epochs",
                                 "fix the preset")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.lora_dropout < 1:
            raise WorkbenchError("warmup_ratio and lora_dropout must be in [0, 1)", "e.g. warmup_ratio: 0.05")
        small = [k for k in ("lora_r", "lora_alpha", "save_steps", "raft_passages",
                             "scratch_vocab_size", "scratch_hidden_size", "scratch_layers", "scratch_heads")
                 if getattr(self, k) < 1]
        if small or self.paraphrases < 0 or self.anchor_questions < 0 or self.scratch_pretrain_epochs <= 0:
            raise WorkbenchError(f"{', '.join(small) or 'paraphrases, anchor_questions or scratch_pretrain_epochs'}"
                                 " out of range", "counts must be >= 1 (paraphrases, anchor_questions >= 0)")


@dataclass
class SynthConfig:
    """How training questions are synthesized from the corpus when it has no train split."""

    backend: str = "rules"
    """rules (spaCy spans -> fronted questions, no model), openai (a served model at ``base_url`` writes
    questions and paraphrases: Ollama, vLLM, llama.cpp server, ``workbench serve``) or model (the base model)."""
    per_chunk: int = 4
    """Facts (answer spans, or a model's question-answer pairs) synthesized per chunk."""
    wordings: int = 3
    """Questions per synthesized fact: the first plus rewordings (frames, wh-variants, synonym swaps, moved
    phrases; a model's paraphrases). 1 = one question per fact."""
    max_words: int = 20
    """Length limit of a synthesized question in words (longer ones are dropped)."""
    base_url: str | None = None
    """backend openai: the server's OpenAI-compatible base URL (e.g. http://localhost:11434/v1)."""
    model: str | None = None
    """backend openai: the model name to request (None: the server's first listed model)."""
    api_key_env: str = "OPENAI_API_KEY"
    """backend openai: environment variable holding the API key (unset: no key sent)."""
    timeout_s: float = 120.0
    """backend openai: seconds to wait for one reply."""

    def __post_init__(self):
        if self.backend not in {"rules", "openai", "model"}:
            raise WorkbenchError(f"unknown synth backend {self.backend!r}", "use rules, openai or model")
        if self.backend == "openai" and not self.base_url:
            raise WorkbenchError("synth.backend openai needs synth.base_url",
                                 "set synth.base_url to the server's /v1 URL, e.g. http://localhost:11434/v1")
        if self.per_chunk < 1 or self.wordings < 1:
            raise WorkbenchError("synth.per_chunk and synth.wordings must be >= 1", "e.g. per_chunk 4, wordings 3")
        if self.max_words < 5 or self.timeout_s <= 0:
            raise WorkbenchError("synth.max_words must be >= 5 and synth.timeout_s > 0", "e.g. max_words 20")


@dataclass
class EvalConfig:
    """What the evaluation harness scores and how."""

    systems: list[str] = field(default_factory=lambda: ["base", "rag", "ft", "ft_rag"])
    limit: int | None = None
    """Score only the first N eval questions."""
    bootstrap: int = 1000
    seed: int = 0
    judge_base_url: str | None = None
    """OpenAI-compatible endpoint for judge-based ragas metrics; None skips them."""
    judge_model: str | None = None
    abstain: str = "calibrated"
    """When a system declines: "calibrated" (its own "I don't know", and, where the calibration set supports
    it, any reply whose calibrated confidence is below the operating point's threshold), "model" (only its own
    "I don't know") or "never" (copy-constrained systems are not offered the abstention phrase). Accuracy
    (``systems.*.f1``) always scores every answer; the operating point is reported on its own."""
    abstain_target: str = "answerable_declined"
    """What the decline threshold is chosen for, on the calibration questions: "answerable_declined" (the
    highest threshold that declines at most ``max_answerable_declined`` of the answerable questions) or
    "precision" (the lowest threshold whose answers are right at least ``min_precision`` of the time)."""
    max_answerable_declined: float = 0.1
    """The share of answerable questions the "answerable_declined" target lets the threshold decline."""
    min_precision: float = 0.8
    """The precision the "precision" target asks for."""
    calibration_questions: int = 48
    """At most this many questions each system answers to fit its calibrator: never eval questions (train
    split, else synthesized from the corpus), a share of them made unanswerable (``workbench.evaluation.unanswerable``)."""
    calibration_budget: float = 0.1
    """Calibration questions are cut to at most this share of all questions a system answers (eval plus
    calibration), so calibration costs about this share of answering time; never below
    2 x ``calibration_min_each``, the fewest that could pass the rule."""
    calibration_min_each: int = 10
    """A calibrated threshold is applied only when a system's calibration answers hold at least this many
    right and this many wrong answers (and its gain holds under cross-validation)."""
    calibration_folds: int = 5
    """Folds of the cross-validation that checks a threshold's gain out of sample on the calibration set."""
    calibration_unanswerable: float = 0.33
    """Share of the calibration questions made unanswerable (an entity changed into one the corpus lacks)."""
    unanswerable_prior: float = 0.2
    """The share of questions the corpus cannot answer that confidences and the threshold are calibrated for:
    calibration questions are weighted to this mix (an assumption about use, not measured: SQuAD 2.0's dev
    set has one half; a help desk over its own documents mostly gets answerable questions)."""

    def __post_init__(self):
        if self.abstain not in {"calibrated", "model", "never"}:
            raise WorkbenchError(f"unknown abstain mode {self.abstain!r}", "use calibrated, model or never")
        if self.abstain_target not in {"answerable_declined", "precision"}:
            raise WorkbenchError(f"unknown abstain_target {self.abstain_target!r}",
                                 "use answerable_declined or precision")
        if not 0.0 <= self.max_answerable_declined < 1.0:
            raise WorkbenchError(f"max_answerable_declined={self.max_answerable_declined} is outside [0, 1)",
                                 "use e.g. 0.1")
        if not 0.0 < self.calibration_budget < 1.0:
            raise WorkbenchError(f"calibration_budget={self.calibration_budget} is outside (0, 1)", "use e.g. 0.1")
        if self.calibration_min_each < 1 or self.calibration_folds < 2:
            raise WorkbenchError("calibration_min_each must be >= 1 and calibration_folds >= 2",
                                 "use e.g. 10 and 5")
        if not 0.0 < self.min_precision <= 1.0:
            raise WorkbenchError(f"min_precision={self.min_precision} is outside (0, 1]", "use e.g. 0.8")
        if self.calibration_questions < 8:
            raise WorkbenchError(f"calibration_questions={self.calibration_questions} is too few to fit on",
                                 "use 8 or more (default 48)")
        if not 0.0 < self.unanswerable_prior < 1.0:
            raise WorkbenchError(f"unanswerable_prior={self.unanswerable_prior} is outside (0, 1)", "use e.g. 0.2")
        if not 0.0 < self.calibration_unanswerable < 1.0:
            raise WorkbenchError(f"calibration_unanswerable={self.calibration_unanswerable} is outside (0, 1)",
                                 "use e.g. 0.33")
        if self.limit is not None and self.limit < 1:
            raise WorkbenchError(f"limit={self.limit} leaves no questions", "use a positive limit or none")
        if self.bootstrap < 0:
            raise WorkbenchError(f"bootstrap={self.bootstrap} is negative", "use 0 (no intervals) or more")


@dataclass
class RunConfig:
    """Every stage's settings, as a preset holds them."""

    ingest: IngestConfig = field(default_factory=IngestConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _type_name(tp: Any) -> str:
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if get_origin(tp) is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def check_value(tp: Any, value: Any) -> Any:
    """``value`` as the field type ``tp`` asks for, or raise TypeError.

    Only lossless readings are accepted: an integer where a number is asked, and a string YAML left
    unconverted although it is a number in exponent form (``2e-4``: YAML 1.1 reads it as text). A string
    is never read as an integer or a flag (``"128"``, ``"yes"``), and a flag never as a number.
    """
    if get_origin(tp) in (Union, types.UnionType):
        for option in get_args(tp):
            try:
                return check_value(option, value)
            except TypeError:
                continue
        raise TypeError
    if get_origin(tp) is list:
        if not isinstance(value, list):
            raise TypeError
        return [check_value(get_args(tp)[0], v) for v in value]
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    return value


def _checked_fields(cls: type, data: dict[str, Any], where: str, source: str) -> dict[str, Any]:
    hints = get_type_hints(cls)
    out = {}
    for k, v in data.items():
        try:
            out[k] = check_value(hints[k], v)
        except TypeError:
            raise WorkbenchError(f"{where}, key {k}: expected {_type_name(hints[k])}, got {v!r} "
                                 f"({type(v).__name__})", f"fix {k} in {source}") from None
    return out


def _build(cls: type, kwargs: dict[str, Any], where: str) -> Any:
    """``cls(**kwargs)``, with a range check's message prefixed by where the values came from."""
    try:
        return cls(**kwargs)
    except WorkbenchError as e:
        raise WorkbenchError(f"{where}: {e.message}", e.hint) from None


def from_dict(cls: type, data: dict[str, Any] | None, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a (nested) dict, refusing unknown keys and values of the wrong type.

    Args:
        cls: the config dataclass.
        data: the mapping (a preset's parsed YAML, or a section of it).
        where: where the data came from, for messages (``quick.yaml``; sections are added).

    Raises:
        WorkbenchError: naming the file, section and key: an unknown key, a value of the wrong type, or
            a value out of range.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise WorkbenchError(f"{where}: expected a mapping, got {type(data).__name__}", "fix the preset")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise WorkbenchError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}",
                             f"known keys: {', '.join(sorted(names))}")
    source = where.split(",")[0]
    kwargs = {k: from_dict(hints[k], v, f"{source}, section {k}")
              for k, v in data.items() if dataclasses.is_dataclass(hints[k])}
    kwargs.update(_checked_fields(cls, {k: v for k, v in data.items() if k not in kwargs}, where, source))
    return _build(cls, kwargs, where)


def override(cfg: RunConfig, **groups: dict[str, Any]) -> RunConfig:
    """A copy of ``cfg`` with some fields of some groups replaced; ``None`` values keep the preset's.

    Example: ``override(cfg, model={"base_model": base}, retrieve={"k": k})`` (command-line options
    over a preset). Values are type-checked and each changed group is re-validated by its
    ``__post_init__``.
    """
    changes = {}
    for group, values in groups.items():
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            current = getattr(cfg, group)
            unknown = sorted(set(values) - {f.name for f in dataclasses.fields(current)})
            if unknown:
                raise WorkbenchError(f"unknown setting(s) {group}.{', '.join(unknown)}", "check the option name")
            checked = _checked_fields(type(current), values, f"setting {group}", "the command-line option")
            try:
                changes[group] = dataclasses.replace(current, **checked)
            except WorkbenchError as e:
                raise WorkbenchError(f"{group}: {e.message}", e.hint) from None
    return dataclasses.replace(cfg, **changes) if changes else cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data (written next to every artifact)."""
    return dataclasses.asdict(cfg)


def load_preset(name_or_path: str | Path) -> RunConfig:
    """Load a shipped preset by name (``quick`` is ``CONFIG_DIR/quick.yaml``) or any YAML file by path.

    Raises:
        WorkbenchError: the preset does not exist or holds unknown keys.
    """
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise WorkbenchError(f"preset {name_or_path!r} not found", f"known presets: {known}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise WorkbenchError(f"{path}: invalid YAML ({e})", "fix the file") from None
    return from_dict(RunConfig, data, where=path.name if path.resolve().parent == CONFIG_DIR else str(path))
