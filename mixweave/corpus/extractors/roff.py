"""roff (man(7)) pages rendered to plain text without running ``man``: the renderer the man-page
extractor uses (escapes, special characters, macros, tables)."""

from __future__ import annotations

import re

_ROFF_SPECIAL = {
    "aq": "'", "dq": '"', "em": "\u2014", "en": "\u2013", "bu": "\u2022", "co": "\u00a9",
    "rg": "\u00ae", "tm": "\u2122", "lq": "\u201c", "rq": "\u201d", "oq": "\u2018",
    "cq": "\u2019", "ga": "`", "ti": "~", "ha": "^", "rs": "\\", "mu": "\u00d7", "+-": "\u00b1",
    "<=": "\u2264", ">=": "\u2265", "!=": "\u2260", "->": "\u2192", "<-": "\u2190",
    "hy": "-", "mi": "-", "pl": "+", "eq": "=", "sl": "/", "ba": "|", "or": "|", "br": "|",
    "de": "\u00b0", "ss": "\u00df", "a:": "\u00e4", "o:": "\u00f6", "u:": "\u00fc",
    "A:": "\u00c4", "O:": "\u00d6", "U:": "\u00dc", "e'": "\u00e9", "e`": "\u00e8",
    "pi": "\u03c0", "*m": "\u00b5", "sc": "\u00a7", "ps": "\u00b6", "fo": "\u00ab", "fc": "\u00bb",
    "Fo": "\u00ab", "Fc": "\u00bb", "dg": "\u2020", "ct": "\u00a2", "Eu": "\u20ac", "eu": "\u20ac",
    "at": "@", "sh": "#", "Do": "$", "lB": "[", "rB": "]", "lC": "{", "rC": "}", "la": "\u27e8",
    "ra": "\u27e9", "ua": "\u2191", "da": "\u2193", "fm": "\u2032", "sd": "\u2033",
}
_ROFF_STRINGS = {"lq": "\u201c", "rq": "\u201d", "R": "\u00ae", "Tm": "\u2122", "S": "", "''": "\u201d"}

_ESCAPE_RE = re.compile(
    r"""\\(?:
        \((?P<two>..)            # \(xx special character
      | \[(?P<bracket>[^\]]*)\]  # \[name] special character
      | \*(?:\((?P<str2>..)|\[(?P<strb>[^\]]*)\]|(?P<str1>.))   # string register
      | [fF](?:\(..|\[[^\]]*\]|.)   # font change
      | s[+-]?(?:\(\d\d|\[\d*\]|\d)  # size change
      | [nk](?:\(..|\[[^\]]*\]|.)   # number register / mark
      | [hvwlLxbD]'[^']*'          # motions, width, lines: drop with argument
      | [gmMYV](?:\(..|\[[^\]]*\]|.)
      | (?P<char>.)                 # one-character escape
    )""",
    re.VERBOSE,
)
_ONE_CHAR_ESCAPES = {"-": "-", "e": "\\", "\\": "\\", "~": " ", " ": " ", "0": " ", "t": "\t",
                     "'": "\u00b4", "`": "`", ".": ".", '"': ""}


def _roff_escape(match: re.Match) -> str:
    if match.group("two") is not None:
        return _ROFF_SPECIAL.get(match.group("two"), "")
    if match.group("bracket") is not None:
        name = match.group("bracket")
        if name.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
            return chr(int(name[1:], 16))
        return _ROFF_SPECIAL.get(name, "")
    for group in ("str2", "strb", "str1"):
        if match.group(group) is not None:
            return _ROFF_STRINGS.get(match.group(group), "")
    char = match.group("char")
    if char is not None:
        return _ONE_CHAR_ESCAPES.get(char, "")
    return ""


def _roff_inline(text: str) -> str:
    """Resolve roff escapes in a line of text."""
    if "\\" not in text:
        return text
    return _ESCAPE_RE.sub(_roff_escape, text)


