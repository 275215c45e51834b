"""Credentials inside URLs (``https://user:password@host``) never reach messages, metadata or logs.

``redact_url`` masks the userinfo of one URL; ``redact_urls`` does it for every URL in a text such
as an exception message. Both keep the scheme, host, port and path, so a message still says where.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"

# scheme://userinfo@ — userinfo is everything up to the last "@" before the host ends.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^\s/?#@]*(?:@[^\s/?#@]*)*)@")


def has_userinfo(url: str) -> bool:
    """Whether ``url`` carries a user name or password before its host."""
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:
        return "@" in url


def redact_url(url: str | None) -> str | None:
    """``url`` with any ``user:password@`` replaced by ``***@``; other URLs (and ``None``) unchanged."""
    if not url or "@" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # not parseable as a URL: mask whatever could be userinfo
        return redact_urls(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{REDACTED}@{host}"))


def redact_urls(text: str) -> str:
    """``text`` with the userinfo of every URL in it masked (for exception messages)."""
    return _USERINFO.sub(lambda match: f"{match['scheme']}{REDACTED}@", text)
