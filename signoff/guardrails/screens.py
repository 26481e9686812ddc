"""Screens for untrusted text: redact PII, flag prompt injection, bound the size.

Runs before any model sees a ticket. Redaction replaces each finding with a typed placeholder
(``[EMAIL]``, ``[CARD]``...) so that the text stays readable for a classifier and for a human.
"""

from __future__ import annotations

import re
from collections import Counter

from signoff.domain import ScreenResult

# Order matters: secrets and IBANs before card and phone numbers, which would eat their digits.
_SECRET = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{16,}|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})"
    r"|(?i:\b(?:password|passwd|pwd|api[_ -]?key|secret|token)\s*(?:is|[:=])\s*)\S+"
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
# Typed by hand: lower case, or grouped with dashes; only redacted when the ISO 13616 check digits hold.
_IBAN_LOOSE = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]{4}){2,7}(?:[ -]?[A-Za-z0-9]{1,4})?\b")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_PHONE = re.compile(r"(?<![\w+(])(?:\+|00)?\(?\d[\d ().\-/]{5,20}\d(?!\w)")
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
_DATE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{4}$")
_ADDRESS = re.compile(
    r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s){1,3}"
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Square|Sq)\b\.?"
)

_INJECTION = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(?:ignore|disregard|forget|override)\b[^.\n]{0,40}\b(?:instructions?|prompts?|rules?|guidelines)\b",
        r"\byou are now\b",
        r"\b(?:system|developer)\s+(?:prompt|message|instructions?)\b",
        r"\bact as (?:an?|the)\b",
        r"\b(?:as an ai|dear (?:ai|assistant|bot)|to the (?:ai|assistant|bot))\b",
        r"\b(?:close|delete|resolve|escalate|cancel|approve|refund)\s+(?:all|every)\b[^.\n]{0,30}\b(?:tickets?|orders?|accounts?|requests?)\b",
        r"\bset (?:all|every)\b[^.\n]{0,30}\bto\b",
        r"\bdo not (?:ask|wait) for (?:approval|a human|confirmation)\b",
        r"<\s*/?\s*(?:system|instructions?)\s*>",
    )
]


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_ok(s: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN written with any case and separators."""
    compact = re.sub(r"[ -]", "", s).upper()
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _looks_like_phone(s: str) -> bool:
    """7 to 13 digits (longer runs are order or account numbers; a leading ``00`` international prefix is not
    counted), not a date, not a decimal amount."""
    digits = sum(c.isdigit() for c in s) - (2 if s.lstrip("(").startswith("00") else 0)
    return 7 <= digits <= 13 and not _DATE.match(s) and not re.fullmatch(r"[\d,]+\.\d{1,2}", s)


def redact(text: str) -> tuple[str, Counter[str]]:
    """Replace PII and secrets with placeholders; return the text and counts by kind."""
    counts: Counter[str] = Counter()

    def sub(pattern: re.Pattern[str], kind: str, value: str, check: object = None) -> str:
        def repl(m: re.Match[str]) -> str:
            if callable(check) and not check(m.group(0)):
                return m.group(0)
            counts[kind] += 1
            return f"[{kind}]"

        return pattern.sub(repl, value)

    text = sub(_SECRET, "SECRET", text)
    text = sub(_EMAIL, "EMAIL", text)
    text = sub(_IBAN, "IBAN", text)
    text = sub(_IBAN_LOOSE, "IBAN", text, _iban_ok)
    text = sub(_CARD, "CARD", text, lambda s: _luhn_ok(re.sub(r"\D", "", s)))
    text = sub(_SSN, "SSN", text)
    text = sub(_PHONE, "PHONE", text, _looks_like_phone)
    text = sub(_ADDRESS, "ADDRESS", text)
    return text, counts


def find_injection(text: str) -> list[str]:
    """Phrases in untrusted text that read as instructions to the AI."""
    return [m.group(0) for pattern in _INJECTION for m in pattern.finditer(text)]


def screen(text: str, *, max_chars: int) -> ScreenResult:
    """Bound, redact and inspect untrusted text. The result's ``text`` is all a model may see."""
    truncated = len(text) > max_chars
    bounded = text[:max_chars]
    redacted, counts = redact(bounded)
    return ScreenResult(
        text=redacted,
        redactions=dict(counts),
        injection=find_injection(bounded),
        truncated=truncated,
    )
