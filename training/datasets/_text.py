"""Small phrase builders shared by the per-source caption generators."""

from __future__ import annotations

import re

_SMALL = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def join_words(items: list[str], conj: str = "and") -> str:
    items = [i for i in items if i]
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} {conj} {items[-1]}"


def count_phrase(n: int, singular: str, plural: str | None = None, *, digits: bool = True) -> str:
    """'3 people', '1 car'; digits=False spells small numbers ('three people')."""
    plural = plural or singular + "s"
    noun = singular if n == 1 else plural
    num = str(n) if digits or n > 10 else _SMALL[n]
    return f"{num} {noun}"


def percent(frac: float, fine: bool = False) -> str:
    """0.236 -> '24%'; never '0%' for a non-zero fraction ('<1%'). fine=True keeps one decimal
    below 10 % ('0.6%', '3.2%'), for fractions that sit near a threshold."""
    if fine and 0 < frac < 0.1:
        v = round(100 * frac, 1)
        return f"{v:.1f}%" if v > 0 else "<0.1%"
    p = round(100 * frac)
    if p == 0 and frac > 0:
        return "<1%"
    return f"{p}%"


def amount_words(frac: float) -> str:
    """A fraction of an area in words."""
    if frac <= 0:
        return "none"
    if frac < 0.05:
        return "a small part"
    if frac < 0.25:
        return "part"
    if frac < 0.5:
        return "a large part"
    if frac < 0.8:
        return "most"
    return "nearly all"


def dedupe(captions: list[str]) -> list[str]:
    out: list[str] = []
    for c in captions:
        c = " ".join(c.split())
        if c and c not in out:
            out.append(c)
    return out


def article(phrase: str) -> str:
    """'a' or 'an' by sound: 'an oil tanker', 'a T-72 tank', 'an LNG tanker', 'an SRTM model'."""
    first = phrase.split(" ")[0] if phrase else ""
    head = re.split(r"[-/]", first)[0]
    if len(first) > 1 and head.isupper() and first[0].isalpha():
        return "an" if first[0] in "AEFHILMNORSX" else "a"  # spelled-out acronyms
    return "an" if first[:1].lower() in "aeiou" else "a"
