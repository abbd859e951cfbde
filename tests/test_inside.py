"""Inside the model: token splits, next-token softmax and sampling, attention, teacher-forced log-probs,
the semantic-space projection; tiny random models, real code paths."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rag_fakes import StubEmbedder, filler_texts, make_chunks

from workbench.core.errors import WorkbenchError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lm(tiny_lm_dir):
    from workbench.answering.models import load_base_model
    from workbench.core.config import ModelConfig

    return load_base_model(ModelConfig(base_model=str(tiny_lm_dir), device="cpu"))


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_lm_dir, tiny_embedder_dir):
    """A project with the tiny LM's corpus index (tiny sentence encoder) and a LoRA adapter."""
    from app_project import build_tiny_adapter, build_tiny_index, write_corpus

    root = tmp_path_factory.mktemp("inside-project")
    corpus = write_corpus(root)
    (corpus / "seals.md").write_text("# Seals\n\nGrease the seals with silicone grease every 18 months.\n",
                                     encoding="utf-8")
    build_tiny_index(root, corpus, tiny_embedder_dir)
    build_tiny_adapter(root, tiny_lm_dir, corpus)
    return root


@pytest.fixture
def retriever(project, monkeypatch):
    from workbench.retrieval.index import load_index
    from workbench.retrieval.retrieve import Retriever

    monkeypatch.setenv("WORKBENCH_HOME", str(project))
    return Retriever(load_index(project / "indices" / "tiny"))


# --- tokens ------------------------------------------------------------------------------------------

def test_token_split_covers_the_text_and_counts_word_costs(lm):
    from workbench.inside.tokens import format_splits, split_text

    text = "The Tern-3 buoy weighs 42 kg."
    s = split_text(text, lm[1], "base", max_tokens=4)
    assert "".join(s.pieces()) == text  # byte-level BPE covers every character exactly once
    assert s.ids == lm[1](text, add_special_tokens=False)["input_ids"]
    costs = dict(s.word_costs())
    assert costs["Tern-3"] >= 3 and costs["The"] == 1
    assert s.notes and "first 4 tokens" in s.notes[0]
    table = format_splits([s])
    assert f"base: {s.n_tokens} tokens for {len(text)} characters" in table and "Tern-3" in table
    for bad in ("", "   "):
        with pytest.raises(WorkbenchError, match="empty"):
            split_text(bad, lm[1], "base")


# --- next token --------------------------------------------------------------------------------------

def test_reshape_is_a_distribution_shaped_by_temperature_top_k_top_p():
    from workbench.inside.nexttoken import reshape, softmax

    z = np.random.default_rng(0).normal(size=(3, 500)) * 3
    for t, k, p in [(1.0, 0, 1.0), (0.5, 0, 1.0), (2.0, 20, 1.0), (1.0, 0, 0.9), (0.7, 50, 0.8)]:
        probs = reshape(z, t, k, p)
        assert np.allclose(probs.sum(-1), 1.0) and (probs >= 0).all()
        if k:
            assert ((probs > 0).sum(-1) <= k).all()
    assert np.allclose(reshape(z[0], 1.0), softmax(z[0]))
    greedy = reshape(z, 0.0)
    assert (greedy.argmax(-1) == z.argmax(-1)).all() and np.allclose(greedy.max(-1), 1.0)
    entropy = [-(q * np.log(q + 1e-30)).sum() for q in (reshape(z[0], t) for t in (0.5, 1.0, 2.0))]
    assert entropy[0] < entropy[1] < entropy[2]  # higher temperature, flatter distribution
    # top-p keeps the fewest most likely tokens whose raw mass reaches p
    raw, kept = softmax(z[0]), reshape(z[0], 1.0, 0, 0.9) > 0
    assert raw[kept].sum() >= 0.9 and raw[kept].sum() - raw[kept].min() < 0.9
    for bad in [(-1, 0, 1.0), (1, -2, 1.0), (1, 0, 0.0), (1, 0, 1.5)]:
        with pytest.raises(WorkbenchError):
            reshape(z, *bad)


