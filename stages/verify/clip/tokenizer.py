"""CLIP's byte-level BPE tokenizer, giving the ids open_clip's `SimpleTokenizer` gives.

The vocabulary is built from open_clip's merges file, `bpe_simple_vocab_16e6.txt.gz`. Vortex does
not ship it: operators put it in the CLIP folder that `load_clip` reads, beside the model folders
(`<clip folder>/bpe_simple_vocab_16e6.txt.gz`, `<clip folder>/ViT-B-32/`, `<clip folder>/ViT-L-14/`).

One text becomes ids in five steps: clean it (ftfy, HTML entities, whitespace, lower case); split it
into words, single digits, punctuation runs and English contractions; write each piece's UTF-8 bytes
as printable stand-in characters, the last one marked end-of-word (`</w>`); merge adjacent symbols
in the merges file's rank order; look the symbols up. Every byte is a symbol of its own, so any text
tokenises, accents and emoji included; there is no unknown token.
"""

from __future__ import annotations

import gzip
import html
import zlib
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import ftfy
import numpy as np
import regex

from stages.errors import StageInputError

MERGES_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
"""The merges file's name in the CLIP folder (as open_clip ships it)."""
CONTEXT_LENGTH = 77
"""Tokens per text for every CLIP text tower: start, up to 75 text tokens, end."""
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
END_OF_WORD = "</w>"
MAX_MERGES = 49152 - 256 - 2
"""open_clip keeps the first 48 894 merges after the header line: with the 512 byte symbols and
the 2 special tokens that is the 49 408-token vocabulary of the CLIP text towers."""
BPE_CACHE_WORDS = 65_536
"""Words whose merges are remembered: captions repeat, but a months-long daemon must not grow."""

_FIELD = "verify.clip_merges"
_UNRANKED = float("inf")
_PRINTABLE_BYTES = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]


def _byte_symbols() -> dict[int, str]:
    """Byte value → its one-character symbol, in open_clip's vocabulary order."""
    # Printable Latin-1 bytes stand for themselves. Space, control bytes, NBSP and the soft hyphen
    # get characters past U+00FF instead, so no symbol is whitespace: the merges file separates
    # symbols with spaces. The dict's order (printable first) is the order of ids 0–255.
    symbols = {b: chr(b) for b in _PRINTABLE_BYTES}
    others = [b for b in range(256) if b not in symbols]
    symbols.update({b: chr(256 + n) for n, b in enumerate(others)})
    return symbols


