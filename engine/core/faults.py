"""Fault injection for the crash tests: kill the daemon at named points.  OFF unless armed.

Why: "an ACKed message survives ``kill -9`` at any moment" (DESIGN §5) is only believable if the
suite kills the daemon at the moments that matter, not only at random ones.  A random SIGKILL
rarely lands in a window a few microseconds wide, so the windows are named and the daemon kills
itself there when told to.

Armed by one environment variable, read once at import::

    SWITCHBOARD_FAULTS="kill_after_commit_before_ack:0.05,kill_after_downstream_ack_before_sent:@3"

``NAME:P`` kills with probability P (0 < P <= 1) each time the point is passed; ``NAME:@N`` kills
the Nth time it is passed (deterministic).  An unknown name or a bad value stops the daemon at
start (a misspelt fault would silently test nothing).  When armed, a warning saying so goes to
stderr at start, and one line naming the point goes to stderr just before each kill, so a test
can tell an injected death from any other.

Points (see the call sites):
  kill_after_commit_before_ack          engine/core/channel.py ``_stored``: the message, its outcome and
                                        its deliveries are committed; the sender has no ACK yet.
  kill_after_commit_before_queueing     engine/core/channel.py ``_after_commit``: committed, before
                                        the in-memory destination queues are fed.  The delivery rows
                                        commit with the message and the ACK goes out after the
                                        queues are fed, so this point is also before the ACK.  It is
                                        also passed when recovery or replay record an outcome.
  kill_after_downstream_ack_before_sent engine/core/queue.py ``_sent``: the peer has ACKed, SENT is not
                                        yet recorded, so the message is sent again after restart.

Cost when off: ``point`` is one call and one test of a module-level flag.
"""

from __future__ import annotations

import os
import random
import signal

ENV = "SWITCHBOARD_FAULTS"
POINTS = frozenset({
    "kill_after_commit_before_ack",
    "kill_after_commit_before_queueing",
    "kill_after_downstream_ack_before_sent",
})

ARMED = False
_rules: dict[str, tuple[str, float]] = {}   # name -> ("p", probability) | ("at", n)
_passes: dict[str, int] = {}


def parse(spec: str) -> dict[str, tuple[str, float]]:
    """``"name:0.1,other:@3"`` -> rules; ValueError naming the bad item."""
    rules: dict[str, tuple[str, float]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, value = item.partition(":")
        name, value = name.strip(), value.strip()
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown fault point {name!r}; known: {', '.join(sorted(POINTS))}")
        if not sep or not value:
            raise ValueError(f"{ENV}: {name} needs a value: {name}:0.05 (probability) or {name}:@3 (Nth pass)")
        try:
            if value.startswith("@"):
                n = int(value[1:])
                if n < 1:
                    raise ValueError
                rules[name] = ("at", n)
            else:
                p = float(value)
                if not 0 < p <= 1:
                    raise ValueError
                rules[name] = ("p", p)
        except ValueError:
            raise ValueError(f"{ENV}: bad value {value!r} for {name}: a probability in (0, 1] or @N") from None
    return rules


def arm(spec: str | None) -> None:
    """Replace the armed rules (empty or None disarms).  Called once at import from the environment;
    unit tests call it directly."""
    global ARMED
    _rules.clear()
    _passes.clear()
    _rules.update(parse(spec or ""))
    ARMED = bool(_rules)
    if ARMED:
        _say(f"switchboard: FAULT INJECTION ARMED ({ENV}={spec}); never set this in production\n")


def point(name: str) -> None:
    """Pass the named point: kill this process with SIGKILL if an armed rule says so."""
    if not ARMED:
        return
    rule = _rules.get(name)
    if rule is None:
        return
    kind, value = rule
    count = _passes[name] = _passes.get(name, 0) + 1
    if (kind == "at" and count == value) or (kind == "p" and random.random() < value):
        _say(f"switchboard: fault injection: SIGKILL at {name} (pass {count})\n")
        os.kill(os.getpid(), signal.SIGKILL)


def _say(text: str) -> None:
    try:
        os.write(2, text.encode())  # unbuffered: the line must be out before the kill
    except OSError:
        pass


arm(os.environ.get(ENV))