def test_next_token_probabilities_sum_to_one_over_the_vocabulary(lm):
    import torch

    from workbench.inside.nexttoken import next_logits, softmax, top_tokens
    from workbench.inside.prompt import question_prompt

    model, tok = lm
    prompt = question_prompt("How much does the Tern-3 weigh?", model, tok)
    logits = next_logits(model, prompt)
    assert logits.shape == (model.config.vocab_size,)
    assert softmax(logits).sum() == pytest.approx(1.0, abs=1e-9)
    with torch.no_grad():
        full = model(torch.tensor([prompt.ids])).logits[0, -1].numpy()
    assert np.allclose(logits, full, atol=1e-5)
    top = top_tokens(logits, tok, 5, temperature=0.5, top_k=3)
    assert [t.rank for t in top] == [1, 2, 3, 4, 5] and top[0].id == int(full.argmax())
    assert sum(t.p for t in top) == pytest.approx(1.0) and top[3].p == 0.0 and top[0].p > top[0].p_raw


def test_sampling_is_reproducible_and_greedy_matches_generate(lm):
    import torch

    from workbench.inside.nexttoken import next_logits, read_prompt, sample_continuations
    from workbench.inside.prompt import question_prompt

    model, tok = lm
    prompt = question_prompt("Who leads Kestrelmark?", model, tok)
    a = sample_continuations(model, tok, prompt, n=3, max_new_tokens=8, temperature=1.2, seed=7)
    assert a == sample_continuations(model, tok, prompt, n=3, max_new_tokens=8, temperature=1.2, seed=7)
    assert len(set(a + sample_continuations(model, tok, prompt, 3, 8, 1.2, seed=8))) > 1
    prefill = read_prompt(model, prompt)  # the page reads the prompt once; sampling reuses (never changes) it
    assert np.allclose(prefill.logits, next_logits(model, prompt), atol=1e-5)
    for _ in range(2):
        assert sample_continuations(model, tok, prompt, 3, 8, 1.2, seed=7, prefill=prefill) == a
    greedy = sample_continuations(model, tok, prompt, n=2, max_new_tokens=8, temperature=0.0)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt.ids]), max_new_tokens=8, do_sample=False)
    ref = tok.decode(out[0, len(prompt.ids):], skip_special_tokens=True)
    assert greedy == [ref, ref]


# --- prompts -----------------------------------------------------------------------------------------

def test_rag_prompt_is_the_evaluation_prompt_with_labelled_parts(lm, retriever):
    from workbench.answering.generate import render_prompt
    from workbench.answering.prompt import build_messages
    from workbench.inside.prompt import question_prompt

    model, tok = lm
    q = "How much does the Tern-3 buoy weigh?"
    prompt = question_prompt(q, model, tok, retriever, k=2)
    hits = retriever.search(q, k=2)
    assert prompt.text == render_prompt(tok, build_messages(q, hits, tok))
    labels = [s.label for s in prompt.segments]
    assert labels == ["instructions", "passage 1", "passage 2", "question", "reply start"]
    pieces = prompt.pieces()
    seg = {s.label: "".join(pieces[s.start:s.end]) for s in prompt.segments}
    assert seg["passage 1"].strip().startswith("[1] (") and hits[0].chunk.text.split()[0] in seg["passage 1"]
    assert seg["question"].strip() == f"Question: {q}" and seg["reply start"].strip() == "The answer is:"
    assert [h.chunk.id for h in prompt.hits] == [h.chunk.id for h in hits]
    closed = question_prompt(q, model, tok)
    assert [s.label for s in closed.segments] == ["instructions", "question"] and not closed.hits


def test_a_prompt_longer_than_the_window_is_cut_from_the_left_with_a_note(lm):
    from workbench.inside.prompt import encode_text

    model, tok = lm
    text = " ".join(f"word{i}" for i in range(1500))
    full = tok(text)["input_ids"]
    prompt = encode_text(text, model, tok, chat=False)
    window = model.config.max_position_embeddings
    assert len(full) > window and prompt.n_tokens == window and prompt.ids == full[-window:]
    assert prompt.notes and f"first {len(full) - window} tokens were cut" in prompt.notes[0]
    assert text.endswith(prompt.text) and "".join(prompt.pieces()).endswith("word1499")
    short = encode_text(text, model, tok, chat=False, max_tokens=100)
    assert short.n_tokens == 100 and "more than the 100 read here" in short.notes[0]
    with pytest.raises(WorkbenchError, match="empty"):
        encode_text("  ", model, tok)


