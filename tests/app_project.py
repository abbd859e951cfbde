"""Test projects for the app tests: a constructed run folder, and (with the model modules) tiny artifacts."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

SYSTEMS = ("base", "rag", "ft", "ft_rag")

# (id, question, kind, answerable, gold, {system: prediction})
QUESTIONS = [
    ("q1", "How much does the Tern-3 weigh?", "paraphrase", True, ["42 kg"],
     {"base": "About 10 kg.", "rag": "42 kg [1]", "ft": "42 kg", "ft_rag": "42 kg"}),
    ("q2", "Who leads Kestrelmark Instruments?", "unseen", True, ["Ilse Varnholt"],
     {"base": "John Smith", "rag": "Ilse Varnholt [1]", "ft": "Mara Olsen", "ft_rag": "Ilse Varnholt"}),
    ("q3", "What is the battery capacity of the Tern-3?", "paraphrase", True, ["9 Ah"],
     {"base": "5 Ah", "rag": "12 Ah", "ft": "9 Ah", "ft_rag": "9 Ah"}),
    ("q4", "What is the top speed of the Tern-9?", "unanswerable", False, [],
     {"base": "30 knots", "rag": "I don't know", "ft": "25 knots", "ft_rag": "I don't know"}),
    ("q5", "<script>alert('x')</script> Which <b>city</b> hosts the head office?", "unseen", True, ["Orrvik"],
     {"base": "Oslo", "rag": "Orrvik", "ft": "Oslo", "ft_rag": "Orrvik"}),
]

PASSAGES = {
    "q1": ("products/tern-3.md", "Tern-3 buoy", "The Tern-3 buoy weighs 42 kg. <img src=x onerror=alert(1)>"),
    "q2": ("company/people.md", "Leadership", "Ilse Varnholt leads Kestrelmark Instruments."),
    "q3": ("products/tern-3.md", "Power", "It runs on a 9 Ah battery."),
    "q4": ("products/tern-3.md", "Tern-3 buoy", "The Tern-3 buoy weighs 42 kg."),
    "q5": ("company/offices.html", "Offices", "<script>document.title='pwned'</script>The head office is in Orrvik."),
}


def _score(pred: str, gold: list[str], answerable: bool) -> dict:
    from_gold = any(g.lower() in pred.lower() for g in gold)
    exact = any(g.lower() == pred.lower().strip() for g in gold)
    abstained = "don't know" in pred.lower()
    if not answerable:
        return {"em": None, "f1": None, "contains": None, "rouge_l": None, "abstained": abstained}
    f1 = 1.0 if exact else (0.67 if from_gold else 0.0)
    return {"em": float(exact), "f1": f1, "contains": float(from_gold), "rouge_l": f1, "abstained": abstained}


def png_bytes(width: int = 8, height: int = 6, rgb: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    """A valid solid-colour PNG (no imaging library needed)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    raw = zlib.compress(row * height)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def write_run(root: Path, name: str = "demo-20250101-120000") -> Path:
    """A run folder per the design.md contract: summary.json, results.jsonl, report.md, plots/*.png."""
    run = root / "runs" / name
    (run / "plots").mkdir(parents=True)
    rows = []
    for qid, question, kind, answerable, gold, preds in QUESTIONS:
        doc, heading, text = PASSAGES[qid]
        for system in SYSTEMS:
            retrieved = ([{"id": f"{doc}#0", "doc": doc, "heading": heading, "score": 0.0325, "rank": 1,
                           "text": text}] if "rag" in system else [])
            rows.append({"id": qid, "system": system, "question": question, "kind": kind, "answerable": answerable,
                         "gold": gold, "doc": doc if answerable else None, "prediction": preds[system],
                         **_score(preds[system], gold, answerable), "retrieved": retrieved, "citations": [],
                         "latency_s": 0.2, "n_new_tokens": 4, "ragas": {}})
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    systems = {}
    for s in SYSTEMS:
        mine = [r for r in rows if r["system"] == s]
        ans = [r for r in mine if r["answerable"]]
        una = [r for r in mine if not r["answerable"]]
        f1 = sum(r["f1"] for r in ans) / len(ans)
        systems[s] = {
            "f1": round(f1, 4), "em": sum(r["em"] for r in ans) / len(ans),
            "contains": sum(r["contains"] for r in ans) / len(ans),
            "ci95": {"f1": [round(max(0.0, f1 - 0.2), 4), round(min(1.0, f1 + 0.2), 4)], "em": [0.0, 1.0],
                     "contains": [0.0, 1.0], "abstain_unanswerable": [0.0, 1.0]},
            "abstain_unanswerable": sum(r["abstained"] for r in una) / len(una),
            "latency_p50_s": 0.2, "latency_p95_s": 0.3, "tokens_per_s": 20.0, "ragas": {},
            "by_kind": {"paraphrase": {"f1": 0.5, "n": 2}, "unseen": {"f1": 0.5, "n": 2},
                        "unanswerable": {"f1": None, "abstain": 1.0 if "rag" in s else 0.0, "n": 1}},
            "retrieval": "rag" in s, "weights": "demo-sft" if s.startswith("ft") else "SmolLM2-135M-Instruct",
        }
    summary = {"corpus": str(root / "corpora" / "demo"), "qa": str(root / "corpora" / "demo" / "qa.jsonl"),
               "n_questions": len(QUESTIONS), "created": "2025-01-01T12:00:00+00:00", "config": {},
               "systems": systems,
               "retrieval": {"doc_recall@1": 0.8, "doc_recall@5": 1.0, "answer_recall@5": 1.0, "mrr": 0.9},
               "cost": {"index_build_s": 3.0, "finetune_s": 120.0, "finetune_tokens": 5000, "peak_rss_mb": 900.0},
               "pairwise": {"rag_vs_ft": {"delta_f1": 0.1, "p_value": 0.5}}}
    (run / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (run / "report.md").write_text(
        "# Evaluation: demo\n\n5 eval questions.\n\n## Verdict\n\n"
        "- **rag** wins on unseen facts (F1 0.89 vs 0.44 for ft).\n- ft and rag tie on paraphrases "
        "(not significant, p = 0.500).\n\n## Systems\n\n| system | f1 |\n|---|---|\n| rag | 0.89 |\n",
        encoding="utf-8")
    (run / "plots" / "metrics.png").write_bytes(png_bytes())
    (run / "plots" / "by_kind.png").write_bytes(png_bytes(rgb=(200, 80, 40)))
    return run


def write_corpus(root: Path) -> Path:
    """A small corpus under ``root/corpora/tiny`` (documents and qa.jsonl)."""
    corpus = root / "corpora" / "tiny"
    corpus.mkdir(parents=True)
    (corpus / "buoy.md").write_text("# Tern-3 buoy\n\nThe Tern-3 buoy weighs 42 kg. It runs on a 9 Ah battery.\n",
                                    encoding="utf-8")
    (corpus / "people.txt").write_text("Ilse Varnholt leads Kestrelmark Instruments in Orrvik.\n", encoding="utf-8")
    (corpus / "qa.jsonl").write_text(json.dumps({"id": "e1", "question": "What does the Tern-3 weigh?",
                                                 "answers": ["42 kg"]}) + "\n", encoding="utf-8")
    return corpus


# --- tiny artifacts (real code paths: build_index, load_index, Retriever, PEFT adapter) -----------
# over the tiny models of ``tiny_models`` (the conftest fixtures ``tiny_lm_dir``, ``app_lm_dir``,
# ``tiny_embedder_dir``)


def build_tiny_index(root: Path, corpus: Path, embedder_dir: Path) -> Path:
    """``root/indices/<corpus name>``: one chunk per paragraph of each document (raw text, so HTML inside a
    document stays in the passage), written by the real ``build_from_chunks`` with the tiny embedder."""
    from workbench.core.config import IndexConfig
    from workbench.core.records import Chunk
    from workbench.retrieval.index import build_from_chunks

    chunks = []
    for doc in sorted(p for p in corpus.rglob("*") if p.is_file() and p.name != "qa.jsonl"):
        rel, heading, pos = doc.relative_to(corpus).as_posix(), "", 0
        text = doc.read_text(encoding="utf-8")
        for para in text.split("\n\n"):
            start = text.index(para, pos)
            pos = start + len(para)
            if para.startswith("#"):
                heading = para.lstrip("# ").strip()
            elif para.strip():
                chunks.append(Chunk(f"{rel}#{len(chunks)}", para.strip(), rel, (start, pos), heading,
                                    len(para.split())))
    res = build_from_chunks(chunks, root / "indices" / corpus.name,
                            IndexConfig(embedder=str(embedder_dir), kind="flat", device="cpu"),
                            corpus=corpus, progress=False)
    return Path(res.path)


def build_tiny_adapter(root: Path, base_dir: Path, corpus: Path, name: str = "tiny-sft") -> Path:
    """A LoRA adapter on the tiny LM, written as ``workbench finetune`` does (PEFT folder + manifest)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.answering.models import model_fingerprint
    from workbench.core.artifacts import make_manifest, write_json

    out = root / "adapters" / name
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(1)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # non-zero B so the adapter really changes the outputs
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    peft.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    write_json(out / "manifest.json", make_manifest(
        "adapter", 1, name=name, mode="sft", base_model=str(base_dir),
        base_model_hash=model_fingerprint(str(base_dir)), corpus=str(corpus), data_source="gold",
        tokens_seen=100, seconds=1.0))
    return out


def build_tiny_project(root: Path, base_dir: Path, embedder_dir: Path) -> Path:
    """A project with a corpus (one document holding HTML), its index, an adapter, and a run."""
    corpus = write_corpus(root)
    (corpus / "seals.md").write_text(
        "# Seals\n\nGrease the seals with <b>silicone</b> grease <script>window.__pwned = 1</script> "
        "every 18 months.\n", encoding="utf-8")
    build_tiny_index(root, corpus, embedder_dir)
    build_tiny_adapter(root, base_dir, corpus)
    write_run(root)
    return root
