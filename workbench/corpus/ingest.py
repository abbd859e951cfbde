"""The ingestion stage: a corpus directory becomes clean, deduplicated, sentence-aware chunks.

Documents are streamed one at a time (read, decoded, cleaned, deduplicated, chunked), so only the
chunks of the corpus stay in memory. Parsing lives in :mod:`workbench.corpus.cleaning`, sentence packing in
:mod:`workbench.corpus.chunking`, duplicate detection in :mod:`workbench.corpus.dedup`.
"""
from __future__ import annotations

import codecs
import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import time
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from workbench.core.artifacts import hash_file, human_size, make_manifest
from workbench.core.config import IngestConfig, to_dict
from workbench.core.errors import WorkbenchError
from workbench.core.language import AUTO, detect_language, language_mix, spacy_language
from workbench.core.paths import QA_FILE
from workbench.core.records import Chunk, write_jsonl
from workbench.corpus.chunking import chunk_document, get_splitter, load_token_counter
from workbench.corpus.cleaning import FORMATS, clean_document
from workbench.corpus.dedup import NearDuplicateIndex, minhash, text_hash

__all__ = ["IngestReport", "IngestResult", "chunks_manifest", "corpus_fingerprint", "decode_bytes",
           "ingest_corpus", "list_documents", "load_token_counter", "write_chunks"]

CHUNKS_FORMAT_VERSION = 1
_SHOWN = 8  # names listed per category in one-line messages and summaries


def _pdf_available() -> bool:
    return find_spec("pypdf") is not None


def _supported() -> str:
    return " ".join(s for s in FORMATS if s != ".pdf" or _pdf_available())


# --- finding documents ------------------------------------------------------------------------------

def _check_dir(corpus_dir: Path) -> Path:
    root = Path(corpus_dir).expanduser()
    if not root.exists():
        raise WorkbenchError(f"corpus folder {root} not found", "pass an existing directory of documents")
    if not root.is_dir():
        raise WorkbenchError(f"{root} is not a directory", "pass the folder that holds the documents")
    return root


