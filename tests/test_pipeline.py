"""`workbench run` end to end on tiny models: every stage runs, a second run reuses the index and the
adapter (no training), a corpus with only eval questions gets synthesized training data, and
`workbench eval` builds a missing index itself."""
from __future__ import annotations

import json
from pathlib import Path


from workbench.core.artifacts import hash_tree
from workbench.core.config import (
    EvalConfig,
    FinetuneConfig,
    GenerateConfig,
    IndexConfig,
    IngestConfig,
    ModelConfig,
    RunConfig,
)

SYSTEMS = ["base", "rag", "ft", "ft_rag"]


def tiny_cfg(lm: Path, encoder: Path, systems=SYSTEMS) -> RunConfig:
    return RunConfig(
        ingest=IngestConfig(tokenizer="whitespace", chunk_tokens=48, overlap_tokens=8),
        index=IndexConfig(embedder=str(encoder), device="cpu"),
        model=ModelConfig(base_model=str(lm), device="cpu"),
        generate=GenerateConfig(max_new_tokens=4, batch_size=8),
        finetune=FinetuneConfig(max_steps=2, batch_size=2, save_steps=100, lora_r=4, lora_alpha=8, paraphrases=1,
                                max_seq_len=128),
        eval=EvalConfig(systems=list(systems), bootstrap=50))


def test_second_run_reuses_index_and_adapter(tiny_corpus, tiny_lm_dir, tiny_st_dir, home, capsys):
    from workbench.cli.pipeline import run

    cfg = tiny_cfg(tiny_lm_dir, tiny_st_dir)
    first = run(tiny_corpus, cfg, out=home / "runs" / "first", progress=False)
    err = capsys.readouterr().err
    for stage in ("[1/6] ingest + index", "[2/6] training data", "[3/6] fine-tune", "[4/6] evaluate",
                  "[5/6] side effects", "[6/6] report"):
        assert stage in err
    assert "the gold train split of qa.jsonl (2 questions)" in err
    assert "adapter corpus-sft (sft): missing; training" in err
    s1 = json.loads((first / "summary.json").read_text())
    assert list(s1["systems"]) == SYSTEMS and s1["n_questions"] == 3
    assert s1["cost"]["finetune_reused"] == {"corpus-sft": False} and s1["cost"]["index_reused"] is False
    assert s1["cost"]["index_build_s"] > 0 and s1["cost"]["finetune_s"] > 0 and s1["cost"]["finetune_tokens"] > 0
    # every stage before the one that writes the run folder (written once, so the report stage times itself out)
    assert set(s1["cost"]["stages_s"]) == {"ingest + index", "training data", "fine-tune", "evaluate", "side effects"}
    probe = s1["side_effects"]
    assert set(probe["adapters"]) == {"ft"} and probe["n_questions"] > 0 and probe["base"]["perplexity"] > 1
    assert "## Side effects on general ability" in (first / "report.md").read_text()
    assert s1["systems"]["ft"]["weights"] == "corpus-sft" and s1["systems"]["rag"]["retrieval"] is True
    assert s1["retrieval"]["n"] == 2 and 0 <= s1["retrieval"]["answer_recall@5"] <= 1
    rows = [json.loads(line) for line in (first / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 4
    assert all(r["retrieved"] for r in rows if r["system"] in ("rag", "ft_rag"))
    assert not any(r["retrieved"] for r in rows if r["system"] in ("base", "ft"))
    assert "F1 [95% CI]" in err and "paraphrase (" in err and "run folder:" in err  # the report's tables

    adapter, index = home / "adapters" / "corpus-sft", home / "indices" / "corpus"
    before = (hash_tree(adapter), hash_tree(index))
    second = run(tiny_corpus, cfg, out=home / "runs" / "second", progress=False)
    err = capsys.readouterr().err
    assert "adapter corpus-sft (sft): current" in err and "training" not in err.split("fine-tune")[1].split("evaluate")[0]
    assert "index corpus: reused (current)" in err
    assert (hash_tree(adapter), hash_tree(index)) == before   # nothing was rewritten
    s2 = json.loads((second / "summary.json").read_text())
    assert s2["cost"]["finetune_reused"] == {"corpus-sft": True} and s2["cost"]["index_reused"] is True
    # the cost of building is still reported (from the manifests), not the ~0 s of reusing
    assert s2["cost"]["finetune_s"] == s1["cost"]["finetune_s"]
    assert s2["cost"]["stages_s"]["fine-tune"] < s1["cost"]["stages_s"]["fine-tune"]
    # greedy decoding on the same artifacts: the same answers
    preds = lambda folder: [json.loads(x)["prediction"] for x in (folder / "results.jsonl").read_text().splitlines()]  # noqa: E731
    assert preds(first) == preds(second)


def test_eval_only_questions_get_synthesized_training_data(tiny_corpus, tiny_lm_dir, tiny_st_dir, home, capsys):
    from workbench.cli.pipeline import run

    qa = tiny_corpus / "qa.jsonl"
    rows = [json.loads(line) for line in qa.read_text().splitlines()]
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows if r["split"] == "eval"))
    folder = run(tiny_corpus, tiny_cfg(tiny_lm_dir, tiny_st_dir, ["base", "ft"]), out=home / "runs" / "r",
                 progress=False)
    err = capsys.readouterr().err
    assert "synthesized from the corpus chunks (qa.jsonl has no train split)" in err
    assert "ingest + index" not in err  # no retrieval system: no index needed
    manifest = json.loads((home / "adapters" / "corpus-sft" / "manifest.json").read_text())
    assert manifest["data_source"] == "synthesized"
    trained = (home / "adapters" / "corpus-sft" / "train_data.jsonl").read_text().lower()
    for r in rows:
        if r["split"] == "eval":
            assert r["question"].lower() not in trained
    s = json.loads((folder / "summary.json").read_text())
    assert s["cost"]["adapters"]["corpus-sft"]["data_source"] == "synthesized"


def test_eval_builds_a_missing_index(tiny_corpus, tiny_lm_dir, tiny_st_dir, home):
    from workbench.evaluation.evaluate import evaluate

    assert not (home / "indices").exists()
    out = evaluate(tiny_corpus, tiny_cfg(tiny_lm_dir, tiny_st_dir, ["rag"]), index="mine", out=home / "r",
                   progress=False)
    assert (home / "indices" / "mine" / "manifest.json").exists()
    s = json.loads((out / "summary.json").read_text())
    assert s["index"]["name"] == "mine" and s["index"]["fingerprint"] and s["cost"]["index_reused"] is False
    assert "context_recall" in s["systems"]["rag"]["ragas"] or "context_recall" in s["systems"]["rag"]["ragas_skipped"]
