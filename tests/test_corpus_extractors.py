"""Extractors and archive reading on small inline inputs (no package cache needed)."""

from __future__ import annotations

from mixweave.corpus.extractors.books import detokenize_brown
from mixweave.corpus.extractors.code import is_stdlib_source
from mixweave.corpus.extractors.dictionaries import parse_dictd, split_jargon
from mixweave.corpus.extractors.docs import strip_pod
from mixweave.corpus.extractors.faqs import split_debian_faq, split_rest_questions
from mixweave.corpus.extractors.formal_math import split_metamath
from mixweave.corpus.extractors.fortunes import split_fortunes
from mixweave.corpus.extractors.mail import email_body
from mixweave.corpus.extractors.manpages import _is_stub

NBSP = "\u00a0"


# ---------------------------------------------------------------- parsers


def test_split_debian_faq_handles_nbsp_wrapping_and_chapters():
    text = (
        "Table of Contents\n\n1. Definitions\n    1.1. What is this FAQ?\n\n"
        f"Chapter{NBSP}1.{NBSP}Definitions and overview\n\n"
        f"1.1.{NBSP}What is this FAQ?\n\n"
        f"{NBSP}{NBSP}{NBSP} This document answers questions\n    about Debian.\n\n"
        f"1.2.{NBSP}What is the difference between Debian and other\n"
        "distributions?\n\n    Freedom.\n\n        Indented detail.\n\n"
        f"Chapter{NBSP}2.{NBSP}Getting Debian\n\n"
        "2.1. Where do I get it?\n\n    From a mirror.\n"
    )
    units = split_debian_faq(text)
    assert [u[0] for u in units] == ["1.1", "1.2", "2.1"]
    assert units[0] == ("1.1", "What is this FAQ?", "This document answers questions\nabout Debian.")
    assert units[1][1] == "What is the difference between Debian and other distributions?"
    assert units[1][2] == "Freedom.\n\n    Indented detail."
    assert "Getting Debian" not in units[1][2]


def test_split_rest_questions_splits_on_question_headings():
    source = (":tocdepth: 2\n\n==========\nGeneral FAQ\n==========\n\n"
              "General\n=======\n\nWhat is Python?\n---------------\n\nA language.\n\n"
              "Why indentation?\n----------------\n\nBecause.\n\n.. code-block:: python\n\n"
              "   x = 1\n")
    units = split_rest_questions(source)
    assert [title for title, _ in units] == ["What is Python?", "Why indentation?"]
    assert units[0][1] == "What is Python?\n\nA language."
    assert "x = 1" in units[1][1]


def test_parse_dictd_decodes_base64_offsets_and_dedups_aliases():
    first, second = b"hello\n   A greeting.\n", b"world\n   The planet.\n"
    data = first + second
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n1, n2 = b64[len(first)], b64[len(second)]   # lengths < 64: one base-64 digit
    index = (f"00-database-info\tA\tB\nhello\tA\t{n1}\nhi\tA\t{n1}\n"
             f"world\t{n1}\t{n2}\n")
    assert parse_dictd(index, data) == [("hello", "hello\n   A greeting."),
                                        ("world", "world\n   The planet.")]


def test_split_jargon_separates_chapters_and_entries():
    text = ("                                The Jargon File\n\n   Table of Contents\n\n"
            "   1. Hacker Slang\n\n"
            f"Chapter{NBSP}1.{NBSP}Hacker Slang\n\n   This document is a collection.\n\n"
            "Glossary\n\n   Table of Contents\n\n   0\n\n"
            "   :0:\n\n   Numeric zero.\n\n   :hack:\n\n   [very common]\n\n   1. n. A job.\n\n"
            "                          Part III. Appendices\n\n"
            f"Appendix{NBSP}A.{NBSP}Hacker Folklore\n\n   The Meaning of Hack.\n")
    chapters, entries = split_jargon(text)
    assert [title for title, _ in chapters] == ["Chapter 1. Hacker Slang",
                                                "Appendix A. Hacker Folklore"]
    assert "Table of Contents" not in chapters[0][1]
    assert entries == [("0", ":0:\n\nNumeric zero."),
                       ("hack", ":hack:\n\n[very common]\n\n1. n. A job.")]


def test_detokenize_brown_restores_plain_punctuation():
    line = ("The/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, that/cs "
            "(/( any/dti )/) irregularities/nns took/vbd place/nn ./.")
    assert detokenize_brown(line) == ("The jury said \u201cno evidence\u201d, that (any) "
                                      "irregularities took place.")


def test_split_metamath_at_banners():
    banner = "=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-="
    text = (f"$( header $)\n\n$(\n{banner}\n        1. First chapter\n{banner}\n$)\n\n"
            f"ax-1 $a |- ph $.\n\n$(\n-.-.-.-.-.-.\n     A section\n-.-.-.-.-.-.\n$)\nth1 $p $.\n")
    sections = split_metamath(text)
    assert [(level, title) for level, title, _ in sections] == [
        ("preamble", "preamble"), ("chapter", "1. First chapter"), ("section", "A section")]
    assert "".join(t for _, _, t in sections) == text


def test_split_fortunes():
    assert split_fortunes("one\n  -- A\n%\ntwo\n%\n\n%\nthree\n") == ["one\n  -- A", "two",
                                                                     "three"]


def test_email_body_drops_headers_and_decodes_mime():
    raw = ("From: a@example.com\nSubject: Hello\n   there\nMIME-Version: 1.0\n"
           'Content-Type: multipart/alternative; boundary="XX"\n\n'
           "--XX\nContent-Type: text/plain; charset=iso-8859-1\n"
           "Content-Transfer-Encoding: quoted-printable\n\nGr=FC=DFe from the body.\n"
           "--XX\nContent-Type: text/html\n\n<p>HTML twin</p>\n--XX--\n")
    subject, body = email_body(raw)
    assert subject == "Hello there"
    assert "Grüße from the body." in body
    assert "From:" not in body and "HTML twin" not in body
    _, html_only = email_body("Subject: x\nContent-Type: text/html\n\n<b>Buy</b> &amp; save")
    assert html_only.strip() == "Buy & save"


def test_strip_pod():
    pod = ("=head1 NAME\n\nperlfoo - B<bold> and C<code> and L<perlop/Operators>\n\n"
           "=over 4\n\n=item * first\n\nText E<lt>tagE<gt>.\n\n=back\n\n"
           "    verbatim  code\n\n=cut\n")
    assert strip_pod(pod) == ("NAME\n\nperlfoo - bold and code and Operators\n\n* first\n\n"
                              "Text <tag>.\n\n    verbatim  code")


def test_stdlib_filter_and_man_stub():
    assert is_stdlib_source("json/decoder.py")
    assert not is_stdlib_source("test/test_json.py")
    assert not is_stdlib_source("lib2to3/tests/data/bom.py")
    assert not is_stdlib_source("site-packages/pip/__init__.py")
    assert not is_stdlib_source("json/__pycache__/decoder.cpython-311.py")
    assert not is_stdlib_source("json/decoder.pyc")
    assert _is_stub('.\\" comment\n.so man2/open.2\n')
    assert not _is_stub(".TH X 1\n.SH NAME\nx \\- y\n")
