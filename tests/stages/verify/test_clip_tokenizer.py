"""CLIP's BPE tokenizer on a small merges file built here (the real one is not on CI machines).

Ids in these tests are worked out by hand from open_clip's vocabulary layout:
ids 0–255 are the byte symbols (printable bytes first, `!` = 0, so an ASCII character c is
ord(c) − 33), 256–511 the same symbols ending a word (`</w>`), then one id per merge in file
order starting at 512, then <start_of_text> and <end_of_text>.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stages.errors import StageInputError
from stages.verify.clip.tokenizer import MAX_MERGES, ClipTokenizer, clean_text

MERGES = [  # rank: merge → symbol (id)
    "o f</w>",  # 0: of</w> (512)
    "p h",  # 1: ph (513)
    "t o</w>",  # 2: to</w> (514)
    "ph o",  # 3: pho (515)
    "pho to</w>",  # 4: photo</w> (516)
    "e r",  # 5: er (517)
    "p er",  # 6: per (518)
    "o n</w>",  # 7: on</w> (519)
    "s on</w>",  # 8: son</w> (520)
    "per son</w>",  # 9: person</w> (521)
    "h o</w>",  # 10: ho</w> (522) — ranked after "p h", so "pho" becomes ph + o</w>
    "i n",  # 11: in (523)
    "in g</w>",  # 12: ing</w> (524)
    "t a",  # 13: ta (525)
    "l k",  # 14: lk (526)
    "ta lk",  # 15: talk (527)
    "talk ing</w>",  # 16: talking</w> (528)
]
SOT, EOT = 529, 530
A_EOW, PHOTO, OF, PERSON, TALKING = 320, 516, 512, 521, 528


def byte_id(char: str) -> int:
    """Id of a printable ASCII character's byte symbol (inside a word)."""
    return ord(char) - 33


def eow_id(char: str) -> int:
    """Id of a printable ASCII character's byte symbol ending a word."""
    return 256 + byte_id(char)


def write_merges(path: Path, merges: list[str], header: str = '"bpe_simple_vocab_16e6.txt#version: 0.2') -> Path:
    """A merges file as open_clip ships it: a header line, one merge a line, gzip when named .gz."""
    text = "\n".join([header, *merges]) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def tokenizer(tmp_path: Path) -> ClipTokenizer:
    """The tokenizer of the small merges file above."""
    return ClipTokenizer.from_merges_file(write_merges(tmp_path / "bpe_simple_vocab_16e6.txt.gz", MERGES))


def test_vocabulary_layout(tokenizer: ClipTokenizer) -> None:
    """Specials follow the 512 byte symbols and the merges: start = 512 + merges, end = start + 1."""
    assert (tokenizer.sot_id, tokenizer.eot_id, tokenizer.vocab_size) == (SOT, EOT, 531)


def test_sentence_ids_by_hand(tokenizer: ClipTokenizer) -> None:
    """A sentence of vocabulary words encodes to one merged id per word."""
    assert tokenizer.encode("A photo of a person talking") == [A_EOW, PHOTO, OF, A_EOW, PERSON, TALKING]


def test_words_outside_the_merges_split_into_subwords(tokenizer: ClipTokenizer) -> None:
    """A word the merges do not complete is left as the merged pieces it reached plus single bytes."""
    assert tokenizer.encode("photos") == [515, byte_id("t"), byte_id("o"), eow_id("s")]
    assert tokenizer.encode("talk") == [525, byte_id("l"), eow_id("k")]


def test_lower_ranked_merge_applies_first(tmp_path: Path) -> None:
    """Where two merges compete for a symbol, the one listed earlier in the file wins."""
    as_listed = ClipTokenizer.from_merges_file(write_merges(tmp_path / "a.txt", ["p h", "h o</w>"]))
    swapped = ClipTokenizer.from_merges_file(write_merges(tmp_path / "b.txt", ["h o</w>", "p h"]))
    assert as_listed.encode("pho") == [512, eow_id("o")]
    assert swapped.encode("pho") == [byte_id("p"), 512]


