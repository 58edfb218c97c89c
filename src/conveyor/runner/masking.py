"""Hide secret values in log text before it is stored or shown.

A secret leaks in more shapes than its plain text: tools print it base64-encoded (basic-auth
headers, Kubernetes manifests, docker config.json), URL-encoded (connection strings) or
JSON-escaped, and a multi-line secret (a PEM key) is logged one line at a time. Every such form is
turned into one literal pattern and all patterns go into one compiled regex.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable, Iterable
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "MIN_SECRET_LENGTH", "SecretMasker", "secret_variants"]

MASK = "***"
# Shorter values are ignored: masking "a" or "on" would turn every log into asterisks while
# protecting nothing, since a 1-2 character secret can be guessed anyway.
MIN_SECRET_LENGTH = 3
# A base64 fragment shorter than this matches by chance far too often to be worth hiding.
_MIN_FRAGMENT = 4

_Encoder = Callable[[bytes], bytes]
_B64_ENCODERS: tuple[_Encoder, ...] = (base64.b64encode, base64.urlsafe_b64encode)
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def _base64_forms(raw: bytes) -> set[str]:
    """The secret's own encodings plus the parts that survive when it sits inside longer data.

    Base64 maps 3 bytes to 4 characters, so inside a longer encoded string (for example
    ``base64("user:" + secret)``) the secret starts at one of 3 alignments. For each we encode it
    behind 0-2 filler bytes and keep only the characters that depend on the secret alone.
    """
    forms: set[str] = set()
    for encode in _B64_ENCODERS:
        padded = encode(raw).decode("ascii")
        forms.add(padded)
        forms.add(padded.rstrip("="))
        for offset, first_clean_char in ((0, 0), (1, 2), (2, 3)):
            n = offset + len(raw)
            padded = encode(b"\0" * offset + raw).decode("ascii")
            unpadded = padded.rstrip("=")
            # When the secret does not end on a 3-byte boundary, the last character also holds
            # bits of whatever byte follows it, so it is not stable...
            end = len(unpadded) - (1 if n % 3 else 0)
            # ...unless the secret ends the data, as in base64("user:" + secret).
            for fragment in (unpadded[first_clean_char:end], padded[first_clean_char:]):
                if len(fragment) >= _MIN_FRAGMENT:
                    forms.add(fragment)
                    forms.add(fragment.rstrip("="))
    return forms


def secret_variants(secret: str) -> set[str]:
    """Every literal string that reveals ``secret`` and should be masked."""
    parts = {secret}
    if "\n" in secret:
        parts.update(line.strip() for line in secret.splitlines())
    variants: set[str] = set()
    for part in parts:
        if len(part) < MIN_SECRET_LENGTH:
            continue
        variants.add(part)
        variants |= _base64_forms(part.encode("utf-8"))
        for encoded in (quote(part, safe=""), quote_plus(part)):
            variants.add(encoded)
            variants.add(_PERCENT_ESCAPE.sub(lambda m: m.group(0).lower(), encoded))
        variants.add(json.dumps(part)[1:-1])
        variants.add(json.dumps(part, ensure_ascii=False)[1:-1])
    return {v for v in variants if len(v) >= MIN_SECRET_LENGTH}


_Trie = dict[str, "_Trie"]


def _trie_regex(patterns: Iterable[str]) -> str:
    """One regex for all patterns, factored by common prefix.

    Python's ``re`` tries the branches of an alternation one by one at every position, so a flat
    ``a|b|c...`` of a few hundred variants is 20x slower than this form, where each position
    needs at most one branch per distinct next character. Optional suffixes are greedy, so the
    longest pattern that matches at a position wins.
    """
    root: _Trie = {}
    for pattern in patterns:
        node = root
        for char in pattern:
            node = node.setdefault(char, {})
        node[""] = {}  # a pattern ends here

    def build(node: _Trie) -> str:
        literal = []
        while len(node) == 1 and "" not in node:
            ((char, node),) = node.items()
            literal.append(char)
        out = re.escape("".join(literal))
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return out
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return out + (f"(?:{body})?" if "" in node else body)

    return build(root)


class SecretMasker:
    """Replaces every known secret, in any of its encoded forms, with ``***``.

    Where two secrets overlap in the text, the union of both is masked, so no tail of either is
    left visible. ``mask`` may be called from several threads while ``add`` is called.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._patterns: set[str] = set()
        self._regex: re.Pattern[str] | None = None
        self._stale = False
        for secret in secrets:
            self._patterns |= secret_variants(secret)
        self._compile()

    def add(self, secret: str) -> None:
        """Start masking one more secret (for example one a step created)."""
        with self._lock:
            new = secret_variants(secret) - self._patterns
            if new:
                self._patterns |= new
                self._stale = True  # compiled on the next mask(), so adding many is cheap

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def _compile(self) -> None:
        self._stale = False
        if not self._patterns:
            self._regex = None
            return
        try:
            self._regex = re.compile(_trie_regex(self._patterns))
        except RecursionError:  # absurdly deep nesting of patterns: slower but equivalent
            ordered = sorted(self._patterns, key=lambda p: (-len(p), p))
            self._regex = re.compile("|".join(re.escape(p) for p in ordered))

    def mask(self, text: str) -> str:
        if self._stale:
            with self._lock:
                if self._stale:
                    self._compile()
        regex = self._regex
        if regex is None:
            return text
        match = regex.search(text)
        if match is None:
            return text
        spans: list[list[int]] = []
        while match is not None:
            start, end = match.span()
            if spans and start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
            # Search again from the next character, not from the end of the match, so a second
            # secret overlapping this one is found and merged instead of leaving its tail visible.
            match = regex.search(text, start + 1)
        out: list[str] = []
        last = 0
        for start, end in spans:
            out.append(text[last:start])
            out.append(MASK)
            last = end
        out.append(text[last:])
        return "".join(out)