# --- attention ---------------------------------------------------------------------------------------

def test_attention_rows_sum_to_one_and_the_fast_kernel_is_switched_to_eager(lm, retriever):
    from workbench.inside.attention import attention_view, format_attention
    from workbench.inside.prompt import question_prompt

    model, tok = lm
    assert model.config._attn_implementation == "sdpa"
    prompt = question_prompt("How do I grease the seals?", model, tok, retriever, k=2)
    view = attention_view(model, tok, prompt, layer=-1)
    assert model.config._attn_implementation == "sdpa"  # switched back after the pass
    assert any("eager" in n for n in view.notes)
    T = prompt.n_tokens
    assert view.maps.shape == (4, T, T) and view.last_rows.shape == (2, 4, T) and view.layer == 1
    assert np.allclose(view.maps.sum(-1), 1.0, atol=1e-5) and np.allclose(view.last_rows.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(np.triu(view.heatmap(), 1), 0.0)  # causal: nothing reads a later token
    assert np.allclose(view.last_rows[1], view.maps[:, -1])
    shares = dict(view.segment_shares())
    assert set(shares) >= {"passage 1", "passage 2", "question", "template"}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5) and min(shares.values()) >= -1e-6
    words = view.top_words(5, layer=1, head=0)
    assert words and all(w[0].startswith("passage") and prompt.text[w[2]:w[3]] == w[1] for w in words)
    assert [w[4] for w in words] == sorted((w[4] for w in words), reverse=True)
    assert "passage 1" in format_attention(view) and "eager" in format_attention(view)
    with pytest.raises(WorkbenchError, match="layer 5 does not exist"):
        attention_view(model, tok, prompt, layer=5)
    with pytest.raises(WorkbenchError, match="head 9"):
        view.heatmap(9)


