"""Which engine modules one MLLP message passes through, socket to socket, and how often the
store is visited: the "module path" of issue 13, measured rather than read off the code.

An in-process engine (the real service tree, a real store) gets one ADT on an MLLP source with an
MLLP destination to a local peer; ``sys.setprofile`` records every call that enters an ``engine.``
module, in all threads.  Printed: the distinct modules in first-seen order, the number of calls
that cross from one engine module into another (caller and callee both ours), and how many of
those calls enter the store from outside it.

    .venv/bin/python bench/message_path.py
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

from twisted.internet import defer, protocol, reactor, task

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.daemon import hl7  # noqa: E402

CHANNEL = """
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[filter]]
when = "msg['MSH.9.1'] == 'ADT'"

[[destination]]
name = "peer"
type = "mllp"
connect = "127.0.0.1:{port}"
"""


class Peer(protocol.Protocol):
    def dataReceived(self, data):
        control = data.split(b"|")[9]
        self.transport.write(b"\x0bMSH|^~\\&|P|P|S|S|20240101||ACK|1|P|2.5\rMSA|AA|" + control + b"\r\x1c\r")
        self.factory.got.callback(None)


events: list[tuple[str, str]] = []     # (caller module, called module)


def profiler(frame, event, _arg):
    if event == "call":
        module = frame.f_globals.get("__name__", "")
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back is not None else ""
        if module.startswith("engine.") and not module.startswith("engine.runtime.reload"):
            events.append((caller, module))


def store_module(name: str) -> bool:
    return name.startswith("engine.store") or name.startswith("engine.store_")


async def main():
    from support.harness import Harness

    factory = protocol.Factory.forProtocol(Peer)
    factory.got = defer.Deferred()
    peer = reactor.listenTCP(0, factory, interface="127.0.0.1")
    directory = Path(tempfile.mkdtemp())
    harness = await Harness.start(directory, {"relay": CHANNEL.format(port=peer.getHost().port)})
    session = harness.connect("relay")
    threading.setprofile(profiler)
    sys.setprofile(profiler)
    session.send(hl7("PATH-1"))
    await session.answers(1)
    await factory.got
    await task.deferLater(reactor, 0.3, lambda: None)      # the SENT record's batch
    sys.setprofile(None)
    threading.setprofile(None)
    await harness.stop()
    await peer.stopListening()
    modules, crossings, store_visits = [], 0, 0
    for caller, module in events:
        if module not in modules:
            modules.append(module)
        if caller.startswith("engine.") and caller != module:
            crossings += 1
            if store_module(module) and not store_module(caller):
                store_visits += 1
    print(f"{len(modules)} modules, {crossings} calls from one module into another, "
          f"{store_visits} visits to the store")
    for module in modules:
        print(f"  {module}")


if __name__ == "__main__":
    task.react(lambda _reactor: defer.ensureDeferred(main()))
