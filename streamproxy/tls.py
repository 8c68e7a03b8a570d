"""Direct TLS for the listening socket (``--tls-cert`` / ``--tls-key``)."""

from __future__ import annotations

import ssl

from .config import ConfigError

__all__ = ["server_context"]


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """Return a server context for ``cert`` and ``key``: TLS 1.2 or newer, Python's secure defaults."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        raise ConfigError(f"--tls-cert/--tls-key: cannot load the certificate and key ({reason})") from None
    return context
