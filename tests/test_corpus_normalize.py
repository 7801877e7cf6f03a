"""Normalisation, markup stripping, splitting and grouping (mixweave.corpus.normalize)."""

from __future__ import annotations

import random
import unicodedata

import pytest

from mixweave.corpus.extractors.roff import strip_roff
from mixweave.corpus.normalize import (decode_bytes, group_entries, merge_short_units,
                                       normalize_text, slugify, split_document, strip_html,
                                       text_sha256, utf8_len)


# ---------------------------------------------------------------- normalize_text


def test_normalize_text_applies_nfc():
    decomposed = "Cafe\u0301 nai\u0308ve"
    out = normalize_text(decomposed)
    assert out == "Café naïve"
    assert unicodedata.is_normalized("NFC", out)


def test_normalize_text_cleans_whitespace_and_controls():
    raw = "\ufeff\n\nline one   \r\nline\x00 two\t\x07\r\n\n\n\n\nline three\f  \n\n"
    assert normalize_text(raw) == "line one\nline two\n\nline three"


def test_normalize_text_keeps_indentation_and_tabs():
    code = "def f():\n    if x:\n\treturn 1\n\n\n\nclass C:\n    pass\n"
    out = normalize_text(code, max_blank_lines=2)
    assert out == "def f():\n    if x:\n\treturn 1\n\n\nclass C:\n    pass"


def test_normalize_text_strips_ansi_colour_codes():
    assert normalize_text("\x1b[37;1mtitle\x1b[;m and \x1b[34;1mapt-get(8)\x1b[m") == \
        "title and apt-get(8)"


def test_decode_bytes_replaces_invalid_sequences():
    assert decode_bytes(b"ok \xff\xfe end") == "ok \ufffd\ufffd end"
    assert decode_bytes("Müller".encode("latin-1"), "latin-1") == "Müller"


def test_hash_and_slug_helpers():
    assert text_sha256("abc") == text_sha256("abc") != text_sha256("abd")
    assert utf8_len("é") == 2
    assert slugify("Société et sciences sociales") == "societe-et-sciences-sociales"
    assert slugify("???") == "x"


# ---------------------------------------------------------------- HTML


def test_strip_html_removes_tags_scripts_and_decodes_entities():
    page = ("<html><head><title>T</title><style>p{color:red}</style></head><body>"
            "<script>var x = 1;</script><h1>Fish &amp; Chips</h1>"
            "<p>Some\n   <b>bold</b> text.</p><ul><li>one</li><li>two</li></ul></body></html>")
    out = normalize_text(strip_html(page))
    assert out == "Fish & Chips\n\nSome bold text.\n\n* one\n* two"
    assert "<" not in out and "color" not in out and "var x" not in out


def test_strip_html_keeps_pre_layout():
    out = strip_html("<p>Example:</p><pre>if x:\n    y = 1</pre>")
    assert "if x:\n    y = 1" in out


def test_strip_html_drops_navigation_chrome():
    page = ('<body><div id="banner"><a>Download the ebook</a></div>'
            '<ul class="docnav top"><li>Prev</li><li><ul><li>nested</li></ul></li></ul>'
            '<div class="navheader"><table><tr><td>Next</td></tr></table></div>'
            '<div class="section"><p>Real content.</p></div>'
            '<div class="navfooter"><br/><a>Home</a></div></body>')
    assert normalize_text(strip_html(page)) == "Real content."


# ---------------------------------------------------------------- roff


ROFF_PAGE = r""".\" Copyright (C) 1992 Somebody
.\" SPDX-License-Identifier: Linux-man-pages-copyleft
.TH open 2 2023-02-05 "Linux man-pages 6.03"
.SH NAME
open, creat \- open and possibly create a file
.SH SYNOPSIS
.nf
.B #include <fcntl.h>
.PP
.BI "int open(const char *" pathname ", int " flags );
.fi
.SH DESCRIPTION
The
.BR open ()
system call opens the file specified by
.IR pathname .
It returns \fIfd\fP \(em a small integer\(rq.
.TP
.B O_APPEND
The file is opened in append mode.
.de XX
.nr a 1
..
.TS
tab(:);
l l.
T{
first
T}:second
.TE
"""