def list_documents(corpus_dir: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The documents of a corpus per the corpus contract, and the files that are not documents.

    Documents are files under ``corpus_dir`` (recursively) with a supported extension; hidden files and
    folders are ignored, and ``qa.jsonl`` at the root is never a document. Linked folders are not followed,
    and a linked file is read only when its target lies inside the corpus folder (both are listed as skipped).

    Args:
        corpus_dir: the corpus folder.

    Returns:
        (documents sorted by path, skipped files as ``(relative path, reason)``).

    Raises:
        WorkbenchError: the folder does not exist or is not a directory.
    """
    root = _check_dir(corpus_dir)
    real_root = root.resolve()
    pdf = _pdf_available()
    docs: list[Path] = []
    skipped: list[tuple[str, str]] = []
    def unreadable_folder(err: OSError) -> None:
        where = Path(err.filename or root)
        rel = where.relative_to(root).as_posix() if where != root and where.is_relative_to(root) else str(where)
        skipped.append((rel + "/", f"folder cannot be read ({err.strerror or type(err).__name__})"))

    for folder, dirs, files in os.walk(root, onerror=unreadable_folder):
        for d in dirs:  # os.walk does not follow linked folders (so a link loop cannot trap it): say so
            if not d.startswith(".") and (Path(folder) / d).is_symlink():
                skipped.append(((Path(folder) / d).relative_to(root).as_posix(), "linked folder not followed"))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if name.startswith(".") or rel == QA_FILE:
                continue
            suffix = path.suffix.lower()
            problem = unreadable_reason(path)
            if not problem and path.is_symlink() and not path.resolve().is_relative_to(real_root):
                problem = "linked file outside the corpus folder not followed"
            if problem:
                skipped.append((rel, problem))
            elif suffix not in FORMATS:
                skipped.append((rel, f"unsupported extension {suffix!r}" if suffix else "no extension"))
            elif suffix == ".pdf" and not pdf:
                skipped.append((rel, "PDF support needs pypdf (pip install pypdf)"))
            else:
                docs.append(path)
    return sorted(docs), sorted(skipped)


def unreadable_reason(path: Path) -> str | None:
    """Why a file cannot be read as a document (a dangling or looping link, not a regular file, no read
    permission), or None when it can."""
    try:
        st = path.stat()  # follows links
    except FileNotFoundError:
        return "dangling link (its target does not exist)" if path.is_symlink() else "vanished while listing"
    except OSError as e:
        return "link loop" if e.errno == errno.ELOOP else f"cannot be read ({e.strerror or type(e).__name__})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "no permission to read it"
    return None


def _fingerprint(entries: list[tuple[str, str]]) -> str:
    # same construction as artifacts.hash_tree: relative path + content hash per file, in path order
    h = hashlib.sha256()
    for rel, file_hash in entries:
        h.update(rel.encode())
        h.update(file_hash.encode())
    return h.hexdigest()[:16]


def corpus_fingerprint(corpus_dir: Path) -> str:
    """Content hash of a corpus's documents (names and bytes; ``qa.jsonl`` and non-documents excluded).

    An index or adapter built from a corpus stores it; a different value means the corpus changed.
    """

    root = _check_dir(corpus_dir)
    docs, _ = list_documents(root)
    entries = []
    for p in docs:
        try:
            entries.append((p.relative_to(root).as_posix(), hash_file(p)))
        except OSError as e:  # changed between listing and reading: it counts as unreadable
            entries.append((p.relative_to(root).as_posix(), f"unreadable:{type(e).__name__}"))
    return _fingerprint(entries)


# --- reading one document -----------------------------------------------------------------------------

_BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]


def decode_bytes(data: bytes) -> tuple[str | None, str | None]:
    """Decode a document's bytes.

    UTF-8 (with or without BOM) and BOM-marked UTF-16/32 decode silently. Text that is UTF-8 apart from
    some invalid bytes is decoded with U+FFFD replacements and a warning; text with no valid UTF-8
    beyond ASCII is decoded in the encoding charset-normalizer detects, with a warning.

    Args:
        data: file contents.

    Returns:
        (text, warning): text None when the bytes are binary or in no detectable encoding; warning None
        when nothing needs saying.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), None
            except UnicodeDecodeError:
                break
    if b"\x00" in data[:8192]:
        return None, None
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    valid_non_ascii = len(text) - len(text.encode("ascii", "ignore")) - bad
    if valid_non_ascii > 0:  # genuine UTF-8 with some corrupt bytes: a legacy guess would garble it
        return text, f"{bad} invalid UTF-8 byte sequence(s) replaced with U+FFFD"
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    # on a tie (short texts often fit several code pages equally well) take cp1252, the most common one
    best = next((m for m in matches if m.encoding == "cp1252" and best is not None and m.chaos <= best.chaos
                 and m.coherence >= best.coherence), best)
    if best is not None and best.encoding:
        return str(best), f"not valid UTF-8; decoded as {best.encoding} (detected)"
    if bad <= 0.01 * len(text):
        return text, f"{bad} invalid UTF-8 byte sequence(s) replaced with U+FFFD"
    return None, None


_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f]")


def _looks_binary(text: str) -> bool:
    sample = text[:65536]
    return len(_CONTROL.findall(sample)) > 0.05 * max(1, len(sample))


