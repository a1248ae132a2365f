"""The one character policy for every user string that reaches a generated file. Pure.

A string from a Cluster travels as YAML (the Secret manifest `files` prints, read by PyYAML or
kubectl), as JSON, and then through fluent-bit's classic or YAML parser. YAML 1.1 reads U+0085
(NEL), U+2028 and U+2029 as line breaks, fluent-bit splits lines on LF and CR, C reads NUL as the
end, and YAML refuses most other control characters. Only what every layer reads as the same
single-line text is accepted: printable characters of YAML 1.2 minus those line breaks, the
byte-order mark, and tabs.
"""

from __future__ import annotations

import re

# Everything outside: space..'~', U+00A0..U+D7FF, U+E000..U+FFFD, the supplementary planes; and
# inside those ranges U+2028, U+2029 (line and paragraph separators) and U+FEFF (byte-order mark).
# That leaves out every C0 and C1 control (LF, CR, VT, FF, NUL, TAB, NEL, ...), DEL and surrogates.
_UNSAFE = re.compile("[^\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|[\u2028\u2029\ufeff]")

UNSAFE_DETAIL = ("must not contain line breaks, tabs or other control characters (U+0000-U+001F, "
                 "U+007F-U+009F, U+2028, U+2029, U+FEFF): a parser on the way would start a new line there")


def has_unsafe_char(value: str) -> bool:
    """Whether any layer between the Cluster and fluent-bit may read `value` as more than one line."""
    return _UNSAFE.search(value) is not None
