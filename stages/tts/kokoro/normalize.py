"""Text normalisation before G2P: say numbers, money, times and abbreviations the way people do.

espeak would read "Dr. Smith paid $3.50 in 1999" as "D R dot Smith paid dollar three point five
zero in one thousand nine hundred ...". Rewriting to words first gives "Doctor Smith paid three
dollars and fifty cents in nineteen ninety-nine". Dots that belonged to an abbreviation are
removed, so every remaining ".", "!" or "?" ends a sentence and the chunker can trust it.
"""

from __future__ import annotations

import re

from stages.tts.kokoro import number_words

# Titles stand before a name: never sentence-final, so their dot always goes.
_TITLES = {
    "Dr": "Doctor", "Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Prof": "Professor",
    "Gen": "General", "Capt": "Captain", "Lt": "Lieutenant", "Col": "Colonel", "Sgt": "Sergeant",
    "Rev": "Reverend", "Gov": "Governor", "Sen": "Senator", "Rep": "Representative", "Mt": "Mount",
}
# These may close a sentence ("... and so on, etc. Then ..."): the dot stays when a new
# sentence follows.
_TRAILING = {
    "etc": "et cetera", "vs": "versus", "approx": "approximately", "Jr": "Junior", "Sr": "Senior",
    "Inc": "Incorporated", "Ltd": "Limited", "Ave": "Avenue", "Blvd": "Boulevard", "Rd": "Road",
    "Jan": "January", "Feb": "February", "Mar": "March", "Apr": "April", "Aug": "August",
    "Sep": "September", "Sept": "September", "Oct": "October", "Nov": "November", "Dec": "December",
}
_LATIN = {"e.g.": "for example", "i.e.": "that is", "cf.": "compare", "et al.": "and others"}
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
               "€": ("euro", "euros", "cent", "cents")}
_FRACTION_NAMES = {2: ("half", "halves"), 4: ("quarter", "quarters")}
_CHARACTERS = {
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " ", "\u2009": " ",
    "\u2013": "-", "\u2212": "-", "\u00ad": "",
}
_SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "*": " ", "_": " ", "~": " about "}

_SENTENCE_FOLLOWS = r'(?=["\')\]]*(?:\s+[A-Z"\'(]|\s*$))'
# After an ambiguous dot ("U.S.", "St.") a capital alone does not prove a new sentence ("U.S.
# Army", "St. Louis"); one of these words, or the end of the paragraph, does.
_STARTERS = ("The|Then|This|That|These|Those|There|It|Its|I|We|You|He|She|They|But|And|So|Or|In|On|At|"
             "If|When|What|Why|How|Who|Our|My|Your|His|Her|Their|A|An|After|Before|Now|Today|Yet")
_SENTENCE_START = re.compile(rf'["\')\]]*(?:\s+["\'(]*(?:{_STARTERS})\b|\s*(?:\n|$))')


def _sub_abbreviations(text: str) -> str:
    latin = "|".join(re.escape(k) for k in sorted(_LATIN, key=len, reverse=True))
    text = re.sub(rf"(?<![\w.])(?:{latin})", lambda m: _LATIN[m.group(0).lower()], text, flags=re.IGNORECASE)
    # "St." is Saint before a name ("St. Louis"), else Street ("Main St.", "5th St. is").
    def street_or_saint(match: re.Match) -> str:
        if _SENTENCE_START.match(match.string, match.end()):
            return "Street."
        return "Saint" if re.match(r"\s+[A-Z]", match.string[match.end():]) else "Street"

    text = re.sub(r"\bSt\.", street_or_saint, text)
    titles = "|".join(sorted(_TITLES, key=len, reverse=True))
    text = re.sub(rf"\b({titles})\.", lambda m: _TITLES[m.group(1)], text)
    trailing = "|".join(sorted(_TRAILING, key=len, reverse=True))
    text = re.sub(rf"\b({trailing})\.{_SENTENCE_FOLLOWS}", lambda m: _TRAILING[m.group(1)] + ".", text)
    text = re.sub(rf"\b({trailing})\.", lambda m: _TRAILING[m.group(1)], text)
    text = re.sub(r"\bNo\.(?=\s*\d)", "number", text)
    return text


def _sub_acronyms(text: str) -> str:
    # "U.S.A." → "U S A" (espeak spells single capitals); its final dot may also end a sentence.
    def spell(match: re.Match) -> str:
        letters = " ".join(match.group(0).replace(".", ""))
        ends_sentence = _SENTENCE_START.match(match.string, match.end()) is not None
        return letters + ("." if ends_sentence else "")

    return re.sub(r"\b(?:[A-Za-z]\.){2,}", spell, text)