_SYMBOL_OF_BYTE = _byte_symbols()
_BYTE_OF_SYMBOL = {s: b for b, s in _SYMBOL_OF_BYTE.items()}
_PIECES = regex.compile(
    # The special tokens come first so that a caption quoting them maps to their ids, as in open_clip.
    "|".join(map(regex.escape, (START_OF_TEXT, END_OF_TEXT)))
    + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def clean_text(text: str) -> str:
    """Normalise text as open_clip does before BPE: repair mojibake, unescape HTML twice, collapse
    whitespace to single spaces, strip, lower-case."""
    if not isinstance(text, str):
        raise StageInputError("text", "expected a string", got=type(text).__name__)
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


def read_merges(path: Path) -> list[tuple[str, str]]:
    """The BPE merges of a merges file (gzip or plain UTF-8 text), best first, as open_clip keeps them."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StageInputError(_FIELD, f"cannot read the CLIP merges file {path}: {exc.strerror or exc}",
                              path=str(path)) from None
    try:
        # Decide by content, not by name: operators unpack or rename files.
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise StageInputError(_FIELD, f"the CLIP merges file {path} is corrupt: {exc}", path=str(path)) from None

    lines = text.split("\n")[1:MAX_MERGES + 1]  # line 0 is a version header
    while lines and not lines[-1].strip():  # a short file's trailing newline is not a merge
        lines.pop()
    merges: list[tuple[str, str]] = []
    joined = {*_SYMBOL_OF_BYTE.values(), *(s + END_OF_WORD for s in _SYMBOL_OF_BYTE.values()),
              START_OF_TEXT, END_OF_TEXT}
    for line_no, line in enumerate(lines, start=2):
        parts = tuple(line.split())
        problem = _merge_problem(parts, joined)
        if problem:
            raise StageInputError(_FIELD, f"the CLIP merges file {path} is corrupt: line {line_no} {problem}",
                                  path=str(path), line=line[:80])
        joined.add(parts[0] + parts[1])
        merges.append((parts[0], parts[1]))
    if not merges:
        raise StageInputError(_FIELD, f"the CLIP merges file {path} holds no merges", path=str(path))
    return merges


def _merge_problem(parts: tuple[str, ...], joined: set[str]) -> str | None:
    """Why one line of a merges file is not a usable merge, or None when it is."""
    if len(parts) != 2:
        return "is not two symbols separated by a space"
    for part in parts:
        body = part.removesuffix(END_OF_WORD)  # a symbol is byte stand-ins, optionally end-of-word
        if not body or not set(body) <= _BYTE_OF_SYMBOL.keys():
            return f"holds {part!r}, which is not made of byte symbols"
    if parts[0] + parts[1] in joined:
        # Two ids for one string: open_clip's encoder would silently keep only the later one.
        return f"repeats the symbol {parts[0] + parts[1]!r}"
    return None


def _merge_pair(word: tuple[str, ...], first: str, second: str) -> tuple[str, ...]:
    """`word` with every non-overlapping `first second` pair, scanned left to right, joined."""
    merged: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
            merged.append(first + second)
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return tuple(merged)


class ClipTokenizer:
    """CLIP text → token ids, as open_clip's `SimpleTokenizer` (default "lower" cleaning)."""

    def __init__(self, merges: Sequence[tuple[str, str]]) -> None:
        """Build the vocabulary: byte symbols, end-of-word byte symbols, merged symbols, specials."""
        bytes_ = list(_SYMBOL_OF_BYTE.values())
        vocab = [*bytes_, *(s + END_OF_WORD for s in bytes_), *(a + b for a, b in merges), START_OF_TEXT, END_OF_TEXT]
        self._id_of = {symbol: i for i, symbol in enumerate(vocab)}
        if len(self._id_of) != len(vocab):
            raise StageInputError(_FIELD, "two merges give the same symbol")
        self._symbol_of = tuple(vocab)
        self._rank = {(a, b): rank for rank, (a, b) in enumerate(merges)}
        self.sot_id = self._id_of[START_OF_TEXT]
        self.eot_id = self._id_of[END_OF_TEXT]
        self.vocab_size = len(vocab)
        self._specials = {START_OF_TEXT: self.sot_id, END_OF_TEXT: self.eot_id}
        self._bpe_cached = lru_cache(maxsize=BPE_CACHE_WORDS)(self._bpe)

    @classmethod
    def from_merges_file(cls, path: Path) -> ClipTokenizer:
        """The tokenizer of a merges file (`bpe_simple_vocab_16e6.txt.gz`, or the same text unzipped)."""
        return cls(read_merges(path))

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without start/end tokens."""
        ids: list[int] = []
        for piece in _PIECES.findall(clean_text(text)):
            if piece in self._specials:
                ids.append(self._specials[piece])
                continue
            symbols = "".join(_SYMBOL_OF_BYTE[b] for b in piece.encode("utf-8"))
            ids.extend(self._id_of[s] for s in self._bpe_cached(symbols))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids, each word followed by a space (open_clip's decode, specials included)."""
        symbols = []
        for token in ids:
            token = int(token)
            if not 0 <= token < self.vocab_size:
                raise StageInputError("token_ids", f"id {token} is outside the vocabulary of {self.vocab_size}")
            symbols.append(self._symbol_of[token])
        # Specials and `</w>` are printable ASCII, so they pass through the byte table unchanged.
        raw = bytes(_BYTE_OF_SYMBOL[c] for c in "".join(symbols))
        return raw.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")

    def __call__(self, texts: list[str] | str, context_length: int = CONTEXT_LENGTH) -> np.ndarray:
        """(N, context_length) int64 ids: start, text, end, zero padding; a long text is cut so that
        the end token stays last."""
        if isinstance(texts, str):
            texts = [texts]
        if context_length < 1:
            raise StageInputError("context_length", "must be at least 1", context_length=context_length)
        out = np.zeros((len(texts), context_length), dtype=np.int64)
        for row, text in zip(out, texts):
            # The text towers pool at the end token, so truncation drops text, never the end token.
            ids = [self.sot_id, *self.encode(text)][:context_length - 1] + [self.eot_id]
            row[:len(ids)] = ids
        return out

    def _bpe(self, symbols: str) -> tuple[str, ...]:
        """Merged symbols of one piece: join the best-ranked adjacent pair until none is ranked."""
        word = (*symbols[:-1], symbols[-1] + END_OF_WORD)
        while len(word) > 1:
            pair = min(pairwise(word), key=lambda p: self._rank.get(p, _UNRANKED))
            if pair not in self._rank:
                break
            word = _merge_pair(word, *pair)
        return word