def _read(path: Path, kind: str) -> tuple[str | None, str | None, str | None, bytes | None]:
    """Returns (text, skip reason, warning, raw bytes)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"could not read ({type(e).__name__})", None, None
    if not data.strip():
        return None, "empty file", None, data
    if kind == "pdf":
        try:
            from pypdf import PdfReader

            text = "\n\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
        except Exception as e:  # pypdf raises many types for damaged/encrypted files
            return None, f"unreadable PDF ({type(e).__name__})", None, data
        return text, None, None, data
    text, warning = decode_bytes(data)
    if text is None or _looks_binary(text):
        return None, "binary content" if text is None or b"\x00" in data[:8192] else "unreadable", None, data
    return text, None, warning, data


# --- the stage ----------------------------------------------------------------------------------------

@dataclass
class IngestReport:
    """What ingestion did: read, skipped, dropped and flagged documents, and the chunk totals."""

    corpus: str
    tokenizer: str = ""
    documents_read: int = 0
    """Documents chunked (exact duplicates and skipped files excluded)."""
    bytes_read: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(relative path, reason) of files that are not documents or could not be read."""
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    """(dropped document, the earlier document with the same cleaned text)."""
    near_duplicates: list[tuple[str, str, float]] = field(default_factory=list)
    """(flagged document, the earlier document it nearly repeats, estimated Jaccard); both are kept."""
    warnings: list[str] = field(default_factory=list)
    n_chunks: int = 0
    n_tokens: int = 0
    seconds: float = 0.0
    workers: int = 1
    """Processes that read and chunked the documents."""
    language: str = ""
    """The corpus language: ``ingest.language`` when set, else the detected language holding most text."""
    languages: dict[str, float] = field(default_factory=dict)
    """Detected language -> share of the corpus text, largest first (empty when the language was set)."""

    def summary(self) -> str:
        """A few human-readable lines: counts, reasons, timing."""
        # throughput only means something once loading spaCy and the tokenizer no longer dominates
        rate = f", {self.bytes_read / 1e6 / self.seconds:.2f} MB/s" if self.bytes_read >= 1e6 else ""
        procs = f", {self.workers} processes" if self.workers > 1 else ""
        lines = [f"read {self.documents_read} document(s) ({human_size(self.bytes_read)}) from {self.corpus}: "
                 f"{self.n_chunks} chunks, {self.n_tokens:,} tokens ({self.tokenizer}) "
                 f"in {self.seconds:.1f} s{rate}{procs}"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s): "
                         + _listing(f"{p} ({why})" for p, why in self.skipped))
        if self.duplicates:
            lines.append(f"dropped {len(self.duplicates)} exact duplicate(s): "
                         + _listing(f"{d} (same text as {of})" for d, of in self.duplicates))
        if self.near_duplicates:
            lines.append(f"flagged {len(self.near_duplicates)} near-duplicate(s), kept: "
                         + _listing(f"{d} (~{of}, Jaccard {j:.2f})" for d, of, j in self.near_duplicates))
        if self.languages:
            shares = ", ".join(f"{lang} {share:.0%}" for lang, share in self.languages.items())
            lines.append(f"language: {self.language} (detected; share of the text: {shares})")
        for w in self.warnings[:_SHOWN]:
            lines.append(f"warning: {w}")
        if len(self.warnings) > _SHOWN:
            lines.append(f"warning: ... and {len(self.warnings) - _SHOWN} more warnings")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)




def _listing(items) -> str:
    items = list(items)
    more = f", ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return "; ".join(items[:_SHOWN]) + more


@dataclass
class IngestResult:
    """Chunks of a corpus, the report of how they were made, and the corpus fingerprint."""

    chunks: list[Chunk]
    report: IngestReport
    fingerprint: str


@dataclass
class _DocOutcome:
    """What reading and chunking one document gave (dedup decisions are the caller's, in order)."""

    rel: str
    n_bytes: int = 0
    file_hash: str | None = None
    warning: str | None = None
    skip: str | None = None
    """Why the file gave no text (None when it did)."""
    unreadable: bool = False
    """The file could not be read or decoded (as opposed to holding no text after cleaning)."""
    text_hash: str = ""
    sketch: Any = None
    language: str | None = None
    """The detected language (None when the language was set, or the text too short to tell)."""
    n_chars: int = 0
    chunks: list[Chunk] = field(default_factory=list)


def _ingest_one(path: Path, rel: str, cfg: IngestConfig) -> _DocOutcome:
    """Read, decode, clean, hash, sketch and chunk one document (runs in a worker process or inline)."""
    kind = FORMATS[path.suffix.lower()]
    text, why, warning, data = _read(path, kind)
    out = _DocOutcome(rel, warning=warning)
    if data is not None:
        out.n_bytes, out.file_hash = len(data), hashlib.sha256(data).hexdigest()[:16]
    del data
    if text is None:
        out.skip, out.unreadable = why or "unreadable", True
        return out
    doc = clean_document(text, kind)
    del text
    if not doc.text:
        out.skip = "no text after cleaning"
        return out
    out.text_hash, out.sketch, out.n_chars = text_hash(doc.text), minhash(doc.text), len(doc.text)
    language = cfg.language
    if language == AUTO:
        out.language = detect_language(doc.text)[0]
        language = spacy_language(out.language) if out.language else "xx"
    counter, splitter = load_token_counter(cfg.tokenizer), get_splitter(language)
    out.chunks = list(chunk_document(doc, rel, cfg.chunk_tokens, cfg.overlap_tokens, counter, splitter))
    return out


_SECONDARY = re.compile(r"(^|[/_.\- ])(archive[ds]?|old|drafts?|backups?|bak|deprecated|obsolete|superseded|"
                        r"copy)($|[/_.\- ])", re.I)


def _looks_secondary(rel: str) -> bool:
    """Whether a path names an archived, draft, backup or copied document (flagged in preference to
    its current near-duplicate)."""
    return bool(_SECONDARY.search(rel))


