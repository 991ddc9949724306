"""The signing API's HTTP server: waitress, with limits so that a slow or idle client blocks no one.

waitress closes a connection only after ``channel_timeout`` of silence and stops accepting once
``connection_limit`` connections are open: a hundred clients that send half a request head, or
trickle one byte of it now and then, would hold every slot and the box would answer nobody.
waitress has neither a header timeout nor a per-peer cap, so this module adds both:

* **header timeout**: a request head must be complete within ``header_timeout`` seconds of its
  first byte (of the accept, for a connection's first request), however slowly it trickles;
* **per-peer cap**: one address holds at most ``peer_connection_limit`` open connections; one
  more is closed as soon as it is accepted. ``uncapped_peers`` (by default the box itself: its
  nginx front, which caps per client on its own, and health checks) are not counted.

Both are checked by the server's maintenance pass, which runs every second.

With several worker processes (firmware/workers.py) the supervising parent binds the listening
sockets once (`bind`) and every worker serves them (`serve`). The limits stay box-wide: each
worker enforces its share (`_share`), since the counts of open connections are each process's
own. A share is rounded down, so a peer whose connections happen to land on one worker is
refused a little early rather than the box holding more than the setting says.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import socket
import time
from collections import Counter
from typing import Any
from wsgiref.types import WSGIApplication

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from .config import ApiSettings

__all__ = ["ServingError", "bind", "serve"]


class ServingError(RuntimeError):
    """The API could not listen where it was told to."""

log = logging.getLogger(__name__)

_CLEANUP_INTERVAL_S = 1  # how often idle, slow and refused connections are dealt with


class _Channel(HTTPChannel):
    """A connection that remembers since when it has been waiting for a complete request head."""

    def __init__(self, server: TcpWSGIServer, sock: socket.socket, addr: tuple[str, int], adj: Adjustments,
                 map: dict[int, Any] | None = None) -> None:
        super().__init__(server, sock, addr, adj, map)
        self.head_started: float | None = self.creation_time  # the first head is due from the accept

    def received(self, data: bytes) -> bool:
        arrived = time.time()
        result: bool = super().received(data)
        if self.request is None or self.request.headers_finished:
            self.head_started = None  # no head in progress: channel_timeout governs the silence
        elif self.head_started is None:
            self.head_started = arrived  # the first byte of the next request's head
        return result


class _GuardedServer(TcpWSGIServer):
    channel_class = _Channel

    def __init__(self, application: WSGIApplication, settings: ApiSettings, **kw: Any) -> None:
        self.settings = settings
        self.uncapped = [ipaddress.ip_network(p, strict=False) for p in settings.uncapped_peers]
        self.refused: Counter[str] = Counter()  # since the last maintenance pass, logged there
        super().__init__(application, **kw)

    def accept(self) -> tuple[socket.socket, tuple[str, int]] | None:
        pair: tuple[socket.socket, tuple[str, int]] | None = super().accept()
        if pair is not None and self._over_peer_cap(pair[1][0]):
            pair[0].close()
            self.refused[pair[1][0]] += 1
            return None  # waitress's handle_accept makes no channel for it
        return pair

    def _over_peer_cap(self, peer: str) -> bool:
        address = ipaddress.ip_address(peer.split("%")[0])
        if any(address in network for network in self.uncapped):
            return False
        held = sum(1 for c in self._map.values() if isinstance(c, HTTPChannel) and c.addr[0] == peer)
        return held >= self.settings.peer_connection_limit

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # waitress: channel_timeout of silence
        cutoff = now - self.settings.header_timeout
        slow = [c for c in self.active_channels.values()
                if c.head_started is not None and c.head_started < cutoff and not c.requests]
        for channel in slow:
            channel.will_close = True
        if slow:
            log.warning("closed %d connection(s) whose request head took over %g s: %s", len(slow),
                        self.settings.header_timeout, ", ".join(sorted({c.addr[0] for c in slow})))
        for peer, count in self.refused.items():
            log.warning("refused %d connection(s) from %s: it holds %d already (peer_connection_limit)",
                        count, peer, self.settings.peer_connection_limit)
        self.refused.clear()


def bind(host: str, port: int) -> list[socket.socket]:
    """The API's sockets, bound to every address ``host`` resolves to (as waitress would) but not yet
    listening: the first worker to serve them makes them listen, so that until a worker is ready
    a client is refused at once instead of waiting in the backlog for a box that is starting."""
    adj = Adjustments(host=host, port=port)
    sockets: list[socket.socket] = []
    try:
        for family, socktype, proto, address in adj.listen:
            sock = socket.socket(family, socktype, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServingError(f"port {port} on {host} is in use by another program; free it or set [api] port") from exc
        raise
    return sockets


def _share(limit: int, workers: int) -> int:
    return max(1, limit // workers)


def serve(app: WSGIApplication, settings: ApiSettings, sockets: list[socket.socket]) -> None:
    """Serve ``app`` on ``sockets`` (from `bind`, maybe in another process) until SIGTERM or Ctrl-C,
    as one of ``settings.workers`` processes."""
    settings = dataclasses.replace(
        settings, connection_limit=_share(settings.connection_limit, settings.workers),
        peer_connection_limit=_share(settings.peer_connection_limit, settings.workers))
    adj = Adjustments(
        sockets=sockets, threads=settings.threads, ident="esignbox",
        max_request_body_size=settings.max_request_bytes,
        connection_limit=settings.connection_limit, channel_timeout=settings.channel_timeout,
        cleanup_interval=_CLEANUP_INTERVAL_S, asyncore_use_poll=True,  # poll: no FD_SETSIZE ceiling
        # X-Forwarded-For reaches the app, which alone decides whom to believe ([api] trusted_proxies,
        # firmware/api/client_ip.py): waitress would drop it, and trusts one proxy address at most.
        clear_untrusted_proxy_headers=False,
    )
    socket_map: dict[int, Any] = {}
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    servers = [_GuardedServer(app, settings, map=socket_map, dispatcher=dispatcher, adj=adj, _sock=sock,
                              bind_socket=False, sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))
               for sock in sockets]
    for server in servers:
        log.info("Serving on http://%s:%s", server.effective_host, server.effective_port)  # as waitress says it
    servers[0].run()  # one loop over the shared map serves every listening address
