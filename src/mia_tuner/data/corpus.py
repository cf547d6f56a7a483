"""Passages of natural-language text for controlled-membership sets.

The default corpus needs no download and copies nothing into the repository: it is the
documentation that ships with every Python installation -- the language-reference help topics
of ``pydoc_data.topics`` plus the docstrings of standard-library modules, read from their
source files with ``ast`` (nothing is imported, so no module side effects). Code lines, doctest
prompts, tables and reStructuredText markup are removed; each document is cut into
non-overlapping passages of exactly ``n_words`` words. The passages depend on the Python
version (CPython 3.11.7: 1552 passages of 64 words), and are deterministic for a given one.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import sys
import sysconfig
from pathlib import Path

from mia_tuner.data.loading import read_text_file
from mia_tuner.errors import DataError

_ROLE = re.compile(r":[\w:.+-]+:`~?([^`]*)`")  # :func:`name` -> name
_LITERAL = re.compile(r"``([^`]*)``")  # ``code`` -> code
_BACKTICKS = re.compile(r"`([^`]*)`_?")  # `text` / `link`_ -> text
_EMPHASIS = re.compile(r"(?<![\w*])\*{1,2}([^*\s][^*]*?)\*{1,2}(?![\w*])")  # *x* / **x** -> x
_DIRECTIVE = re.compile(r"^\s*\.\.\s")  # .. note:: / .. versionadded::
_FIELD = re.compile(r"^:(param|type|returns?|rtype|raises?)\b[^:]*:\s*")
_SIGNATURE = re.compile(r"^[\w.]+\(.*\)(\s*->.*)?$")  # object.__add__(self, other)
_LIST_ITEM = re.compile(r"^(\*|-|\d+\.|\(\d+\))\s+")
_UNDERLINE = re.compile(r"^\s*([*=\-~^#+])\1{2,}\s*$")
_CODE_HINT = re.compile(
    r"(::=|>>>|^\.\.\.\s|[{};]\s*$|\s[-+*/%]?=\s|\s#\s|^\s*(def|class|import|from|return|if|for|while)\b.*[:(=])"
)

# Standard-library modules whose docstrings are skipped: demos and test scaffolding.
_SKIP_MODULES = {"antigravity", "this", "idlelib", "lib2to3", "test", "turtledemo", "tkinter", "pydoc_data"}


def symbol_ratio(line: str) -> float:
    """Share of non-space characters that are neither letters, digits nor common punctuation."""
    chars = [c for c in line if not c.isspace()]
    if not chars:
        return 0.0
    symbols = sum(1 for c in chars if not (c.isalnum() or c in ".,;:'\"?!()-"))
    return symbols / len(chars)


def looks_like_code(line: str) -> bool:
    """True for lines that are code, prompts, tables or headings' underlines rather than prose.

    Every indented line counts as code here (examples, grammar, literal blocks);
    :func:`clean_text` keeps the indented continuation lines of list items.
    """
    if not line.strip():
        return False
    if line[:1] in (" ", "\t"):
        return True
    stripped = line.strip()
    if stripped[0] in "|+" or _UNDERLINE.match(stripped) or _DIRECTIVE.match(stripped):
        return True
    if _SIGNATURE.match(stripped) or _CODE_HINT.search(stripped):
        return True
    return symbol_ratio(stripped) > 0.25


def strip_markup(text: str) -> str:
    """Remove reStructuredText roles, literals, emphasis and field markers; keep their words."""
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _BACKTICKS.sub(r"\1", text)
    return _EMPHASIS.sub(r"\1", text)


def _indent(line: str) -> int:
    """Number of leading spaces (a tab counts as 8)."""
    expanded = line.expandtabs(8)
    return len(expanded) - len(expanded.lstrip(" "))


def clean_text(text: str) -> str:
    """Prose of one document: code-like lines and section titles dropped, markup removed,
    whitespace collapsed to single spaces.

    Indented lines are dropped as code unless they continue a list item ("* ", "- ", "1. ")
    at exactly the item's text indentation and do not look like code themselves.
    """
    lines = text.splitlines()
    kept, item_indent = [], None
    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if not line.strip():
            continue
        if _indent(line) == 0:
            item = _LIST_ITEM.match(line)
            item_indent = len(item.group(0)) if item else None
        if _UNDERLINE.match(following):  # a section title
            continue
        continues_item = item_indent is not None and _indent(line) == item_indent
        if continues_item and not looks_like_code(line.strip()):
            kept.append(line.strip())
        elif not looks_like_code(line):
            kept.append(_FIELD.sub("", line.strip()))
    return " ".join(strip_markup(" ".join(kept)).split())


def passages_from_texts(texts, n_words: int = 64) -> list[str]:
    """Cut each text into non-overlapping passages of exactly ``n_words`` words.

    Words are whitespace-separated tokens joined by single spaces; each text's remainder
    shorter than ``n_words`` is dropped; passages never span two texts. Exact duplicates are
    removed, keeping the first; order follows the input.
    """
    if n_words < 1:
        raise DataError(f"n_words must be >= 1, got {n_words}")
    seen: dict[str, None] = {}
    for text in texts:
        words = text.split()
        for start in range(0, len(words) - n_words + 1, n_words):
            seen.setdefault(" ".join(words[start : start + n_words]))
    return list(seen)


def drop_near_duplicates(passages, ngram: int = 13) -> list[str]:
    """Keep passages that share no ``ngram``-word sequence with an earlier kept passage.

    Help topics repeat sections of each other and docstrings repeat phrases; a member and a
    non-member passage sharing a long span would leak membership. 13 words is the n-gram
    length of the usual contamination checks. Order is kept.
    """
    seen: set[tuple[str, ...]] = set()
    kept = []
    for passage in passages:
        words = passage.split()
        grams = {tuple(words[i : i + ngram]) for i in range(max(len(words) - ngram + 1, 1))}
        if seen.isdisjoint(grams):
            kept.append(passage)
            seen |= grams
    return kept


@functools.lru_cache(maxsize=1)
def _topic_documents() -> tuple[str, ...]:
    """The language-reference help topics of this Python, sorted by topic name, cleaned."""
    from pydoc_data.topics import topics

    return tuple(clean_text(topics[key]) for key in sorted(topics))


def _module_source(name: str, stdlib: Path) -> Path | None:
    """The source file of a top-level standard-library module, if it is written in Python."""
    for candidate in (stdlib / f"{name}.py", stdlib / name / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _docstrings(source: Path) -> list[str]:
    """Module, class and function docstrings of a source file, in source order."""
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return []
    nodes = [tree] + [
        node for node in ast.walk(tree)
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and not node.name.startswith("_")
    ]
    nodes.sort(key=lambda node: getattr(node, "lineno", 0))
    return [doc for doc in (ast.get_docstring(node) for node in nodes) if doc]


@functools.lru_cache(maxsize=1)
def _module_documents() -> tuple[str, ...]:
    """One cleaned document per public, pure-Python standard-library module (sorted by name):
    its module, class and function docstrings, joined."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    documents = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in _SKIP_MODULES:
            continue
        source = _module_source(name, stdlib)
        if source is not None:
            documents.append(" ".join(clean_text(doc) for doc in _docstrings(source)))
    return tuple(documents)


