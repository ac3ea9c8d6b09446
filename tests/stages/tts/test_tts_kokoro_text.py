"""Kokoro's text side: normalisation, espeak G2P, Kokoro symbols, and chunking under 510 symbols."""

from __future__ import annotations

import numpy as np
import pytest

from stages.tts.espeak import EspeakBackend
from stages.tts.kokoro import g2p
from stages.tts.kokoro.assets import load_vocab, packaged_data_file
from stages.tts.kokoro.chunking import (
    MAX_TOKENS,
    PARAGRAPH_PAUSE_S,
    PAUSE_S,
    clause_pieces,
    build_chunks,
    split_sentences,
)
from stages.tts.kokoro.normalize import normalize_text
from stages.tts.kokoro.number_words import cardinal, ordinal, year
from stages.tts.kokoro.tokens import SPACE, Unit, word_units


@pytest.fixture(scope="module")
def vocab() -> dict[str, int]:
    return load_vocab(packaged_data_file("vocab.json"))


@pytest.mark.parametrize(("text", "spoken"), [
    ("Dr. Smith arrived.", "Doctor Smith arrived."),
    ("It costs 3.5 euros.", "It costs three point five euros."),
    ("Born in 1999.", "Born in nineteen ninety-nine."),
    ("In 2024 and 2005, not 1905.", "In twenty twenty-four and two thousand five, not nineteen oh five."),
    ("Pay $3.50 now", "Pay three dollars and fifty cents now"),
    ("A $2 million deal", "A two million dollars deal"),
    ("50% of 1,250 people", "fifty percent of one thousand two hundred fifty people"),
    ("Meet at 3:30 p.m. on the 21st.", "Meet at three thirty P M on the twenty-first."),
    ("The 1990s were loud.", "The nineteen nineties were loud."),
    ("Mr. and Mrs. Jones live on Main St. Then St. Louis.",
     "Mister and Missus Jones live on Main Street. Then Saint Louis."),
    ("Apples, pears, etc. But not plums, e.g. red ones.",
     "Apples, pears, et cetera. But not plums, for example red ones."),
    ("Call 007, pages 10-20, 3/4 done, -5 degrees.",
     "Call zero zero seven, pages ten to twenty, three quarters done, minus five degrees."),
])
def test_normalize_says_numbers_money_and_abbreviations_in_words(text: str, spoken: str) -> None:
    """Numbers, years, money, times and abbreviations come out as the words a reader would say."""
    assert normalize_text(text) == spoken


def test_number_words_cover_cardinals_ordinals_and_years() -> None:
    """cardinal/ordinal/year follow English usage, including hyphenated tens and 'oh' years."""
    assert cardinal(1_000_042) == "one million forty-two"
    assert [ordinal(n) for n in (1, 2, 3, 12, 20, 21, 100)] == [
        "first", "second", "third", "twelfth", "twentieth", "twenty-first", "one hundredth"]
    assert [year(n) for n in (1999, 1900, 1905, 2000, 2010)] == [
        "nineteen ninety-nine", "nineteen hundred", "nineteen oh five", "two thousand", "twenty ten"]


def test_normalize_keeps_paragraph_breaks_and_collapses_other_whitespace() -> None:
    """Blank lines survive as one paragraph break; other line breaks and runs of spaces become one space."""
    assert normalize_text("One  line\nnext.\n\n\n  Second   para.") == "One line next.\n\nSecond para."


def test_g2p_returns_espeak_phonemes_with_stress_on_the_vowel_and_diphthongs_whole() -> None:
    """"Hello, my boy" gives h ə l ˈoʊ / m aɪ / b ˈɔɪ: multi-letter phonemes stay one item."""
    (words,) = g2p.phonemize(["Hello my boy"])
    assert words == [("h", "ə", "l", "ˈoʊ"), ("m", "aɪ"), ("b", "ˈɔɪ")]


def test_g2p_leaves_the_espeak_backend_reproducible() -> None:
    """Phonemising through the shared library does not change what the espeak backend then speaks."""
    backend = EspeakBackend()
    before = backend.synthesize("Reproducible speech, please.")
    g2p.phonemize(["Something else entirely, with other words."])
    after = backend.synthesize("Reproducible speech, please.")
    assert np.array_equal(before.audio, after.audio) and before.phonemes == after.phonemes


