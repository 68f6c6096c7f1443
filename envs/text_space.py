"""A ``spaces.Text`` that admits any Unicode text a model or a database can produce."""

from functools import lru_cache

from gymnasium import spaces


@lru_cache(maxsize=1)
def _charset() -> str:
    # The whole Basic Multilingual Plane minus surrogates: SQL rows and shell output carry
    # accents, CJK and box-drawing characters that the default alphanumeric charset rejects.
    return "".join(chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF)


def text_space(max_length: int = 100_000) -> spaces.Text:
    return spaces.Text(max_length=max_length, min_length=0, charset=_charset())