def python_docs_corpus(n_words: int = 64, min_passages: int | None = None, *, modules: bool = True) -> list[str]:
    """Distinct ``n_words``-word passages of this Python's own documentation.

    Help topics (``pydoc_data.topics``) come first, then standard-library docstrings
    (``modules=True``); passages sharing a 13-word span with an earlier one are dropped
    (:func:`drop_near_duplicates`). Raises a DataError if fewer than ``min_passages`` result.
    """
    documents = list(_topic_documents()) + (list(_module_documents()) if modules else [])
    passages = drop_near_duplicates(passages_from_texts(documents, n_words))
    if min_passages is not None and len(passages) < min_passages:
        raise DataError(
            f"the Python documentation corpus gives {len(passages)} passages of {n_words} words, "
            f"fewer than the {min_passages} asked for; use shorter passages or load_corpus(path)"
        )
    return passages


def _read_corpus_documents(file: Path) -> list[str]:
    """Documents of a .txt file (separated by blank lines) or a .jsonl file (``text`` field)."""
    suffix = file.suffix.lower()
    if suffix == ".txt":
        return [doc for doc in re.split(r"\n\s*\n", read_text_file(file)) if doc.strip()]
    if suffix == ".jsonl":
        documents = []
        for number, line in enumerate(read_text_file(file).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{file}, line {number}: not valid JSON ({error})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f"{file}, line {number}: expected an object with a string 'text' field")
            documents.append(record["text"])
        return documents
    raise DataError(f"{file}: unsupported corpus file type {suffix!r}; use .txt or .jsonl")


def load_corpus(path: str | Path, n_words: int = 64, *, keep_near_duplicates: bool = False) -> list[str]:
    """Distinct ``n_words``-word passages of a user corpus file (.txt or .jsonl).

    Whitespace is collapsed but no other cleaning is done. Passages sharing a 13-word span
    with an earlier one are dropped unless ``keep_near_duplicates``.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"corpus file {file} does not exist")
    passages = passages_from_texts(_read_corpus_documents(file), n_words)
    if not keep_near_duplicates:
        passages = drop_near_duplicates(passages)
    if not passages:
        raise DataError(f"{file} has no document of at least {n_words} words")
    return passages
