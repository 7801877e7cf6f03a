"""Technical manuals: Python reST sources, PostgreSQL HTML, Perl POD, git AsciiDoc, the Debian
Administrator's Handbook (HTML, many languages)."""

from __future__ import annotations

import re
from typing import Iterator

from mixweave.corpus.archives import Archive
from mixweave.corpus.extractors import RawDoc
from mixweave.corpus.normalize import decode_bytes, strip_html

__all__ = ["extract_python_docs", "extract_postgresql_docs", "extract_perl_pods",
           "extract_git_docs", "extract_debian_handbook", "strip_pod", "REST_SECTION_PATTERN"]

PYTHON_DOC_SOURCES = "usr/share/doc/python3.11/html/_sources/"
REST_SECTION_PATTERN = r"^.+\n[=\-~^\"'`#*+]{3,}$"


def extract_python_docs(archive: Archive) -> Iterator[RawDoc]:
    """One reST source page of the Python manual = one document (the FAQ goes to ``qa``)."""
    def keep(path: str) -> bool:
        return (path.startswith(PYTHON_DOC_SOURCES) and path.endswith(".rst.txt")
                and not path.startswith(PYTHON_DOC_SOURCES + "faq/"))

    for path, data in archive.files(keep):
        rel = path[len(PYTHON_DOC_SOURCES):-len(".rst.txt")]
        yield RawDoc(rel, decode_bytes(data), {"path": rel, "format": "rst"})


def extract_postgresql_docs(archive: Archive) -> Iterator[RawDoc]:
    """One HTML page of the PostgreSQL manual = one document (tags stripped)."""
    pattern = re.compile(r"usr/share/doc/postgresql-doc-\d+/html/([^/]+)\.html?$")
    for path, data in archive.files(lambda p: pattern.match(p) is not None):
        page = pattern.match(path).group(1)
        yield RawDoc(page, strip_html(decode_bytes(data)), {"path": path, "format": "html"})


_POD_CODE_RE = re.compile(r"[BICFSXZLE]<(?:<+\s(.*?)\s>+|([^<>]*))>", re.DOTALL)
_POD_ENTITIES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&",
                 "apos": "'"}


def _pod_code(match: re.Match) -> str:
    code = match.group(0)[0]
    inner = match.group(1) if match.group(1) is not None else match.group(2)
    if code in "XZ":
        return ""
    if code == "E":
        return _POD_ENTITIES.get(inner, chr(int(inner)) if inner.isdigit() else "")
    if code == "L":
        text, _, target = inner.partition("|")
        return text if target else inner.split("/")[-1].strip('"') or inner
    return inner


def strip_pod(source: str) -> str:
    """Plain text of a POD document: commands become headings/items, formatting codes resolve."""
    out: list[str] = []
    skipping = False
    for block in re.split(r"\n\s*\n", source):
        if block.startswith("="):
            command, _, rest = block[1:].partition(" ")
            command = command.strip()
            rest = rest.strip()
            if command in ("begin", "for"):
                skipping = command == "begin" and not rest.startswith(("text", "man"))
                continue
            if command == "end":
                skipping = False
                continue
            if skipping or command in ("cut", "pod", "over", "back", "encoding"):
                continue
            if command.startswith("head") or command == "item":
                heading = rest
                for _ in range(3):
                    heading = _POD_CODE_RE.sub(_pod_code, heading)
                out.append(("* " if command == "item" and heading not in ("*", "") else "")
                           + heading.lstrip("* ").strip())
            continue
        if skipping:
            continue
        if block[:1] in (" ", "\t"):
            out.append(block)          # verbatim paragraph
            continue
        text = block
        for _ in range(3):             # nested codes
            text = _POD_CODE_RE.sub(_pod_code, text)
        out.append(text)
    return "\n\n".join(out)


def extract_perl_pods(archive: Archive) -> Iterator[RawDoc]:
    """One ``perl*.pod`` manual page = one document (perlfaq* goes to ``qa``)."""
    pattern = re.compile(r"usr/share/perl/[^/]+/pod/(perl\w*)\.pod$")

    def keep(path: str) -> bool:
        match = pattern.match(path)
        return match is not None and not match.group(1).startswith("perlfaq")

    for path, data in archive.files(keep):
        page = pattern.match(path).group(1)
        yield RawDoc(page, strip_pod(decode_bytes(data)), {"path": path, "format": "pod"})


def extract_git_docs(archive: Archive) -> Iterator[RawDoc]:
    """One AsciiDoc source (``git-*.txt``, guides) of git-doc = one document."""
    pattern = re.compile(r"usr/share/doc/git-doc/([^/]+)\.txt$")
    for path, data in archive.files(lambda p: pattern.match(p) is not None):
        name = pattern.match(path).group(1)
        yield RawDoc(name, decode_bytes(data), {"path": path, "format": "asciidoc"})


def extract_debian_handbook(archive: Archive, langs: tuple[str, ...] | None = None,
                            exclude: tuple[str, ...] = ()) -> Iterator[RawDoc]:
    """One HTML page of the Debian Administrator's Handbook = one document, per language
    folder (``en-US``, ``de-DE``...); ``langs`` selects folders, ``exclude`` removes some."""
    pattern = re.compile(r"usr/share/doc/debian-handbook/html/([A-Za-z]{2}(?:-[A-Za-z]+)?)/"
                         r"([^/]+)\.html$")

    def keep(path: str) -> bool:
        match = pattern.match(path)
        if match is None:
            return False
        lang = match.group(1)
        return (langs is None or lang in langs) and lang not in exclude

    for path, data in archive.files(keep):
        match = pattern.match(path)
        lang, page = match.group(1), match.group(2)
        if page in ("index", "ix01") or page.startswith(("pr01", "pr02")):
            continue
        yield RawDoc(f"{lang}/{page}", strip_html(decode_bytes(data)),
                     {"path": path, "format": "html", "lang": lang})