def test_contractions_digits_and_punctuation_are_separate_pieces(tokenizer: ClipTokenizer) -> None:
    """English contractions, each digit and each punctuation run are pieces of their own."""
    assert tokenizer.encode("it's") == [byte_id("i"), eow_id("t"), byte_id("'"), eow_id("s")]
    assert tokenizer.encode("2024") == [eow_id("2"), eow_id("0"), eow_id("2"), eow_id("4")]
    assert tokenizer.encode("a photo!?") == [A_EOW, PHOTO, byte_id("!"), eow_id("?")]


def test_non_ascii_falls_back_to_bytes(tokenizer: ClipTokenizer) -> None:
    """Accents and emoji tokenise as their UTF-8 bytes' symbols, without error, and decode back."""
    # é = C3 A9, both printable Latin-1: ids 106 + (0xC3 − 0xAE) and 94 + (0xA9 − 0xA1), the last + 256.
    assert tokenizer.encode("é") == [127, 256 + 102]
    # 😀 = F0 9F 98 80; 9F, 98 and 80 are not printable, so their symbols sit after the 188 printable ones.
    assert tokenizer.encode("😀") == [172, 188 + 65, 188 + 58, 256 + 188 + 34]
    assert tokenizer.decode(tokenizer.encode("café 😀 naïve")) == "café 😀 naïve "


def test_decode_inverts_encode_on_cleaned_text(tokenizer: ClipTokenizer) -> None:
    """decode(encode(x)) is x cleaned and lower-cased, each word followed by a space (open_clip's decode)."""
    text = "  A Photo\tOF a PERSON   talking photos "
    assert tokenizer.decode(tokenizer.encode(text)) == clean_text(text) + " "
    assert clean_text(text) == "a photo of a person talking photos"


def test_whitespace_case_and_html_are_normalised(tokenizer: ClipTokenizer) -> None:
    """Runs of whitespace, upper case, HTML entities and mojibake do not change the ids."""
    assert tokenizer.encode("\n A  PHOTO\t\tOf   a\u00a0Person ") == tokenizer.encode("a photo of a person")
    assert tokenizer.encode("&amp;amp;") == tokenizer.encode("&")
    assert tokenizer.encode("cafÃ©") == tokenizer.encode("café")


def test_batch_is_padded_with_start_first_and_end_after_text(tokenizer: ClipTokenizer) -> None:
    """Each row is start, the text's ids, end, then zeros to context_length, as int64."""
    ids = tokenizer(["a photo", "a person talking", ""], context_length=8)
    assert ids.dtype == np.int64 and ids.shape == (3, 8)
    assert ids.tolist() == [
        [SOT, A_EOW, PHOTO, EOT, 0, 0, 0, 0],
        [SOT, A_EOW, PERSON, TALKING, EOT, 0, 0, 0],
        [SOT, EOT, 0, 0, 0, 0, 0, 0],
    ]


def test_single_string_gives_one_row_of_77(tokenizer: ClipTokenizer) -> None:
    """A plain string is a batch of one, at CLIP's context length of 77."""
    ids = tokenizer("a photo of a person")
    assert ids.shape == (1, 77)
    assert ids[0, :7].tolist() == [SOT, A_EOW, PHOTO, OF, A_EOW, PERSON, EOT] and not ids[0, 7:].any()


def test_long_text_is_cut_keeping_end_last(tokenizer: ClipTokenizer) -> None:
    """A text longer than the context keeps its first ids and ends with the end token in the last slot."""
    fits = tokenizer("a photo of a", context_length=6)  # start + 4 + end: exactly full, nothing cut
    cut = tokenizer("a photo of a person talking " * 20, context_length=6)
    assert fits.tolist() == [[SOT, A_EOW, PHOTO, OF, A_EOW, EOT]]
    assert cut.tolist() == [[SOT, A_EOW, PHOTO, OF, A_EOW, EOT]]
    assert tokenizer("a photo", context_length=1).tolist() == [[EOT]]