def test_an_eager_model_needs_no_switch(tiny_lm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.inside.attention import attention_view
    from workbench.inside.prompt import encode_text

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    view = attention_view(model, tok, encode_text("The Tern-3 buoy weighs 42 kg.", model, tok, chat=False), 0)
    assert not view.notes and view.layer == 0 and np.allclose(view.maps.sum(-1), 1.0, atol=1e-5)


# --- what fine-tuning changed ------------------------------------------------------------------------

def test_teacher_forced_logprobs_match_a_manual_forward_pass(lm):
    import torch

    from workbench.answering.generate import render_prompt
    from workbench.answering.prompt import build_messages
    from workbench.inside.changes import score_batch

    model, tok = lm
    pairs = [("How much does the Tern-3 weigh?", "42 kg"), ("Who leads Kestrelmark Instruments?", "Ilse Varnholt"),
             ("When is the anode replaced?", "every 18 months")]
    scores = score_batch(model, tok, pairs, batch_size=3)  # right-padded together
    for (q, a), s in zip(pairs, scores):
        prompt = tok(render_prompt(tok, build_messages(q, None, tok)), add_special_tokens=False)["input_ids"]
        answer = tok(a + tok.eos_token, add_special_tokens=False)["input_ids"]
        assert s.ids == answer and s.eos
        manual = []
        for j, token in enumerate(answer):  # one forward pass per prefix: log p(token j | prompt + answer[:j])
            with torch.no_grad():
                logits = model(torch.tensor([prompt + answer[:j]])).logits[0, -1]
            manual.append(float(torch.log_softmax(logits, -1)[token]))
        assert np.allclose(s.logprobs, manual, atol=1e-4)
        assert s.total == pytest.approx(sum(manual[:-1]), abs=1e-4)


def test_compare_answer_and_items_show_what_the_adapter_changed(project, tiny_lm_dir, monkeypatch):
    from workbench.corpus.qa import QAItem
    from workbench.inside import changes

    monkeypatch.setenv("WORKBENCH_HOME", str(project))
    base, tuned = changes.load_pair("tiny-sft", device="cpu")
    change = changes.compare_answer(base, tuned, "How much does the Tern-3 weigh?", "42 kg")
    assert np.allclose(change.log_ratios(), change.tuned.logprobs - change.base.logprobs)
    assert np.abs(change.log_ratios()).max() > 1e-3  # the random LoRA weights move the probabilities
    same = changes.compare_answer(base, base, "How much does the Tern-3 weigh?", "42 kg")
    assert np.allclose(same.log_ratios(), 0.0)
    assert len(change.top_base) == len(change.top_tuned) == 8
    assert "log-ratio" in changes.format_change(change)
    items = [QAItem(id="a", question="How much does the Tern-3 weigh?", answers=["42 kg"], kind="paraphrase"),
             QAItem(id="b", question="Who leads Kestrelmark?", answers=["Ilse Varnholt"], kind="unseen"),
             QAItem(id="c", question="Top speed of the Tern-9?", answers=[], answerable=False, kind="unanswerable"),
             QAItem(id="d", question="Where is the office?", answers=["Orrvik"], kind="unseen")]
    shifts = changes.compare_items(base, tuned, items)
    assert [s.id for s in shifts] == ["a", "b", "d"]
    assert shifts[0].logp_base == pytest.approx(change.base.total, abs=1e-4)
    kinds = {k.kind: k for k in changes.by_kind(shifts)}
    assert (kinds["unseen"].n, kinds["paraphrase"].n, kinds["all"].n) == (2, 1, 3)
    assert kinds["unseen"].median_base == pytest.approx(np.median([shifts[1].logp_base, shifts[2].logp_base]))
    assert "median log p base" in changes.format_shifts(shifts)
    with pytest.raises(WorkbenchError, match="gold answer is empty"):
        changes.compare_answer(base, tuned, "How much?", " ")
    with pytest.raises(WorkbenchError, match="no answerable question"):
        changes.compare_items(base, tuned, items[2:3])


# --- semantic space ----------------------------------------------------------------------------------

def _stub_index(n: int = 60):
    from workbench.retrieval.index import index_from_chunks

    emb = StubEmbedder(dim=32)
    chunks = make_chunks(filler_texts(n), doc_of=lambda i: f"doc{i % 4}.md")
    return index_from_chunks(chunks, emb.encode([c.text for c in chunks]), kind="flat"), emb


def test_pca_projection_is_exact_and_reproducible():
    from workbench.inside.space import project_2d

    x = np.random.default_rng(1).normal(size=(50, 16))
    a, qa, kept = project_2d(x, x[:3], "pca", seed=0)
    b, _, _ = project_2d(x, None, "pca", seed=5)
    assert np.array_equal(a, b) and np.allclose(qa, a[:3]) and 0 < kept <= 1
    centered = x - x.mean(0)
    cov_eig = np.sort(np.linalg.eigvalsh(np.cov(centered.T)))[::-1][:2]
    assert np.allclose(a.var(0, ddof=1), cov_eig)  # the two axes of largest variance
    assert abs(np.corrcoef(a[:, 0], a[:, 1])[0, 1]) < 1e-8
    with pytest.raises(WorkbenchError, match="unknown projection"):
        project_2d(x, method="tsne")


def test_semantic_map_samples_with_a_seed_and_keeps_the_neighbours():
    from workbench.inside.space import format_map, semantic_map

    index, emb = _stub_index(60)
    full = semantic_map(index, emb, "buoy battery anode", k=4)
    assert len(full.chunks) == 60 and full.coords.shape == (60, 2) and not full.notes
    assert [h.rank for h in full.neighbours] == [1, 2, 3, 4]
    assert all(a.score >= b.score for a, b in zip(full.neighbours, full.neighbours[1:]))
    a = semantic_map(index, emb, "buoy battery anode", k=4, max_points=20, seed=3)
    b = semantic_map(index, emb, "buoy battery anode", k=4, max_points=20, seed=3)
    c = semantic_map(index, emb, "buoy battery anode", k=4, max_points=20, seed=4)
    assert [x.id for x in a.chunks] == [x.id for x in b.chunks] != [x.id for x in c.chunks]
    assert np.array_equal(a.coords, b.coords) and np.array_equal(a.query_xy, b.query_xy)
    assert len(a.chunks) == 20 and {h.chunk.id for h in a.neighbours} <= {x.id for x in a.chunks}
    assert "seed 3" in a.notes[0] and "query" in format_map(a)


def test_similarity_matrix_and_vector_arithmetic():
    from workbench.inside.space import nearest_chunks, similarity_matrix, vector_arithmetic

    index, emb = _stub_index(40)
    kept, sim = similarity_matrix(emb, ["buoy battery", "", "battery buoy", "travel policy expense"])
    assert kept == ["buoy battery", "battery buoy", "travel policy expense"]
    assert np.allclose(np.diag(sim), 1.0) and np.allclose(sim, sim.T)
    assert sim[0, 1] == pytest.approx(1.0) and sim[0, 2] < 0.9  # same words, same bag-of-words vector
    hits, cos = vector_arithmetic(index, emb, "pump valve", "kettle", "kettle", k=3)  # B == C: back to A
    assert [h.chunk.id for h in hits] == [h.chunk.id for h in nearest_chunks(index, emb.encode(["pump valve"])[0], 3)]
    assert cos["pump valve"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(WorkbenchError, match="sentences given"):
        similarity_matrix(emb, ["only one"])
    with pytest.raises(WorkbenchError, match="phrase is empty"):
        vector_arithmetic(index, emb, "pump", " ", "valve", k=3)


# --- the embedded models -------------------------------------------------------------------------------

@pytest.mark.slow
def test_embedded_models_tokens_softmax_attention_and_similarity():
    """SmolLM2-135M and MiniLM: real vocabularies, the SDPA kernel switched to eager, real semantics."""
    import torch

    from workbench.answering.models import load_base_model
    from workbench.core.config import ModelConfig
    from workbench.inside.attention import attention_view
    from workbench.inside.changes import example_ids, gold_scores
    from workbench.inside.nexttoken import next_logits, softmax
    from workbench.inside.prompt import question_prompt
    from workbench.inside.space import similarity_matrix
    from workbench.inside.tokens import split_text
    from workbench.retrieval.embed import Embedder

    model, tok = load_base_model(ModelConfig(device="cpu"))
    embedder = Embedder(device="cpu")
    text = "The Tern-3 buoy weighs 42 kg."
    llm, emb = split_text(text, tok, "llm"), split_text(text, embedder.model.tokenizer, "minilm", embedder.max_tokens)
    assert dict(llm.word_costs())["Tern-3"] >= 2 and dict(emb.word_costs())["Tern-3"] >= 3  # tern - 3, or more
    assert any(t.startswith("##") for t in emb.tokens) or "-" in emb.tokens
    prompt = question_prompt("How much does the Tern-3 buoy weigh?", model, tok)
    logits = next_logits(model, prompt)
    assert logits.shape[0] == model.config.vocab_size and softmax(logits).sum() == pytest.approx(1.0, abs=1e-9)
    impl = model.config._attn_implementation
    view = attention_view(model, tok, prompt, layer=-1)
    assert model.config._attn_implementation == impl
    assert (impl == "eager") != any("eager kernel" in n for n in view.notes)
    assert view.n_layers == model.config.num_hidden_layers and np.allclose(view.last_rows.sum(-1), 1.0, atol=1e-4)
    assert np.allclose(view.maps.sum(-1), 1.0, atol=1e-4)
    scores = gold_scores(model, tok, "How much does the Tern-3 buoy weigh?", "42 kg")
    ids = torch.tensor([scores.ids])  # the answer tokens, after the prompt: compare with one plain forward
    full, start = example_ids("How much does the Tern-3 buoy weigh?", "42 kg", tok)
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([full])).logits[0, start - 1:-1].float(), -1)
    assert np.allclose(scores.logprobs, lp.gather(-1, ids[0][:, None]).squeeze(-1).numpy(), atol=1e-4)
    _, sim = similarity_matrix(embedder, ["The buoy weighs 42 kg.", "The float has a mass of 42 kilograms.",
                                          "Economy class is required for short flights."])
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2