def test_strip_roff_renders_macros_and_escapes():
    out = normalize_text(strip_roff(ROFF_PAGE))
    lines = out.splitlines()
    assert lines[0] == "open(2)"
    assert "NAME" in lines and "SYNOPSIS" in lines and "DESCRIPTION" in lines
    assert "open, creat - open and possibly create a file" in out
    assert "#include <fcntl.h>\n\nint open(const char *pathname, int flags);" in out
    assert ("The open() system call opens the file specified by pathname. "
            "It returns fd \u2014 a small integer\u201d.") in out
    assert "O_APPEND\nThe file is opened in append mode." in out
    assert "first | second" in out


def test_strip_roff_leaves_no_markup():
    out = strip_roff(ROFF_PAGE)
    assert "Copyright" not in out and "SPDX" not in out
    assert "\\f" not in out and "\\(" not in out and ".nr" not in out
    assert not any(line.startswith(".") for line in out.splitlines())


# ---------------------------------------------------------------- splitting


def _paragraph_text(n_paragraphs: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "délta", "ε", "水", "zeta", "theta"]
    paras = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 120)))
             for _ in range(n_paragraphs)]
    return "\n\n".join(paras)


@pytest.mark.parametrize("max_bytes", [300, 1_000, 5_000])
def test_split_document_bounds_size_and_is_lossless(max_bytes):
    text = _paragraph_text(200)
    parts = split_document(text, max_bytes)
    assert len(parts) > 1
    assert "".join(parts) == text
    assert all(utf8_len(p) <= max_bytes for p in parts)
    if max_bytes >= 1_000:   # every paragraph fits: breaks fall on paragraph ends
        assert all(part.endswith("\n\n") for part in parts[:-1])


def test_split_document_short_text_is_untouched():
    assert split_document("short text", 50_000) == ["short text"]


def test_split_document_prefers_section_boundaries():
    sections = [f"SECTION {i}\n\n" + _paragraph_text(6, seed=i) + "\n\n" for i in range(12)]
    text = "".join(sections)
    max_bytes = max(utf8_len(s) for s in sections) + 10
    parts = split_document(text, max_bytes, section_pattern=r"^SECTION \d+$")
    assert "".join(parts) == text
    assert all(part.startswith("SECTION ") for part in parts)
    assert all(utf8_len(p) <= max_bytes for p in parts)


def test_split_document_hard_splits_a_single_huge_line_safely():
    text = "水" * 10_000                     # 30,000 bytes, no boundaries at all
    parts = split_document(text, 1_000)
    assert "".join(parts) == text
    assert all(utf8_len(p) <= 1_000 for p in parts)


def test_split_document_rejects_nonpositive_bound():
    with pytest.raises(ValueError):
        split_document("abc", 0)


def test_split_document_avoids_tiny_leftovers():
    text = _paragraph_text(300, seed=3)
    parts = split_document(text, 4_000)
    sizes = [utf8_len(p) for p in parts]
    # neighbours are merged while they fit, so no two consecutive parts fit together
    assert all(a + b > 4_000 for a, b in zip(sizes, sizes[1:]))


# ---------------------------------------------------------------- grouping


def test_group_entries_respects_budget_and_order():
    entries = [f"entry {i} " + "x" * 90 for i in range(50)]
    groups = list(group_entries(entries, max_bytes=1_000))
    assert "\n\n".join(groups) == "\n\n".join(entries)
    assert all(utf8_len(g) <= 1_000 for g in groups)
    assert len(groups) == 6


def test_group_entries_keeps_oversized_entry_alone():
    groups = list(group_entries(["a", "b" * 5_000, "c"], max_bytes=100))
    assert groups == ["a", "b" * 5_000, "c"]


def test_merge_short_units_merges_forward_and_keeps_first_key():
    units = [("q1", "short"), ("q2", "x" * 300), ("q3", "tiny"), ("q4", "also tiny")]
    merged = merge_short_units(units, min_chars=200)
    assert [key for key, _ in merged] == ["q1"]  # q3+q4 are too short: appended to the last unit
    assert merged[0][1] == "short\n\n" + "x" * 300 + "\n\ntiny\n\nalso tiny"
    assert merge_short_units([("a", "x" * 250), ("b", "y" * 250)]) == [("a", "x" * 250),
                                                                       ("b", "y" * 250)]
