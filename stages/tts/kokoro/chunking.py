"""Sentences and clauses → model calls of at most MAX_TOKENS symbols, with the pause after each.

Kokoro takes at most 510 symbols per call. Each sentence is one call when it fits (sentence
prosody stays whole and calls are independent, so they can run in parallel); a longer one is
cut at clause punctuation, and a clause longer still at word boundaries. Each call's audio is
later trimmed of silence and followed by a pause chosen from the punctuation where it ended.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stages.tts.kokoro import g2p
from stages.tts.kokoro.tokens import SPACE, Unit, punctuation_unit, word_units

MAX_TOKENS = 510
"""Kokoro's limit on symbols per call (its 512 positions minus the two pads)."""

PAUSE_S = {".": 0.38, "!": 0.42, "?": 0.42, "…": 0.5, ",": 0.14, ";": 0.24, ":": 0.24, "—": 0.22, "": 0.03}
"""Silence after a call that ended on this mark (at speed 1.0; slower speech pauses longer).
Sentence ends get roughly what a reader leaves; a cut at a comma a short breath; a cut between
words (a clause over 510 symbols) next to nothing."""
PARAGRAPH_PAUSE_S = 0.7
"""Silence after the last sentence of a paragraph (a blank line in the text)."""

_TERMINALS = ".!?"
_CLAUSE_MARKS = {",": ",", ";": ";", ":": ":", "—": "—", "…": "…", "(": ",", ")": ","}
_SENTENCE_END = re.compile(r'(?<=[.!?])["\')\]]*\s+|(?<=…)["\')\]]*\s+(?=["\'(]*[A-Z])')
_CLAUSE_SPLIT = re.compile(r"\s*([,;:—…()]|\s-+\s)\s*")


@dataclass(frozen=True)
class Clause:
    """Words up to a punctuation mark, and the mark ("" when there is none)."""

    text: str
    mark: str


@dataclass(frozen=True)
class Sentence:
    """A sentence's clauses; `paragraph_end` when a blank line follows it."""

    clauses: tuple[Clause, ...]
    paragraph_end: bool


@dataclass(frozen=True)
class Chunk:
    """One model call: its units (phonemes, spaces, punctuation) and the pause after it."""

    units: tuple[Unit, ...]
    pause_after_s: float

    @property
    def n_tokens(self) -> int:
        """Number of model symbols (pads excluded)."""
        return sum(len(u.tokens) for u in self.units)


def _clauses(sentence: str) -> tuple[Clause, ...]:
    pieces = _CLAUSE_SPLIT.split(sentence.replace('"', " "))
    clauses: list[Clause] = []
    # split() alternates text, mark, text, mark, ..., text.
    for i in range(0, len(pieces), 2):
        text = pieces[i].strip()
        raw = pieces[i + 1].strip() if i + 1 < len(pieces) else ""
        mark = _CLAUSE_MARKS.get(raw, "—" if raw.startswith("-") else raw)
        if i + 2 >= len(pieces):  # the last piece carries the sentence's own end
            text, end = _split_terminal(text)
            mark = end or mark
        if text:
            clauses.append(Clause(text, mark))
        elif clauses and mark and (not clauses[-1].mark or mark in _TERMINALS):
            # A mark with no words before it ("(mostly)!") belongs to the previous clause; a
            # sentence end outranks the comma a parenthesis left there.
            clauses[-1] = Clause(clauses[-1].text, mark)
    if clauses and (not clauses[-1].mark or clauses[-1].mark not in _TERMINALS + "…"):
        clauses[-1] = Clause(clauses[-1].text, ".")  # a sentence says it is over
    return tuple(clauses)


def _split_terminal(text: str) -> tuple[str, str]:
    stripped = text.rstrip("\"')] ")
    end = re.search(r"[.!?]+$", stripped)
    if not end:
        return text, ""
    marks = end.group(0)
    mark = "?" if "?" in marks else "!" if "!" in marks else "."
    return stripped[: end.start()].strip(), mark


def split_sentences(text: str) -> list[Sentence]:
    """Normalised text → sentences of clauses, paragraph ends marked."""
    sentences = []
    for paragraph in text.split("\n\n"):
        parts = [s for s in _SENTENCE_END.split(paragraph.strip()) if s.strip()]
        found = [Sentence(c, False) for c in map(_clauses, parts) if c]
        if found:
            found[-1] = Sentence(found[-1].clauses, True)
            sentences.extend(found)
    return sentences


def _pack(groups: Sequence[list[Unit]], limit: int) -> list[list[Unit]]:
    """Greedily join consecutive unit groups into lists of at most `limit` tokens."""
    packed: list[list[Unit]] = []
    size = 0
    for group in groups:
        n = sum(len(u.tokens) for u in group)
        if packed and size + n <= limit:
            packed[-1].extend(group)
            size += n
        else:
            packed.append(list(group))
            size = n
    return packed


def clause_pieces(words: Sequence[list[Unit]], mark_unit: Unit | None, limit: int) -> list[list[Unit]]:
    """A clause's units (words joined by spaces, then its mark) in pieces of at most `limit` tokens.

    Cuts fall between words; only a word longer than `limit` on its own is cut inside.
    """
    groups = [([SPACE] if i else []) + w for i, w in enumerate(words) if w]
    if mark_unit is not None and groups:
        groups[-1] = groups[-1] + [mark_unit]
    # A "word" longer than a whole call (a run of letters espeak spells out) is cut between
    # its phonemes: nothing better exists, and refusing it would refuse the whole script.
    pieces = []
    for group in groups:
        too_long = sum(len(u.tokens) for u in group) > limit
        pieces.extend(_pack([[u] for u in group], limit) if too_long else [group])
    return _pack(pieces, limit)


def _end_mark(units: Sequence[Unit]) -> str:
    last = units[-1] if units else None
    return last.tokens if last is not None and not last.spoken and last.tokens.strip() else ""


def build_chunks(text: str, vocab: Mapping[str, int], token_set: str = "kokoro-v1", dialect: str = "en-us",
                 max_tokens: int = MAX_TOKENS) -> list[Chunk]:
    """Model calls for normalised `text`, in order, each within `max_tokens` symbols."""
    british = dialect == "en-gb"
    sentences = split_sentences(text)
    all_clauses = [c for s in sentences for c in s.clauses]
    phonemized = iter(g2p.phonemize([c.text for c in all_clauses], dialect))
    chunks: list[Chunk] = []
    for sentence in sentences:
        pieces: list[list[Unit]] = []
        for clause in sentence.clauses:
            words = [word_units(w, vocab, token_set, british) for w in next(phonemized)]
            mark = punctuation_unit(clause.mark, vocab)
            cut = clause_pieces(words, mark, max_tokens - 1)
            if pieces and cut:
                cut[0] = [SPACE] + cut[0]
            pieces.extend(cut)
        for units in _pack(pieces, max_tokens):
            units = units[1:] if units and units[0] is SPACE else units
            if any(u.spoken for u in units):
                chunks.append(Chunk(tuple(units), PAUSE_S.get(_end_mark(units), PAUSE_S[""])))
        if chunks and sentence.paragraph_end:
            chunks[-1] = Chunk(chunks[-1].units, max(chunks[-1].pause_after_s, PARAGRAPH_PAUSE_S))
    if chunks:
        chunks[-1] = Chunk(chunks[-1].units, 0.0)  # nothing follows the last one
    return chunks
