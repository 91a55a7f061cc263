"""Live reload in-process (tests/support/harness.py): the reloader only plans, ``Engine.reconfigure``
reconciles the channels by name and each changed ``ChannelService`` reconfigures itself, the same
service object staying, its listener handed over with the connection open."""

from __future__ import annotations

import pytest_twisted

from support.daemon import hl7
from support.harness import Harness, until
from unit.runtime.test_services_inprocess import CHANNEL   # an MLLP source, a file destination to {out}



async def reload(harness: Harness) -> dict:
    assert await until(lambda: harness.engine.reloader is not None)
    return await harness.engine.reloader.reload("test")


@pytest_twisted.ensureDeferred
async def test_a_changed_channel_reconfigures_itself_and_keeps_its_connection(tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    harness = await Harness.start(tmp_path, {"relay": CHANNEL.format(out=before)})
    try:
        service = harness.engine.channel_services["relay"]
        session = harness.connect("relay")
        session.send(hl7("C1"))
        assert "MSA|AA|C1" in (await session.answers(1))[0]
        (tmp_path / "channels" / "relay.toml").write_text(CHANNEL.format(out=after))

        outcome = await reload(harness)

        assert outcome["redeployed"] == ["relay"] and not outcome["added"] and not outcome["removed"]
        assert harness.engine.channel_services["relay"] is service and service.state == "started"
        assert harness.engine.channels["relay"] is service.channel
        session.send(hl7("C2"))                 # the connection opened before the reload
        assert "MSA|AA|C2" in (await session.answers(1))[0]
        assert await until(lambda: after.is_dir() and len(list(after.iterdir())) == 1)   # the new version's route
        assert await until(lambda: len(list(before.iterdir())) == 1)       # the old one's, only
        assert (await reload(harness))["unchanged"] == ["relay"]
    finally:
        await harness.stop()


@pytest_twisted.ensureDeferred
async def test_reconfigure_adds_and_removes_channels_by_name(tmp_path):
    harness = await Harness.start(tmp_path, {"old": CHANNEL.format(out=tmp_path / "a")})
    try:
        (tmp_path / "channels" / "old.toml").unlink()
        (tmp_path / "channels" / "new.toml").write_text(CHANNEL.format(out=tmp_path / "b"))

        outcome = await reload(harness)

        assert outcome["removed"] == ["old"] and outcome["added"] == ["new"]
        assert set(harness.engine.channel_services) == {"new"} == set(harness.engine.channels)
        assert [c.name for c in harness.engine.config.channels] == ["new"]
        assert harness.engine.channel_services["new"].state == "started"
        assert harness.engine.channel_services["new"].fingerprint is not None
    finally:
        await harness.stop()


@pytest_twisted.ensureDeferred
async def test_a_broken_file_keeps_the_running_version(tmp_path):
    harness = await Harness.start(tmp_path, {"relay": CHANNEL.format(out=tmp_path / "out")})
    try:
        service = harness.engine.channel_services["relay"]
        channel = service.channel
        (tmp_path / "channels" / "relay.toml").write_text("[source]\ntype = \"mllp\"\n")

        outcome = await reload(harness)

        assert outcome["kept"] == ["relay"] and not outcome["redeployed"]
        assert service.channel is channel and service.state == "started"
        assert harness.engine.reloader.problems_for("relay")
    finally:
        await harness.stop()
