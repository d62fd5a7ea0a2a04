"""The key that guards Triton's model-control APIs (load, unload, repository index), trace and logging settings.

Inference, health, metadata and statistics stay open; changing what is served needs this key. `hybridrec serve`
starts tritonserver with ``--http-restricted-api`` / ``--grpc-restricted-protocol`` set to it, and the launcher,
the client's ``load_model``/``unload_model`` and ``hybridrec catalog add`` send it as the ``hybridrec-admin-key``
header. The key comes from ``$HYBRIDREC_ADMIN_KEY``, else from a file (default
``$XDG_CONFIG_HOME/hybridrec/admin-key``, i.e. ``~/.config/hybridrec/admin-key``), generated (0600) when absent.
Standard library only: the client imports it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

HEADER = "hybridrec-admin-key"  # lowercase: gRPC metadata keys must be
ENV = "HYBRIDREC_ADMIN_KEY"
ENV_FILE = "HYBRIDREC_ADMIN_KEY_FILE"
# The APIs that change what the server serves or where it writes: closed without the key.
RESTRICTED = ("model-repository", "shared-memory", "trace", "logging")


def default_key_file() -> Path:
    if os.environ.get(ENV_FILE):
        return Path(os.environ[ENV_FILE]).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "hybridrec" / "admin-key"


def read_key(path: Path | None = None) -> str | None:
    """The key from the environment or the file; None when neither has one (nothing is created)."""
    if os.environ.get(ENV):
        return os.environ[ENV].strip()
    path = default_key_file() if path is None else path
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        return None
    return key or None


def ensure_key(path: Path | None = None) -> str:
    """The key (environment, else file); a new random one is written to the file (0600) when there is none."""
    key = read_key(path)
    if key:
        return key
    path = default_key_file() if path is None else path
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def check_key(key: str) -> str:
    """Triton's flag syntax (apis:header=value) and HTTP headers cannot carry every character."""
    if not key or any(c in key for c in " \t\r\n,:=") or not key.isprintable():
        raise ValueError("the admin key must be non-empty printable text without spaces, ',', ':' or '='")
    return key


def server_args(key: str) -> list[str]:
    apis = ",".join(RESTRICTED)
    return [
        f"--http-restricted-api={apis}:{HEADER}={check_key(key)}",
        f"--grpc-restricted-protocol={apis}:{HEADER}={key}",
    ]


def headers(key: str | None, protocol: str = "http") -> dict[str, str]:
    """The request headers that carry ``key`` (Triton's gRPC frontend reads them with a fixed prefix)."""
    if not key:
        return {}
    return {("triton-grpc-protocol-" + HEADER) if protocol == "grpc" else HEADER: key}
