"""English words for numbers: cardinals, ordinals, years, decimals and digit strings.

Written out before G2P because espeak reads numbers its own way ("1999" as "one thousand nine
hundred ninety-nine") and the model should hear what a person would say.
"""

from __future__ import annotations

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}
MAX_CARDINAL = 10**15 - 1
"""Larger integers are read digit by digit."""


def _below_hundred(n: int) -> str:
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] if ones == 0 else f"{_TENS[tens]}-{_ONES[ones]}"


def _below_thousand(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    if hundreds == 0:
        return _below_hundred(rest)
    head = f"{_ONES[hundreds]} hundred"
    return head if rest == 0 else f"{head} {_below_hundred(rest)}"


def cardinal(n: int) -> str:
    """'forty-two', 'one million two hundred thousand', 'minus seven'."""
    if n < 0:
        return f"minus {cardinal(-n)}"
    if n > MAX_CARDINAL:
        return digits(str(n))
    if n < 1000:
        return _below_thousand(n)
    words = []
    for scale, name in _SCALES:
        count, n = divmod(n, scale)
        if count:
            words.append(f"{_below_thousand(count)} {name}")
    if n:
        words.append(_below_thousand(n))
    return " ".join(words)


def ordinal(n: int) -> str:
    """'first', 'twenty-second', 'one hundredth'."""
    words = cardinal(n)
    head, sep, last = words.rpartition("-") if "-" in words.split(" ")[-1] else words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head}{sep}{last}"


def year(n: int) -> str:
    """How a year is said: 1999 'nineteen ninety-nine', 1905 'nineteen oh five', 2000 'two thousand',
    2008 'two thousand eight', 2024 'twenty twenty-four', 1900 'nineteen hundred'."""
    if not 0 < n < 10000:
        return cardinal(n)
    century, rest = divmod(n, 100)
    if n < 1000 or (century % 10 == 0 and rest < 10):
        return cardinal(n)  # 800, 2000, 2008, 1000, 1005
    if rest == 0:
        return f"{_below_hundred(century)} hundred"
    if rest < 10:
        return f"{_below_hundred(century)} oh {_ONES[rest]}"
    return f"{_below_hundred(century)} {_below_hundred(rest)}"


def digits(text: str) -> str:
    """Each digit by name: '0725' → 'zero seven two five'."""
    return " ".join(_ONES[int(ch)] for ch in text if ch.isdigit())


def decimal(integer_part: str, fraction_part: str) -> str:
    """'3', '5' → 'three point five'; the fraction is read digit by digit."""
    whole = cardinal(int(integer_part)) if integer_part else "zero"
    return f"{whole} point {digits(fraction_part)}" if fraction_part else whole