def _n_workers(cfg: IngestConfig, total_bytes: int, n_docs: int) -> int:
    if cfg.workers:
        return min(cfg.workers, n_docs)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    # below ~16 MB starting processes (each imports spaCy) costs more than it saves
    return min(cores, 4, n_docs) if total_bytes >= 16e6 else 1


def _process_context():
    """Worker processes come from a fork server that has imported spaCy and the tokenizers once (it is
    single-threaded, so forking it is safe, unlike forking a parent that may run tokenizer or torch
    threads); where there is no fork server (macOS, Windows) they are spawned."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["workbench.corpus.ingest", "spacy", "tokenizers", "numpy", "bs4"])
    return ctx


def ingest_corpus(corpus_dir: Path, cfg: IngestConfig | None = None, progress: bool = True) -> IngestResult:
    """Read, clean, deduplicate and chunk every document of a corpus.

    Documents are processed one at a time (in ``cfg.workers`` processes on large corpora); only their
    chunks are kept. The first of several documents with the same cleaned text is kept and the others
    dropped; a document whose word shingles nearly repeat an earlier one's is kept and flagged
    (``meta["near_duplicate_of"]`` on its chunks) -- of a pair, the one whose path says archive, draft,
    old, backup or copy is flagged, else the later one in path order.

    Args:
        corpus_dir: the corpus folder (see the corpus contract in design.md).
        cfg: chunking settings (token budget, overlap, language, tokenizer, near-duplicate threshold).
        progress: show a progress bar (on stderr) for corpora over 1 MB.

    Returns:
        IngestResult with chunks in document order; chunk ids are ``"<doc>#<n>"``.

    Raises:
        WorkbenchError: the folder is missing, holds no documents, or none of them could be read; the
            language or tokenizer cannot be loaded.
    """
    from tqdm.auto import tqdm

    cfg = cfg or IngestConfig()
    t0 = time.perf_counter()
    root = _check_dir(corpus_dir)
    docs, skipped = list_documents(root)
    if not docs:
        raise _no_documents(root, skipped)
    counter = load_token_counter(cfg.tokenizer)  # load here first: a bad name fails before any work
    if cfg.language != AUTO:
        get_splitter(cfg.language)
    report = IngestReport(corpus=str(corpus_dir), tokenizer=counter.name, skipped=list(skipped))
    chunks: list[Chunk] = []
    file_hashes: list[tuple[str, str]] = []
    seen: dict[str, str] = {}  # cleaned-text hash -> first document with it
    near = NearDuplicateIndex(cfg.near_duplicate_threshold)
    unreadable: list[tuple[str, str]] = []
    spans: dict[str, tuple[int, int]] = {}  # document -> its range in chunks
    detected: list[tuple[str | None, int]] = []  # (language, characters) per kept document
    total = sum(p.stat().st_size for p in docs)
    rels = [p.relative_to(root).as_posix() for p in docs]
    workers = report.workers = _n_workers(cfg, total, len(docs))
    with contextlib.ExitStack() as stack:
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=_process_context()))
            outcomes = pool.map(_ingest_one, docs, rels, [cfg] * len(docs))  # results in document order
        else:
            outcomes = map(_ingest_one, docs, rels, [cfg] * len(docs))
        bar = stack.enter_context(tqdm(total=total, unit="B", unit_scale=True, desc="ingest", leave=False,
                                       disable=not progress or total < 1e6))
        for out in outcomes:
            bar.update(out.n_bytes)
            if out.file_hash is not None:
                file_hashes.append((out.rel, out.file_hash))
                report.bytes_read += out.n_bytes
            if out.warning:
                report.warnings.append(f"{out.rel}: {out.warning}")
            if out.skip:
                (unreadable if out.unreadable else report.skipped).append((out.rel, out.skip))
                continue
            if out.text_hash in seen:
                report.duplicates.append((out.rel, seen[out.text_hash]))
                continue
            seen[out.text_hash] = out.rel
            match = near.add(out.rel, out.sketch)
            spans[out.rel] = (len(chunks), len(chunks) + len(out.chunks))
            chunks.extend(out.chunks)
            if match:
                flagged, kept = out.rel, match[0]
                if _looks_secondary(kept) and not _looks_secondary(flagged):
                    flagged, kept = kept, flagged  # flag the archived / draft copy, not the current one
                report.near_duplicates.append((flagged, kept, round(match[1], 3)))
                for c in chunks[slice(*spans[flagged])]:
                    c.meta["near_duplicate_of"] = kept
            report.n_tokens += sum(c.n_tokens for c in out.chunks)
            report.documents_read += 1
            detected.append((out.language, out.n_chars))
            bar.set_postfix(chunks=len(chunks), refresh=False)
    report.skipped = sorted(report.skipped + unreadable)
    if report.documents_read == 0:
        if unreadable:
            raise WorkbenchError(
                f"none of the {len(docs)} document(s) in {root} could be read: "
                + _listing(f"{p} ({why})" for p, why in unreadable),
                "documents must be text files (UTF-8 or a detectable encoding); remove or convert the others")
        raise WorkbenchError(f"no text in the {len(docs)} document(s) in {root} (all empty after cleaning)",
                             "add documents with some text")
    report.n_chunks = len(chunks)
    _set_language(report, cfg, detected)
    report.seconds = time.perf_counter() - t0
    return IngestResult(chunks=chunks, report=report, fingerprint=_fingerprint(file_hashes))


def _set_language(report: IngestReport, cfg: IngestConfig, detected: list[tuple[str | None, int]]) -> None:
    """The corpus language into the report: the configured one, else the detected mix (a mixed-language
    corpus gets a warning: BM25, answer cleaning and synthesis use the main language for every document)."""
    if cfg.language != AUTO:
        report.language = cfg.language
        return
    mix = language_mix(detected)
    report.language, report.languages = mix.language, {k: round(v, 4) for k, v in mix.shares.items()}
    if mix.mixed:
        report.warnings.append(f"mixed-language corpus: {mix.summary()}; retrieval and synthesis use "
                               f"{mix.language} (set ingest.language to choose)")


def _no_documents(root: Path, skipped: list[tuple[str, str]]) -> WorkbenchError:
    hint = f"add documents with one of the extensions {_supported()} (searched recursively)"
    if not skipped:
        return WorkbenchError(f"no documents in {root}: the folder has no files (hidden files and {QA_FILE} "
                              "do not count)", hint)
    return WorkbenchError(f"no documents in {root}: {len(skipped)} file(s) skipped: "
                          + _listing(f"{p} ({why})" for p, why in skipped), hint)


def chunks_manifest_path(path: Path) -> Path:
    """The manifest beside a chunks file: ``x.jsonl`` -> ``x.manifest.json``."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".manifest.json")


