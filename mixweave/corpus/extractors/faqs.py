"""Question-and-answer units: the Debian FAQ (several languages), the Python FAQ, perlfaq."""

from __future__ import annotations

import gzip
import re
import textwrap
from typing import Iterator

from mixweave.corpus.archives import Archive
from mixweave.corpus.extractors import RawDoc
from mixweave.corpus.extractors.docs import PYTHON_DOC_SOURCES, strip_pod
from mixweave.corpus.normalize import decode_bytes, merge_short_units

__all__ = ["extract_debian_faq", "extract_python_faq", "extract_perlfaq",
           "split_debian_faq", "split_rest_questions"]

_WS = r"[ \t\u00a0]"
_QUESTION_RE = re.compile(rf"^(\d+(?:\.\d+)+)\.{_WS}+(\S.*)$")
_CHAPTER_RE = re.compile(rf"^(?:\w[\w\-]*{_WS}+(?:\d+|[A-Z])\.{_WS}+\S|第{_WS}*\d+{_WS}*章)")


def split_debian_faq(text: str) -> list[tuple[str, str, str]]:
    """``(number, question, answer)`` units of a rendered Debian FAQ (debian-faq.LL.txt).

    Question headings start in column 0 (``1.3. What is ...``; a non-breaking space may follow
    the number, and long questions wrap onto further column-0 lines); answers are indented.
    Chapter headings (``Chapter 3.``, ``Kapitel 3.``, ``Chapitre 3.``) end the previous unit.
    """
    lines = text.splitlines()
    units: list[tuple[str, str, str]] = []
    number: str | None = None
    question: list[str] = []
    body: list[str] = []
    in_heading = False

    def close() -> None:
        if number is not None:
            # some answers start with non-breaking spaces instead of the usual indentation
            plain = [re.sub(r"^[ \u00a0]+", lambda m: " " * len(m.group()), ln) for ln in body]
            answer = textwrap.dedent("\n".join(plain)).strip()
            units.append((number, " ".join(q.strip() for q in question), answer))

    for line in lines:
        match = _QUESTION_RE.match(line)
        if match:
            close()
            number, question, body, in_heading = match.group(1), [match.group(2)], [], True
            continue
        if _CHAPTER_RE.match(line):
            close()
            number, question, body, in_heading = None, [], [], False
            continue
        if number is None:
            continue
        if in_heading and line.strip() and not line[:1].isspace():
            question.append(line)
            continue
        in_heading = False
        body.append(line)
    close()
    return units


def extract_debian_faq(archive: Archive, lang: str = "en") -> Iterator[RawDoc]:
    """One question with its answer from ``debian-faq.<lang>.txt.gz`` = one document."""
    path = f"usr/share/doc/debian/FAQ/debian-faq.{lang}.txt.gz"
    text = decode_bytes(gzip.decompress(archive.read(path)))
    units = [(num, f"{question}\n\n{answer}") for num, question, answer in split_debian_faq(text)]
    for number, unit in merge_short_units(units):
        yield RawDoc(f"{lang}/{number}", unit, {"path": path, "lang": lang, "question": number})


_UNDERLINE_RE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")


def split_rest_questions(source: str) -> list[tuple[str, str]]:
    """``(heading, text)`` units of a reST FAQ page: every heading underlined with anything but
    ``=`` (the section level) starts a unit that runs to the next heading."""
    lines = source.splitlines()
    heads: list[tuple[int, str]] = []       # (line index, underline char)
    for i in range(len(lines) - 1):
        title, under = lines[i], lines[i + 1]
        match = _UNDERLINE_RE.match(under)
        if (match and title.strip() and not _UNDERLINE_RE.match(title)
                and len(under.rstrip()) >= len(title.rstrip())
                and not (i > 0 and _UNDERLINE_RE.match(lines[i - 1]))):  # overlined page title
            heads.append((i, match.group(1)))
    units: list[tuple[str, str]] = []
    for n, (start, char) in enumerate(heads):
        end = heads[n + 1][0] if n + 1 < len(heads) else len(lines)
        if char == "=":
            continue
        title = lines[start].strip()
        body = "\n".join(lines[start + 2:end]).strip()
        units.append((title, f"{title}\n\n{body}"))
    return units


def extract_python_faq(archive: Archive) -> Iterator[RawDoc]:
    """One question of the Python FAQ (reST, ``faq/*.rst.txt``) = one document."""
    prefix = PYTHON_DOC_SOURCES + "faq/"
    for path, data in archive.files(lambda p: p.startswith(prefix) and p.endswith(".rst.txt")):
        page = path[len(prefix):-len(".rst.txt")]
        numbered = [(f"{page}/{i:03d}", text)
                    for i, (_, text) in enumerate(split_rest_questions(decode_bytes(data)), 1)]
        for key, text in merge_short_units(numbered):
            yield RawDoc(key, text, {"path": path, "page": page, "format": "rst"})


def extract_perlfaq(archive: Archive) -> Iterator[RawDoc]:
    """One ``=head2`` question of perlfaq1..9 = one document."""
    pattern = re.compile(r"usr/share/perl/[^/]+/pod/(perlfaq\d)\.pod$")
    for path, data in archive.files(lambda p: pattern.match(p) is not None):
        page = pattern.match(path).group(1)
        parts = re.split(r"^(?==head2 )", decode_bytes(data), flags=re.MULTILINE)[1:]
        numbered = [(f"{page}/{i:03d}", strip_pod(part)) for i, part in enumerate(parts, 1)]
        for key, text in merge_short_units(numbered):
            yield RawDoc(key, text, {"path": path, "page": page, "format": "pod"})
