"""Guessing what a CSV file's user did not say: its delimiter and its encoding, from its first bytes.

A ``;`` file read with ``,`` loads silently as one column named like ``id_created_at_name``; so when no
delimiter is given, the one that splits the first lines into the same number of fields wins.
"""

from __future__ import annotations

import re

__all__ = ["CANDIDATES", "WESTERN", "legacy_encoding", "sniff_delimiter"]

#: delimiters tried, in order of preference on a tie
CANDIDATES = (",", ";", "\t", "|")
#: lines looked at
_LINES = 20


def _quoted(quote: str | None) -> re.Pattern[str] | None:
    return re.compile(f"{re.escape(quote)}[^{re.escape(quote)}]*{re.escape(quote)}") if quote else None


def sniff_delimiter(head: str, *, quote: str | None = '"', skip_rows: int = 0, comment: str | None = None,
                    complete: bool = True) -> str:
    """The candidate that splits the first lines of ``head`` into the same number (> 0) of fields each, the most
    fields on a tie of consistency; else the one most frequent in the header line; else ``,``.

    ``complete`` is False when ``head`` was cut short (its last line may be partial, so it is not counted).

    >>> sniff_delimiter("id;name;amount\\n1;a;1,5\\n2;b;2,0\\n")
    ';'
    """
    pattern = _quoted(quote)
    text = pattern.sub("", head) if pattern else head  # a delimiter inside quotes is data
    lines = text.splitlines()
    if not complete and len(lines) > 1:
        lines = lines[:-1]
    lines = [line for line in lines[skip_rows:] if line.strip() and not (comment and line.startswith(comment))]
    lines = lines[:_LINES]
    if not lines:
        return ","
    consistent = [c for c in CANDIDATES if lines[0].count(c) > 0 and all(ln.count(c) == lines[0].count(c)
                                                                        for ln in lines)]
    if consistent:
        return max(consistent, key=lambda c: (lines[0].count(c), -CANDIDATES.index(c)))
    best = max(CANDIDATES, key=lambda c: (lines[0].count(c), -CANDIDATES.index(c)))
    return best if lines[0].count(best) else ","


_OTHER = re.compile("[^\x00-\x7f\ufffd]")  # a character that only a valid multi-byte UTF-8 sequence gives
#: the encoding taken when detection lists it among its first guesses (Western European exports)
WESTERN = "cp1252"


def legacy_encoding(head: bytes, *, complete: bool) -> str | None:
    """None when ``head`` (a file's first bytes; ``complete``: the whole file) reads as UTF-8, else the
    encoding it is likely in.

    A few bad bytes among valid UTF-8 (or in fewer than 2 lines, or 1 %) stay UTF-8: their rows are
    quarantined as ``invalid_utf8``. Otherwise charset-normalizer guesses; on short Western text it often
    names cp1250 or another Latin code page, so a guess that reads as Latin script is taken as cp1252 (when
    the bytes are valid cp1252): Western European exports are the common case.
    """
    import codecs

    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
        return None
    except UnicodeDecodeError:
        pass
    text = head.decode("utf-8", errors="replace")
    if _OTHER.search(text):
        return None
    lines = text.splitlines()
    bad = sum(1 for line in lines if "\ufffd" in line)
    if bad < 2 or bad * 100 < len(lines):
        return None
    from charset_normalizer import from_bytes

    best = from_bytes(head).best()
    if best is None:
        return None
    if set(best.alphabets) <= _LATIN and _decodes(head, WESTERN):
        return WESTERN
    return str(best.encoding)


#: Unicode blocks of Western text (as charset-normalizer names them)
_LATIN = frozenset({"Basic Latin", "Control character", "Latin-1 Supplement", "Latin Extended-A",
                    "Latin Extended-B", "Latin Extended Additional", "Currency Symbols", "General Punctuation",
                    "Letterlike Symbols", "Spacing Modifier Letters"})


def _decodes(head: bytes, encoding: str) -> bool:
    try:
        head.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True
