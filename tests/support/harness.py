"""The engine in-process: the same service tree ``switchboard run`` starts (engine/app.py), built in
the test's own reactor, so services, the admin side and the connectors get fast tests that still
exercise real parts (a real store, real pipelines) without a subprocess per test.

Sources are driven through their Twisted factories with ``StringTransport`` (no socket); timing
that matters comes from ``task.Clock`` where a part takes a clock.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from engine.app import build
from engine.config.loading import load
from engine.connectors.mllp.framing import FrameDecoder, frame

CONFIG = """[engine]
channels_dir = "channels"
transforms_dir = "transforms"
plugins_dir = "plugins"

[store]
path = "var/store.db"
retention = "0"

[admin]
listen = "127.0.0.1:0"
token = "test-token"
"""


class Harness:
    """``await Harness.start(tmp_path, {"name": toml})``; ``await harness.stop()``."""

    def __init__(self, root, engine) -> None:
        self.root, self.engine = root, engine

    @classmethod
    async def start(cls, directory: Path, channels: dict[str, str], *, config: str = CONFIG) -> "Harness":
        for name in ("channels", "transforms", "plugins"):
            (directory / name).mkdir(exist_ok=True)
        (directory / "config.toml").write_text(config)
        for name, text in channels.items():
            (directory / "channels" / f"{name}.toml").write_text(text)
        loaded, registry = load(directory / "config.toml")
        from twisted.internet import reactor

        root, engine = build(loaded, reactor=reactor, registry=registry)
        root.startService()
        await engine.started
        return cls(root, engine)

    async def stop(self) -> None:
        await self.root.stopService()

    def connect(self, channel: str) -> "MllpSession":
        """A connection to an MLLP source's factory over a ``StringTransport``."""
        factory = self.engine.channel_services[channel].source.factory
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        protocol.makeConnection(transport)
        return MllpSession(protocol, transport)


class MllpSession:
    def __init__(self, protocol, transport: StringTransport) -> None:
        self.protocol, self.transport = protocol, transport
        self.decoder = FrameDecoder(1 << 20)

    def send(self, text: str) -> None:
        self.protocol.dataReceived(frame(text.encode()))

    async def answers(self, count: int, *, within: float = 5.0) -> list[str]:
        """The first ``count`` answer frames, waiting (bounded) for the store's commits."""
        from twisted.internet import reactor, task

        seen: list[str] = []
        waited = 0.0
        while True:
            data = self.transport.value()
            self.transport.clear()
            seen += [e.payload.decode() for e in self.decoder.feed(data) if e.kind == "frame"]
            if len(seen) >= count or waited >= within:
                return seen
            await task.deferLater(reactor, 0.01, lambda: None)
            waited += 0.01


async def until(predicate, *, within: float = 5.0) -> bool:
    """Wait (bounded, polling every 10 ms) until ``predicate()`` is true; its last value."""
    from twisted.internet import reactor, task

    waited = 0.0
    while not predicate() and waited < within:
        await task.deferLater(reactor, 0.01, lambda: None)
        waited += 0.01
    return bool(predicate())