def test_quoted_special_token_maps_to_its_id(tokenizer: ClipTokenizer) -> None:
    """Text spelling a special token gets that token's id, as open_clip's tokenizer does."""
    assert tokenizer.encode("a <END_OF_TEXT> photo") == [A_EOW, EOT, PHOTO]


def test_plain_and_gzip_merges_files_agree(tmp_path: Path) -> None:
    """The merges file may be gzip or plain text, whatever its name says."""
    gz = ClipTokenizer.from_merges_file(write_merges(tmp_path / "m.txt.gz", MERGES))
    plain = ClipTokenizer.from_merges_file(write_merges(tmp_path / "m.txt", MERGES))
    renamed = tmp_path / "plain.gz"
    renamed.write_bytes((tmp_path / "m.txt").read_bytes())
    text = "a photo of a person talking"
    assert gz.encode(text) == plain.encode(text) == ClipTokenizer.from_merges_file(renamed).encode(text)


def test_only_the_first_48894_merges_are_used(tmp_path: Path) -> None:
    """A full-size file gives open_clip's 49 408-token vocabulary: start 49406, end 49407."""
    printable = [chr(c) for c in [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]]
    pairs = [f"{a} {b}{end}" for end in ("", "</w>") for a in printable for b in printable]
    assert len(pairs) > MAX_MERGES + 100
    tokenizer = ClipTokenizer.from_merges_file(write_merges(tmp_path / "full.txt.gz", pairs))
    assert (tokenizer.vocab_size, tokenizer.sot_id, tokenizer.eot_id) == (49408, 49406, 49407)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("truncated.txt.gz", gzip.compress("\n".join(["#v", *MERGES]).encode())[:-12], "corrupt"),
        ("garbage.txt.gz", b"\x1f\x8b" + b"not really gzip" * 4, "corrupt"),
        ("latin1.txt", "#v\np h\nt \xe9\n".encode("latin-1"), "corrupt"),
        ("three.txt", b"#v\np h\no f </w>\n", "line 3"),
        ("alphabet.txt", "#v\np h\n\u4e2d o\n".encode(), "line 3"),
        ("repeat.txt", b"#v\np h\nph o\np h\n", "line 4"),
        ("header_only.txt", b'"bpe_simple_vocab_16e6.txt#version: 0.2\n', "no merges"),
    ],
)
def test_corrupt_merges_file_is_refused_by_name(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    """A merges file that is not open_clip's format raises StageInputError naming the file and the fault."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(StageInputError, match=reason) as caught:
        ClipTokenizer.from_merges_file(path)
    assert str(path) in str(caught.value) and caught.value.field == "verify.clip_merges"


@pytest.mark.parametrize("name", ["absent.txt.gz", "."])
def test_missing_merges_file_is_refused_by_name(tmp_path: Path, name: str) -> None:
    """A missing merges file (or a folder in its place) raises StageInputError naming the path."""
    path = tmp_path / name
    with pytest.raises(StageInputError, match="cannot read") as caught:
        ClipTokenizer.from_merges_file(path)
    assert str(path) in str(caught.value)


def test_bad_ids_and_texts_are_refused(tokenizer: ClipTokenizer) -> None:
    """Decoding an id outside the vocabulary, or encoding a non-string, raises StageInputError."""
    with pytest.raises(StageInputError, match="531"):
        tokenizer.decode([SOT, 531])
    with pytest.raises(StageInputError, match="-1"):
        tokenizer.decode([-1])
    with pytest.raises(StageInputError, match="expected a string"):
        tokenizer([b"a photo"])  # type: ignore[list-item]


def test_importing_the_tokenizer_does_not_import_torch() -> None:
    """The tokenizer module is pure Python and numpy: importing it leaves torch unloaded."""
    code = "import sys, stages.verify.clip.tokenizer; sys.exit('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[3]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0
