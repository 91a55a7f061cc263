"""Channel to channel: ``[[destination]] type = "channel"`` feeds another channel's source.

The receiving channel stores the message itself (its own id, dedupe, ACK rules), so the hand-over
is as durable as any other delivery: SENT only once the other channel has committed it.
``[source] type = "channel"`` is the receiving end; it listens on nothing.
"""

from __future__ import annotations

from twisted.internet import defer

from engine.core.contracts import SendResult, TransientError
from engine.hookspecs import hookimpl
from engine.config.schema import OptionSpec


class ChannelSource:
    type_name = "channel"
    option_schema: dict = {}
    default_inbound = "hl7"

    def __init__(self, channel_config, sink, reactor) -> None:
        self.sink = sink

    def retarget(self, sink) -> None:
        """What arrives from now on goes to ``sink`` (live reload)."""
        self.sink = sink

    def start(self):
        return None

    def stop(self):
        return None


class ChannelDestination:
    type_name = "channel"
    option_schema = {"channel": OptionSpec("str", required=True)}

    def __init__(self, config, context, reactor) -> None:
        self.target = config.options["channel"]
        self.context = context

    @defer.inlineCallbacks
    def send(self, delivery):
        channel = self.context.find_channel(self.target)
        if channel is None:
            raise TransientError(f"channel {self.target!r} is not running")
        receipt = yield channel.receive(delivery.body)
        if not receipt.ok:
            raise TransientError(f"channel {self.target!r} did not take the message")
        return SendResult(f"stored as message {receipt.message_id} in {self.target}")


@hookimpl
def register_sources():
    return [ChannelSource]


@hookimpl
def register_destinations():
    return [ChannelDestination]
