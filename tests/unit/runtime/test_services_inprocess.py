"""The engine in-process (tests/support/harness.py): start, an MLLP message through a channel to
a file destination without a socket, pause/start/stop through the service, and a graceful stop."""

from __future__ import annotations

import pytest
import pytest_twisted

from engine.runtime.services import ChannelStateError
from support.daemon import hl7
from support.harness import Harness, until

CHANNEL = """
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[destination]]
name = "out"
type = "file"
directory = "{out}"
filename = "{{{{ id }}}}.hl7"
"""


@pytest_twisted.ensureDeferred
async def test_a_message_is_stored_acked_and_written_in_process(tmp_path):
    out = tmp_path / "out"
    harness = await Harness.start(tmp_path, {"relay": CHANNEL.format(out=out)})
    try:
        session = harness.connect("relay")
        session.send(hl7("C1"))
        [ack] = await session.answers(1)
        assert "MSA|AA|C1" in ack
        assert await until(lambda: len(list(out.glob("*.hl7"))) == 1)
        [written] = out.glob("*.hl7")
        assert written.read_text().startswith("MSH|") and "C1" in written.read_text()
        assert await until(lambda: harness.engine.store.channel_counts()["relay"]["sent"] == 1)
    finally:
        await harness.stop()


@pytest_twisted.ensureDeferred
async def test_pause_start_and_stop_change_the_channel_state(tmp_path):
    harness = await Harness.start(tmp_path, {"relay": CHANNEL.format(out=tmp_path / "out")})
    try:
        service = harness.engine.channel_services["relay"]
        assert service.state == "started"
        await service.change("pause")
        assert service.state == "paused"
        await service.change("stop")
        assert service.state == "stopped"
        with pytest.raises(ChannelStateError):
            await service.change("pause")
        await service.change("start")
        assert service.state == "started"
    finally:
        await harness.stop()
    assert harness.engine.channel_services["relay"].state == "stopped"