def test_kokoro_v1_symbols_merge_diphthongs_and_affricates_but_keep_ipa_for_the_timeline(vocab) -> None:
    """eɪ→A, aɪ→I, oʊ→O, dʒ→ʤ, flap→T, ɚ→əɹ; each unit still carries espeak's IPA symbol."""
    (words,) = g2p.phonemize(["Hey, my old judge, better"])
    units = [u for w in words for u in word_units(w, vocab)]
    pairs = {u.symbol.strip("ˈˌ"): u.tokens.strip("ˈˌ") for u in units}
    assert pairs["eɪ"] == "A" and pairs["aɪ"] == "I" and pairs["oʊ"] == "O" and pairs["dʒ"] == "ʤ"
    assert pairs["ɾ"] == "T" and pairs["ɚ"] == "əɹ"
    assert all(ch in vocab for u in units for ch in u.tokens)


def test_ipa_token_set_passes_espeak_symbols_through(vocab) -> None:
    """With token_set="ipa" the model is fed espeak's own IPA letters (for older Kokoro exports)."""
    (words,) = g2p.phonemize(["my boy"])
    units = [u for w in words for u in word_units(w, vocab, token_set="ipa")]
    assert "".join(u.tokens for u in units) == "maɪbˈɔɪ"


def test_linking_r_is_not_doubled(vocab) -> None:
    """"hurry" (espeak h ˈɜː ɹ i) is fed as hˈɜɹi, not hˈɜɹɹi."""
    (words,) = g2p.phonemize(["hurry"])
    assert "".join(u.tokens for u in word_units(words[0], vocab)) == "hˈɜɹi"


def test_sentences_split_on_terminal_marks_and_keep_clause_punctuation() -> None:
    """Sentences end at . ! ?; commas, semicolons and parentheses become clause marks; a bare end gets "."."""
    sentences = split_sentences("Well, it works (mostly)! Does it? Yes; it does\n\nNew start")
    marks = [[c.mark for c in s.clauses] for s in sentences]
    assert marks == [[",", ",", "!"], ["?"], [";", "."], ["."]]
    assert [s.paragraph_end for s in sentences] == [False, False, True, True]


def test_each_sentence_is_one_chunk_with_a_pause_that_follows_its_punctuation(vocab) -> None:
    """Three sentences give three calls; the pause after each matches its end mark; the last has none."""
    chunks = build_chunks("It works. Does it? Yes!\n\nNext paragraph.", vocab)
    assert len(chunks) == 4
    assert [c.pause_after_s for c in chunks] == [PAUSE_S["."], PAUSE_S["?"], PARAGRAPH_PAUSE_S, 0.0]
    assert "".join(u.tokens for u in chunks[1].units).endswith("?")


def test_long_sentences_are_cut_at_clauses_then_words_within_the_token_limit(vocab) -> None:
    """A sentence over 510 symbols is cut at commas; a comma-free one between words; no call exceeds 510."""
    with_commas = ", ".join(["the quick brown fox jumps over the lazy dog and runs away"] * 12) + "."
    chunks = build_chunks(with_commas, vocab)
    assert len(chunks) >= 2 and all(c.n_tokens <= MAX_TOKENS for c in chunks)
    assert all("".join(u.tokens for u in c.units).endswith(",") for c in chunks[:-1])
    assert chunks[0].pause_after_s == PAUSE_S[","]

    no_commas = " ".join(["the quick brown fox jumps over the lazy dog"] * 30) + "."
    chunks = build_chunks(no_commas, vocab)
    assert len(chunks) >= 3 and all(c.n_tokens <= MAX_TOKENS for c in chunks)
    words = sum(1 for c in chunks for u in c.units if u.tokens == " ") + len(chunks)
    assert words == 30 * 9  # every word is spoken exactly once



def test_a_word_longer_than_a_call_is_cut_rather_than_refused(vocab) -> None:
    """An 800-phoneme 'word' followed by a short one becomes pieces of ≤ 509 symbols with nothing dropped."""
    (words,) = g2p.phonemize(["Hello there"])
    huge, short = word_units(words[0] * 200, vocab), word_units(words[1], vocab)
    pieces = clause_pieces([huge, short], Unit("", "."), MAX_TOKENS - 1)
    assert len(pieces) >= 2 and all(sum(len(u.tokens) for u in p) <= MAX_TOKENS - 1 for p in pieces)
    flat = [u for p in pieces for u in p]
    assert flat == huge + [SPACE] + short + [Unit("", ".")]
    assert pieces[-1][-len(short) - 2:] == [SPACE] + short + [Unit("", ".")]  # the short word was not split