def check_chunks_target(path: Path) -> None:
    """Refuse to write chunks over a folder, or over a file that ``workbench ingest`` did not write.

    Raises:
        WorkbenchError: ``path`` is a folder, or an existing file without a chunks manifest beside it.
    """
    path = Path(path)
    if path.is_dir():
        raise WorkbenchError(f"--out {path} is a directory", "pass a file path such as chunks.jsonl")
    manifest = chunks_manifest_path(path)
    ours = manifest.name != path.name and manifest.is_file() and _is_chunks_manifest(manifest)
    if path.exists() and not ours:
        raise WorkbenchError(f"{path} exists and was not written by `workbench ingest` (no chunks manifest beside "
                             "it); refusing to overwrite it", "pass a new file name to --out")
    if (manifest.exists() or manifest.is_symlink()) and not ours:
        raise WorkbenchError(f"{manifest} exists and is not a chunks manifest written by `workbench ingest`; "
                             "refusing to overwrite it", "pass a new file name to --out")


def _is_chunks_manifest(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind") == "chunks"
    except (OSError, ValueError, AttributeError):
        return False


def write_chunks(chunks: list[Chunk], path: Path) -> int:
    """Write chunks as JSON Lines, atomically (a failed write leaves any previous file untouched).

    Returns:
        The number of chunks written.
    """
    path = Path(path)
    if path.is_dir():
        raise WorkbenchError(f"{path} is a directory", "pass a file path such as chunks.jsonl to --out")
    return write_jsonl(path, (c.to_json() for c in chunks))


def chunks_manifest(result: IngestResult, cfg: IngestConfig, corpus_dir: Path) -> dict[str, Any]:
    """The manifest written next to a chunks file: corpus, fingerprint, resolved config, report."""

    return make_manifest("chunks", CHUNKS_FORMAT_VERSION, corpus=str(Path(corpus_dir).resolve()),
                         corpus_fingerprint=result.fingerprint, config=to_dict(cfg),
                         seconds=round(result.report.seconds, 3), report=result.report.to_json())