def _money(match: re.Match) -> str:
    one, many, one_cent, many_cents = _CURRENCIES[match.group("cur")]
    whole = int(match.group("int").replace(",", ""))
    cents_text, scale = match.group("frac"), match.group("scale")
    if scale:  # "$3.5 million" → "three point five million dollars"
        amount = number_words.decimal(str(whole), cents_text or "")
        return f"{amount} {scale.strip()} {many}"
    cents = int((cents_text or "0").ljust(2, "0")[:2])
    parts = []
    if whole or not cents:
        parts.append(f"{number_words.cardinal(whole)} {one if whole == 1 else many}")
    if cents:
        parts.append(f"{number_words.cardinal(cents)} {one_cent if cents == 1 else many_cents}")
    return " and ".join(parts)


def _time(match: re.Match) -> str:
    hours, minutes = int(match.group(1)), int(match.group(2))
    if hours > 24 or minutes > 59:
        return match.group(0)
    said = number_words.cardinal(hours)
    if minutes == 0:
        said += "" if match.group(3) else " o'clock"
    elif minutes < 10:
        said += f" oh {number_words.cardinal(minutes)}"
    else:
        said += f" {number_words.cardinal(minutes)}"
    if match.group(3):
        said += " " + " ".join(match.group(3).replace(".", "").strip().upper())
    return said


def _fraction(match: re.Match) -> str:
    top, bottom = int(match.group(1)), int(match.group(2))
    if bottom == 0:
        return f"{number_words.cardinal(top)} over zero"
    if bottom in _FRACTION_NAMES:
        single, plural = _FRACTION_NAMES[bottom]
        return f"{number_words.cardinal(top)} {single if top == 1 else plural}"
    name = number_words.ordinal(bottom)
    return f"{number_words.cardinal(top)} {name if top == 1 else name + 's'}"


def _decade(match: re.Match) -> str:
    words = number_words.year(int(match.group(1)))
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _integer(match: re.Match) -> str:
    return _integer_words(match.group(0))


def _integer_words(text: str) -> str:
    if len(text) > 1 and text.startswith("0"):
        return number_words.digits(text)  # "007", zip codes: said digit by digit
    value = int(text)
    return number_words.cardinal(value) if value <= number_words.MAX_CARDINAL else number_words.digits(text)


def _sub_numbers(text: str) -> str:
    scale = r"(?P<scale>\s+(?:thousand|million|billion|trillion)\b)?"
    text = re.sub(rf"(?P<cur>[$£€])\s?(?P<int>\d[\d,]*)(?:\.(?P<frac>\d+))?{scale}", _money, text)
    text = re.sub(r"(\d)\s?%", r"\1 percent", text)
    text = re.sub(r"\b(\d+)(?:st|nd|rd|th)\b", lambda m: number_words.ordinal(int(m.group(1))), text)
    text = re.sub(r"\b(1[1-9]\d0|20\d0)s\b", _decade, text)
    text = re.sub(r"(?<![\d,.])\b(\d+)/(\d+)\b(?![\d/])", _fraction, text)
    text = re.sub(r"(?<=\d)\s?-\s?(?=\d)", " to ", text)  # ranges: "10-20"
    text = re.sub(r"(?<![\w.,])-(?=\d)", "minus ", text)
    # Dotted numbers ("version 2.0.1") are read part by part.
    text = re.sub(r"\b\d+(?:\.\d+){2,}\b", lambda m: " point ".join(_integer_words(p) for p in m.group(0).split(".")),
                  text)
    # Years: four digits 1000–2099 standing alone (not part of 1,999 or 19.99).
    text = re.sub(r"(?<![\d,.])\b(1\d\d\d|20\d\d)\b(?![\d,]\d|\.\d)",
                  lambda m: number_words.year(int(m.group(1))), text)
    text = re.sub(r"(?<![\d.])(\d*)\.(\d+)\b", lambda m: number_words.decimal(m.group(1), m.group(2)), text)
    text = re.sub(r"\b\d{1,3}(?:,\d{3})+\b", lambda m: number_words.cardinal(int(m.group(0).replace(",", ""))), text)
    return re.sub(r"\d+", _integer, text)


def normalize_text(text: str) -> str:
    """`text` rewritten for G2P: numbers, money, times and abbreviations in words, tidy spacing.

    Paragraph breaks (blank lines) are kept as a single "\\n\\n"; other line breaks become spaces.
    """
    for char, replacement in _CHARACTERS.items():
        text = text.replace(char, replacement)
    text = text.replace("...", "…")
    text = _sub_abbreviations(text)
    # Times before acronyms, so "3:30 p.m." is still whole when it is read.
    text = re.sub(r"\b(\d{1,2}):(\d{2})\b(\s*[AaPp]\.?[Mm]\b\.?)?", _time, text)
    text = _sub_acronyms(text)
    text = _sub_numbers(text)
    for char, replacement in _SYMBOLS.items():
        text = text.replace(char, replacement)
    paragraphs = re.split(r"\n\s*\n", text)
    return "\n\n".join(p for p in (" ".join(p.split()) for p in paragraphs) if p)
