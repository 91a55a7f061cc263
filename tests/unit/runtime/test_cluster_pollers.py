"""engine/runtime/cluster.py: a poller (file, SFTP) runs only while this node holds its lease, and
what status and the API show of who holds what."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet import defer, task

from engine.connectors.file.source import FileSource
from engine.connectors.sftp.source import SftpSource
from engine.runtime.cluster import Cluster, channel_holders, holders, poller_resource


class Poller:
    leased = True

    def __init__(self, fail: bool = False) -> None:
        self.started = self.stopped = 0
        self.fail = fail

    def start(self):
        self.started += 1
        if self.fail:
            raise ValueError("inbox missing")

    def stop(self):
        self.stopped += 1
        return defer.succeed(None)


def cluster() -> Cluster:
    return Cluster(SimpleNamespace(store=None), "a", 3.0, task.Clock())


def test_file_and_sftp_sources_are_pollers_under_a_lease():
    assert FileSource.leased and SftpSource.leased


def test_a_poller_runs_only_while_its_lease_is_held_and_stops_when_lost():
    node, poller = cluster(), Poller()
    node.run_source("inbox", poller)
    assert poller.started == 0 and poller_resource("inbox") in node._wanted()   # asked for, not held yet
    node.held = {poller_resource("inbox"): 1}
    node._activate(poller_resource("inbox"))
    assert poller.started == 1 and node.running_here() == ["poller:inbox"]
    node.run_source("inbox", poller)          # a resume: not started twice
    assert poller.started == 1
    node._deactivate(poller_resource("inbox"))   # the lease went to another node
    assert poller.stopped == 1 and node.running_here() == []


def test_a_stopped_channel_gives_its_poller_lease_up_and_a_reload_swaps_the_poller():
    node, old, new = cluster(), Poller(), Poller()
    node.held = {"poller:inbox": 3}
    node.run_source("inbox", old)
    assert old.started == 1
    node.run_source("inbox", new)             # a live reload rebuilt the source
    assert (old.stopped, new.started) == (1, 1)
    node.drop_source("inbox", new)
    assert new.stopped == 1 and "poller:inbox" not in node._wanted()


def test_a_poller_that_fails_to_start_is_reported_and_tried_again_at_the_next_activation():
    node, poller = cluster(), Poller(fail=True)
    node.held = {"poller:inbox": 1}
    node.run_source("inbox", poller)
    assert poller.started == 1 and node.running_here() == []
    poller.fail = False
    node._activate("poller:inbox")
    assert poller.started == 2 and node.running_here() == ["poller:inbox"]


def test_who_holds_what_per_channel():
    found = holders([{"name": "a", "holds": ["poller:inbox", "retention"]}, {"name": "b", "holds": ["queue:inbox/ehr"]}])
    assert found == {"poller:inbox": "a", "retention": "a", "queue:inbox/ehr": "b"}
    assert channel_holders(found, "inbox", ["ehr", "lab"], polled=True) == {
        "poller:inbox": "a", "queue:inbox/ehr": "b", "queue:inbox/lab": None}
    assert channel_holders(found, "adt", ["ehr"], polled=False) == {"queue:adt/ehr": None}
