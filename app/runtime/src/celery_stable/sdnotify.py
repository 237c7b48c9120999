"""A minimal sd_notify client (the protocol is one datagram on a unix socket)."""

from __future__ import annotations

import socket


class Notifier:
    """Sends ``KEY=value`` lines to ``$NOTIFY_SOCKET``; does nothing outside systemd."""

    def __init__(self, address: str | None) -> None:
        # A leading "@" names a socket in the abstract namespace (systemd's own convention).
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None

    def send(self, *lines: str) -> bool:
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall("\n".join(lines).encode())
        except OSError:
            # The manager may be gone or reloading; a lost STATUS line must not stop a render.
            return False
        return True
