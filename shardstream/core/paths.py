"""Path templates (``/v3/vendors/{vendor_id}/events``) and dotted JSON paths
(``price.amount``), each parsed once when the config is loaded.

Sans-IO. A template matches request paths, extracts its parameters and
replaces one parameter's segment (a global id becomes the shard's local id);
a dotted path finds a value in nested objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}\Z")


@dataclass(frozen=True)
class DottedPath:
    """A path into nested JSON objects; parse with :meth:`parse`."""

    text: str
    parts: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "DottedPath":
        """Raise ValueError unless every part between the dots is non-empty."""
        parts = tuple(text.split("."))
        if any(not part for part in parts):
            raise ValueError(f"{text!r} is not a dotted path like 'price.amount'")
        return cls(text, parts)

    def lookup(self, obj: Any) -> Any:
        """The value at this path, or None."""
        for part in self.parts:
            if not isinstance(obj, dict):
                return None
            obj = obj.get(part)
        return obj

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class PathTemplate:
    """A route's path; a parameter is a whole segment, like ``{vendor_id}``.
    A prefix template (``/v3/reference/``, ending in '/') matches every path
    under it, however deep."""

    text: str
    params: tuple[str, ...]
    prefix: bool = field(default=False, kw_only=True)
    _regex: re.Pattern[str] = field(repr=False, compare=False)
    _index: dict[str, int] = field(repr=False, compare=False)  # param -> segment index

    @classmethod
    def parse(cls, text: str, prefix: bool = False) -> "PathTemplate":
        """Raise ValueError naming the problem."""
        if not text.startswith("/"):
            raise ValueError(f"{text!r} must start with '/'")
        if prefix and not text.endswith("/"):
            raise ValueError(f"the prefix {text!r} must end with '/'")
        params: list[str] = []
        index: dict[str, int] = {}
        parts = []
        for i, seg in enumerate(text.split("/")[1:], start=1):
            m = PARAM.match(seg)
            if m is None:
                if "{" in seg or "}" in seg:
                    raise ValueError(f"segment {seg!r}: a parameter must be a whole segment "
                                     "like {name}")
                parts.append(re.escape(seg))
                continue
            name = m.group(1)
            if name in index:
                raise ValueError(f"parameter {{{name}}} appears twice")
            params.append(name)
            index[name] = i
            parts.append(f"(?P<{name}>[^/]+)")
        # A prefix ends in '/': its last (empty) part leaves the rest open.
        regex = re.compile("^/" + "/".join(parts) + ("" if prefix else r"\Z"))
        return cls(text, tuple(params), regex, index, prefix=prefix)

    def match(self, path: str) -> dict[str, str] | None:
        """The raw (still percent-encoded) parameters, or None."""
        m = self._regex.match(path)
        return None if m is None else m.groupdict()

    def replace(self, raw_path: bytes, param: str, value: int | str) -> bytes:
        """The request path with one parameter's segment replaced (query kept)."""
        path, sep, query = raw_path.partition(b"?")
        segments = path.split(b"/")
        text = quote(str(value), safe="")
        if text in (".", ".."):  # a path segment of dots would climb the shard's tree
            text = text.replace(".", "%2E")
        segments[self._index[param]] = text.encode()
        return b"/".join(segments) + sep + query

    def __str__(self) -> str:
        return self.text