def _roff_args(rest: str) -> list[str]:
    """Split a macro argument string, honouring roff double quotes ("" is a literal quote)."""
    args: list[str] = []
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t":
            i += 1
        if i >= n:
            break
        if rest[i] == '"':
            i += 1
            buf = []
            while i < n:
                if rest[i] == '"':
                    if i + 1 < n and rest[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(rest[i])
                i += 1
            args.append("".join(buf))
        else:
            j = i
            while j < n and rest[j] not in " \t":
                j += 1
            args.append(rest[i:j])
            i = j
    return args


_FONT_MACROS = {"B", "I", "SM", "SB", "CW", "R"}
_ALT_MACROS = {"BR", "RB", "BI", "IB", "IR", "RI"}
_BREAK_MACROS = {"PP", "LP", "P", "sp", "HP", "RS", "RE", "IP", "TP", "TQ", "EX", "EE", "SY",
                 "YS", "in", "ti", "ne", "bp", "Sh", "Pp", "Bd", "Ed", "Bl", "El"}


def _render_table(lines: list[str], tab: str) -> list[str]:
    """Rows of a tbl(1) table as ``cell | cell`` lines; ``T{ ... T}`` text blocks are joined."""
    text = "\n".join(lines)
    text = re.sub(r"T\{\n?(.*?)\n?T\}", lambda m: " ".join(m.group(1).split("\n")), text,
                  flags=re.DOTALL)
    rows = []
    for row in text.split("\n"):
        if row.strip() in ("_", "=", ""):
            continue
        cells = [_roff_inline(cell).strip() for cell in row.split(tab)]
        rows.append(" | ".join(cells))
    return rows


def strip_roff(source: str) -> str:
    """Plain text of a roff/man(7) page without running ``man``.

    Headings (.SH/.SS) become their own lines, font and alternating-font macros keep their words,
    filled paragraphs are joined into one line, no-fill blocks (.nf/.EX, tables) keep their lines,
    comments, macro definitions and layout requests disappear, and escapes are resolved.
    """
    lines = source.replace("\r\n", "\n").split("\n")
    out: list[str] = []           # finished lines
    para: list[str] = []          # words of the current filled paragraph
    fill = True
    in_def = False
    in_table = 0                  # 0: no table; 1: reading options/format; 2: data
    table_lines: list[str] = []
    table_tab = "\t"
    title = ""

    def flush(blank: bool = True) -> None:
        if para:
            out.append(" ".join(p for p in para if p).strip())
            para.clear()
        if blank and out and out[-1] != "":
            out.append("")

    tag_next = False              # after .TP the next text line is the item's tag

    def emit_text(text: str) -> None:
        nonlocal tag_next
        if tag_next:
            flush(blank=False)
            out.append(text.strip())
            tag_next = False
        elif fill:
            para.append(text.strip())
        else:
            out.append(text.rstrip())

    # join escaped newlines
    joined: list[str] = []
    buf = ""
    for line in lines:
        if line.endswith("\\") and not line.endswith("\\\\"):
            buf += line[:-1]
            continue
        joined.append(buf + line)
        buf = ""
    if buf:
        joined.append(buf)

    for raw in joined:
        line = raw
        if in_def:
            if line.startswith(".."):
                in_def = False
            continue
        if line.startswith((".\\\"", "'\\\"", "\\\"", ".\\#", "\\#")) or line.strip() == ".":
            continue
        if in_table:
            if line.startswith((".TE", "'TE")):
                in_table = 0
                flush()
                out.extend(_render_table(table_lines, table_tab))
                out.append("")
                continue
            if in_table == 1:
                match = re.search(r"\btab\s*\((.)\)", line)
                if match:
                    table_tab = match.group(1)
                if line.rstrip().endswith("."):
                    in_table = 2
                continue
            if line.startswith((".", "'")) and not line.startswith(".T"):
                continue
            table_lines.append(line)
            continue
        if line.startswith((".", "'")) and len(line) > 1:
            body = line[1:].lstrip()
            m = re.match(r"(\S+)\s*(.*)$", body)
            if not m:
                continue
            macro, rest = m.group(1), m.group(2)
            if macro in ("de", "de1", "am", "ig"):
                in_def = True
                continue
            if macro == "TS":
                flush()
                in_table, table_lines, table_tab = 1, [], "\t"
                continue
            if macro == "TH":
                args = _roff_args(rest)
                if args:
                    title = f"{args[0]}({args[1]})" if len(args) > 1 else args[0]
                continue
            if macro in ("SH", "SS", "Sh", "Ss"):
                flush()
                heading = _roff_inline(" ".join(_roff_args(rest)))
                if heading:
                    out.append(heading if macro in ("SS", "Ss") else heading.upper())
                    out.append("")
                continue
            if macro in ("nf", "EX", "Bd"):
                flush(blank=False)
                fill = False
                continue
            if macro in ("fi", "EE", "Ed"):
                flush(blank=False)
                fill = True
                continue
            if macro == "br":
                flush(blank=False)
                continue
            if macro in _FONT_MACROS:
                if rest:
                    emit_text(_roff_inline(" ".join(_roff_args(rest))))
                continue
            if macro in _ALT_MACROS:
                emit_text(_roff_inline("".join(_roff_args(rest))))
                continue
            if macro in ("IP", "TP", "TQ", "HP"):
                flush()
                args = _roff_args(rest)
                if macro == "IP" and args and args[0]:
                    para.append(_roff_inline(args[0]))
                tag_next = macro in ("TP", "TQ")
                continue
            if macro in ("UR", "MT"):
                args = _roff_args(rest)
                if args:
                    emit_text(_roff_inline(args[0]))
                continue
            if macro in ("OP",):
                emit_text("[" + _roff_inline(" ".join(_roff_args(rest))) + "]")
                continue
            if macro in _BREAK_MACROS:
                flush()
                continue
            # unknown or layout-only macro: drop the line
            continue
        text = _roff_inline(line)
        if not text.strip():
            flush()
            continue
        emit_text(text)
    flush()
    text = "\n".join(out)
    if title:
        text = f"{title}\n\n{text}"
    return text
