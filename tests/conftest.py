"""Shared fixtures: tiny models built on the fly (nothing downloads), a tiny corpus, offline mode."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tiny_models import EMBED_TEXT, build_tiny_encoder, build_tiny_lm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny models on one torch thread: fastest for them, and several threads spin badly
    on a busy 2-core machine. Opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session", autouse=True)
def _hypothesis_in_tmp(tmp_path_factory) -> None:
    """Property tests keep their example database and caches in the session's temp folder (by default
    Hypothesis writes ``.hypothesis/`` in the current folder: the checkout)."""
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))


@pytest.fixture(autouse=True)
def _home_in_tmp(tmp_path, monkeypatch) -> None:
    """Every test's project folder (``WORKBENCH_HOME``, else the current folder: the checkout) is ``home`` in
    its temp folder unless the test points it elsewhere, so nothing a test builds lands in the checkout."""
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty project folder (``WORKBENCH_HOME``) inside the test's temp folder."""
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A tiny random causal LM folder (session-scoped; copy it before mutating)."""
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm") / "model")


@pytest.fixture(scope="session")
def app_lm_dir(tmp_path_factory) -> Path:
    """The tiny LM made to give visible replies that differ from question to question (the app, serve and
    MCP show them; session-scoped, read-only)."""
    return build_tiny_lm(tmp_path_factory.mktemp("app-lm") / "model", visible_replies=True)


@pytest.fixture
def tiny_lm_copy(tiny_lm_dir, tmp_path) -> Path:
    dst = tmp_path / "tiny-lm"
    shutil.copytree(tiny_lm_dir, dst)
    return dst


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    """A three-document corpus with a qa.jsonl (train and eval questions)."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "buoy.md").write_text(
        "# Tern-3 buoy\n\nThe Tern-3 buoy weighs 42 kg. It runs on a 9 Ah battery.\n\n"
        "## Maintenance\n\nReplace the anode every 18 months. Use silicone grease on the seals.\n",
        encoding="utf-8")
    (root / "sub" / "people.txt").write_text(
        "Ilse Varnholt leads Kestrelmark Instruments. The company was founded in 2011 in Orrvik.\n",
        encoding="utf-8")
    (root / "page.html").write_text(
        "<html><head><style>p{}</style><script>var x=1;</script></head><body><nav>Home | About</nav>"
        "<h1>Travel</h1><p>Economy class is required for flights under 6 hours.</p>"
        "<footer>(c) Kestrelmark</footer></body></html>", encoding="utf-8")
    rows = [
        {"id": "t1", "question": "How much does the Tern-3 weigh?", "answers": ["42 kg"], "split": "train",
         "doc": "buoy.md", "fact_id": "f1", "kind": "train"},
        {"id": "t2", "question": "What is the weight of a Tern-3 buoy?", "answers": ["42 kg"], "split": "train",
         "doc": "buoy.md", "fact_id": "f1", "kind": "train"},
        {"id": "e1", "question": "Tell me the mass of the Tern-3.", "answers": ["42 kg"], "split": "eval",
         "doc": "buoy.md", "fact_id": "f1", "kind": "paraphrase"},
        {"id": "e2", "question": "Who leads Kestrelmark Instruments?", "answers": ["Ilse Varnholt"],
         "split": "eval", "doc": "sub/people.txt", "fact_id": "f2", "kind": "unseen"},
        {"id": "e3", "question": "What is the Tern-9 top speed?", "answers": [], "answerable": False,
         "split": "eval", "fact_id": "u1", "kind": "unanswerable"},
    ]
    import json

    (root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


PT_DOCS = {
    "rio.txt": "O Reno nasce nos Alpes suíços e deságua no Mar do Norte, na Holanda. O rio percorre cerca de "
               "1.230 quilômetros. A maior cidade às suas margens é Colônia, com mais de um milhão de habitantes.",
    "imunidade.txt": "A inflamação é uma das primeiras respostas do sistema imunológico a uma infecção. Os "
                     "sintomas da inflamação são vermelhidão, inchaço, calor e dor. As prostaglandinas dilatam "
                     "os vasos sanguíneos e causam febre.",
    "farmacia.txt": "O farmacêutico orienta os pacientes sobre o uso correto dos medicamentos. Em muitos países, "
                    "a farmácia hospitalar prepara doses estéreis para quimioterapia.",
    "geologia.txt": "As rochas ígneas formam-se quando o magma esfria. As rochas sedimentares acumulam-se no fundo "
                    "dos mares. Charles Lyell publicou Principles of Geology em 1830.",
    "varsovia.txt": "Varsóvia é a capital da Polônia. A cidade foi quase totalmente destruída em 1944 e "
                    "reconstruída depois da guerra. A Universidade de Varsóvia foi fundada em 1816.",
    "vulcoes.txt": "Os vulcões expelem lava, cinzas e gases. A erupção do Vesúvio destruiu Pompeia no ano 79.",
}
PT_QUESTIONS = [  # questions in other inflections than the documents (plural vs singular, verb forms)
    ("Quais são os sintomas das inflamações?", ["vermelhidão, inchaço, calor e dor"], "imunidade.txt"),
    ("Onde deságuam as águas do rio Reno?", ["Mar do Norte"], "rio.txt"),
    ("Que substância dilata o vaso sanguíneo e provoca febres?", ["prostaglandinas"], "imunidade.txt"),
    ("Quem orienta o paciente sobre medicamentos?", ["farmacêutico"], "farmacia.txt"),
    ("Como se forma uma rocha ígnea?", ["quando o magma esfria"], "geologia.txt"),
    ("Quando foi fundada a universidade de Varsóvia?", ["1816"], "varsovia.txt"),
    ("Que erupções destruíram Pompeia?", ["Vesúvio"], "vulcoes.txt"),
    ("Quantos quilômetros o Reno percorre?", ["1.230 quilômetros"], "rio.txt"),
]


@pytest.fixture
def pt_corpus(tmp_path) -> Path:
    """A six-document Portuguese corpus whose eval questions use other inflections than the documents."""
    import json

    root = tmp_path / "corpus-pt"
    root.mkdir()
    for name, text in PT_DOCS.items():
        (root / name).write_text(text + "\n", encoding="utf-8")
    rows = [{"id": f"pt{i}", "question": q, "answers": a, "doc": d, "split": "eval"}
            for i, (q, a, d) in enumerate(PT_QUESTIONS)]
    (root / "qa.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                   encoding="utf-8")
    return root


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if not _cuda():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_st_dir(tmp_path_factory) -> Path:
    """A tiny random sentence-transformers folder (2-layer BERT, dim 32; session-scoped, read-only)."""
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-st") / "encoder")


@pytest.fixture(scope="session")
def tiny_embedder_dir(tmp_path_factory) -> Path:
    """The tiny encoder of the app's projects: 1-layer BERT, dim 32, normalised, its vocabulary made from the
    project corpus's sentences, so their words are whole tokens (session-scoped, read-only)."""
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-embedder") / "st", layers=1, normalize=True,
                              texts=EMBED_TEXT, vocab_size=200)
