"""A ``spaces.Text`` that admits any Unicode text a model or a database can produce, at no memory
cost per env.

The character set is the whole Basic Multilingual Plane minus surrogates (SQL rows and shell
output carry accents, CJK and box-drawing characters that the default alphanumeric set rejects).
Gymnasium's ``Text`` materialises its set per space as a frozenset, a tuple, a string and a dict
of numpy ints: about 12 MiB for this one, two spaces per env, 1.5 GB at 64 envs. ``UnicodeText``
checks membership with a range test instead, and builds those tables once per process, shared
by every space, only when something asks for them (``sample()``, ``check_env``)."""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from gymnasium import spaces

_OUTSIDE = re.compile("[\ud800-\udfff\U00010000-\U0010ffff]")  # surrogates and astral characters


@lru_cache(maxsize=1)
def _tables() -> tuple[frozenset[str], tuple[str, ...], dict[str, np.int32], str]:
    chars = tuple(chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF)
    return frozenset(chars), chars, {c: np.int32(i) for i, c in enumerate(chars)}, "".join(chars)


class UnicodeText(spaces.Text):
    def __init__(self, max_length: int = 100_000, min_length: int = 0):
        # Not Text.__init__: it would build this space's own copy of the character tables.
        if not 0 <= min_length <= max_length:
            raise ValueError(f"need 0 <= min_length <= max_length, got {min_length}, {max_length}")
        self.min_length, self.max_length = int(min_length), int(max_length)
        spaces.Space.__init__(self, dtype=str)

    # What Text's methods read, from the shared tables.
    _char_set = property(lambda self: _tables()[0])
    _char_list = property(lambda self: _tables()[1])
    _char_index = property(lambda self: _tables()[2])
    _char_str = property(lambda self: _tables()[3])

    def contains(self, x) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length and not _OUTSIDE.search(x)

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length}, charset=BMP without surrogates)"


def text_space(max_length: int = 100_000) -> spaces.Text:
    return UnicodeText(max_length)
