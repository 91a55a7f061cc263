"""Live reload's triggers (engine/runtime/reload.py) without a daemon: which file events count, and the
debounce that turns an editor's burst of events into one reload (on task.Clock).  What a reload
does to running channels is tested through the real daemon in test_reload_e2e.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from watchdog.events import (
    DirModifiedEvent, FileClosedEvent, FileClosedNoWriteEvent, FileCreatedEvent, FileDeletedEvent, FileModifiedEvent,
    FileMovedEvent, FileOpenedEvent,
)

from engine.runtime.reload import Reloader, _Handler, relevant


class Reactor(Clock):
    def callFromThread(self, function, *args):  # noqa: N802 - Twisted's name
        function(*args)


@pytest.fixture
def reloader(tmp_path):
    settings = SimpleNamespace(channels_dir=tmp_path, transforms_dir=None, plugins_dir=None)
    engine = SimpleNamespace(reactor=Reactor(), channel_services={},
                             config=SimpleNamespace(engine=settings, path=tmp_path / "config.toml"))
    made = Reloader(engine, debounce=0.3)
    made.triggers = []
    made.reload = lambda trigger: made.triggers.append(trigger) or defer.succeed(None)
    return made


@pytest.mark.parametrize(("path", "counts"), [
    ("/srv/channels/a.toml", True), ("/srv/transforms/sub/x.j2", True), ("/srv/plugins/p.py", True),
    ("/srv/channels/.a.toml.swp", False), ("/srv/channels/a.toml~", False), ("/srv/plugins/__pycache__/p.pyc", False),
    ("/srv/channels/.#a.toml", False), ("", False),
])
def test_relevant(path, counts):
    assert relevant(path) is counts


@pytest.mark.parametrize(("event", "counts"), [
    (FileCreatedEvent("/c/a.toml"), True), (FileModifiedEvent("/c/a.toml"), True), (FileDeletedEvent("/c/a.toml"), True),
    (FileClosedEvent("/c/a.toml"), True), (FileMovedEvent("/c/.a.toml.tmp", "/c/a.toml"), True),
    (FileOpenedEvent("/c/a.toml"), False),          # the reload's own reads open files
    (FileClosedNoWriteEvent("/c/a.toml"), False), (DirModifiedEvent("/c"), False),
    (FileModifiedEvent("/c/.a.toml.swp"), False),
])
def test_which_events_schedule_a_reload(reloader, event, counts):
    _Handler(reloader).dispatch(event)
    reloader.engine.reactor.advance(1)
    assert reloader.triggers == (["file change"] if counts else [])


def test_a_burst_of_events_is_one_reload_after_the_last(reloader):
    clock = reloader.engine.reactor
    for _ in range(5):
        reloader.schedule("file change")
        clock.advance(0.2)
    assert reloader.triggers == []
    clock.advance(0.1)
    assert reloader.triggers == ["file change"]
    reloader.schedule("SIGHUP")
    clock.advance(0.3)
    assert reloader.triggers == ["file change", "SIGHUP"]


def test_no_reload_is_scheduled_once_stopping(reloader):
    reloader.stopping = True
    reloader.schedule("SIGHUP")
    reloader.engine.reactor.advance(1)
    assert reloader.triggers == []
