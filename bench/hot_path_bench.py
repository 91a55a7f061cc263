"""The reactor's per-message Python, piece by piece, in-process: CPU µs per call (issue 22's cuts).

``python bench/hot_path_bench.py`` times with ``time.process_time`` (CPU, not the wall clock: a
shared machine's neighbours move the wall clock far more), min of 9 repeats of 20,000 calls.  Run
it with two trees' venvs in turn to compare them (it adapts to an older ``Message`` without
``msh=``).  ``--prototypes`` also times changes proposed for code outside this session's files,
each against what it would replace: ``answer_frame`` without ``@inlineCallbacks``, ``hl7_now``
once a second, prometheus label children kept.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
import timeit
from datetime import datetime
from pathlib import Path

try:  # the engine of the venv running this (an editable install): so one script times either tree
    import engine  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import pluggy  # noqa: E402
from twisted.internet import defer  # noqa: E402

from engine import hookspecs  # noqa: E402
from engine.core.events import Events  # noqa: E402
from engine.core.message import Message  # noqa: E402
from engine.core.pipeline import ExpressionFilter  # noqa: E402
from engine.core.template_helpers import FILTERS, GLOBALS  # noqa: E402
from engine.core.templates import Templates  # noqa: E402
from engine.hl7.acceptance import check_hl7  # noqa: E402
from engine.hl7.ack import build_ack  # noqa: E402
from engine.hl7.charset import decode_frame  # noqa: E402
from engine.hl7.encoding import normalize_segments  # noqa: E402
from engine.hl7.msh import peek_msh  # noqa: E402

FRAME = ("MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20240101120000||ADT^A08^ADT_A01|B1-1-abc|P|2.5|||AL|NE\r"
         "EVN|A08|20240101120000\rPID|1||123456^^^HOSP^MR||DOE^JOHN^Q||19700101|M|||1 MAIN ST^^TOWN^ST^12345"
         "||555-1234\rPV1|1|I|WARD^101^A||||1234^DOC^A|||MED||||1|||1234^DOC^A|IN||||||||||||||||||||||||"
         "20240101120000\r" + "OBX|1|ST|CODE^TEXT||" + "X" * 700 + "\r").encode()
TAKES_MSH = "msh" in inspect.signature(Message.__init__).parameters


# The e2e scenario's transform (bench/scenarios.py E2E_CHANNEL): six fields, four escaped.
E2E_TRANSFORM = '''MSH|^~\\&|SWB|HOSP|AGENCY|AGENCY|{{ hl7_now() }}||ADT^A08|{{ msg['MSH.10'] }}|P|2.5
PID|1||{{ msg['PID.3.1'] | hl7_escape }}||{{ msg['PID.5.1'] | hl7_escape }}^{{ msg['PID.5.2'] | hl7_escape }}
PV1|1|{{ msg['PV1.2'] | hl7_escape }}'''


def ingest_path() -> None:
    """decode -> normalize -> check_hl7 -> Message -> the store's columns -> AA (what the reactor
    does per ingested message besides the store call, the events and the Deferreds)."""
    text, _original = decode_frame(FRAME)
    text = normalize_segments(text)
    msh, _problem = check_hl7(text)
    if TAKES_MSH:
        Message(text, "hl7", id=1, channel="c", msh=msh)  # a channel with no stage: no parse
    else:
        Message(text, "hl7", id=1, channel="c").view  # the pipeline's context parsed it
    (msh.message_type, msh.control_id, msh.sender)
    build_ack(msh, "AA")


def timed(fn, number: int = 20000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=9, timer=time.process_time)) / number * 1e6


def cases() -> dict:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    events = Events(manager.hook)
    templates = Templates(Path(os.path.dirname(os.path.abspath(__file__))), filters={}, globals={})
    flt = ExpressionFilter(templates, "msg['MSH.9.1'] == 'ADT'", "f")
    context = {"msg": Message(FRAME.decode()).view, "raw": "", "meta": {}, "channel": "c", "id": 1,
               "received_at": None}
    text = FRAME.decode()
    helpers = Templates(None, filters=dict(FILTERS), globals=dict(GLOBALS))
    transform = helpers.from_string(E2E_TRANSFORM, "transform")
    return {"ingest reactor path (decode .. AA, no store)": ingest_path,
            "transform render (scenarios.py e2e template, view already indexed)": lambda: transform.render(context),
            "Events.emit, no plugin, no listener": lambda: events.emit("received", "chan", 1),
            "filter when msg['MSH.9.1'] == 'ADT'": lambda: flt.check(None, context),
            "peek_msh": lambda: peek_msh(text)}


def prototypes() -> dict:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from engine.core import ingest
    from engine.core.contracts import Receipt
    from engine.core.template_helpers import hl7_now
    from engine.hl7.dates import format_hl7_datetime

    text = normalize_segments(FRAME.decode())

    class Sink:
        def receive(self, text, **kwargs):
            self.d = defer.Deferred()
            return self.d

        def note_rejected(self, reason):
            pass

    sink, receipt = Sink(), Receipt(1, True)

    def plain(sink, text, *, split_batches, original=None):
        msh, problem = check_hl7(text)
        return sink.receive(text, msh=msh, original=original).addCallback(lambda r: ingest.ack_for(msh, r))

    def answering(fn):
        def once():
            fn(sink, text, split_batches=False).addCallback(lambda answer: None)
            sink.d.callback(receipt)
        return once

    stamp = [-1, ""]

    def now_once_a_second():
        second = int(time.time())
        if stamp[0] != second:
            stamp[:] = [second, format_hl7_datetime(datetime.fromtimestamp(second).astimezone())]
        return stamp[1]

    registry = CollectorRegistry(auto_describe=False)
    counter = Counter("x_total", "x", ["channel"], registry=registry)
    histogram = Histogram("h_seconds", "h", ["channel"], registry=registry)
    child, hchild = counter.labels("chan"), histogram.labels("chan")
    return {"answer_frame (@inlineCallbacks)": answering(ingest.answer_frame),
            "answer_frame without inlineCallbacks (prototype)": answering(plain),
            "hl7_now()": hl7_now, "hl7_now once a second (prototype)": now_once_a_second,
            "counter.labels(ch).inc()": lambda: counter.labels("chan").inc(), "kept child .inc()": child.inc,
            "histogram.labels(ch).observe()": lambda: histogram.labels("chan").observe(0.001),
            "kept child .observe()": lambda: hchild.observe(0.001)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prototypes", action="store_true")
    args = parser.parse_args(argv)
    chosen = {**cases(), **(prototypes() if args.prototypes else {})}
    for name, fn in chosen.items():
        print(f"{name}: {timed(fn):.2f} µs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
