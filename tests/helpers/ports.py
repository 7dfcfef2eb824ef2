"""A free TCP port on 127.0.0.1, for a server a test starts: `aimq up`'s own choice of ports (below
the kernel's ephemeral range, so no outgoing connection takes it before the server binds)."""

from __future__ import annotations

from aimq_cli.local_platform import free_port

__all__ = ["free_port"]
