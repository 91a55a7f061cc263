"""Live reload: channel, template and plugin files edited while the daemon runs are validated and
redeployed one channel at a time, without a restart and without dropping anyone's connection.

Triggers: a watchdog observer on ``channels_dir``, ``transforms_dir`` (recursive) and
``plugins_dir`` (created, modified, deleted, moved and closed-after-write events only: the
reload's own reads open files too), ``SIGHUP``, and ``POST /api/reload``.  Triggers are debounced
(``DEBOUNCE``: an editor's save is several events) and reloads run one at a time.

A reload (``engine.runtime.reload_plan.prepare``, in a thread) loads every file again and validates it as
``switchboard check`` does.  Then, in the reactor:

* ``config.toml`` itself has a problem, or a plugin does not import: nothing changes.
* A channel whose file has a problem keeps running its previous version.  Its problems (file, key,
  reason: never message content) are logged, shown by ``GET /api/channels`` (``problems``), the
  dashboard and ``switchboard status``; they are cleared by the next good reload.
* A channel whose config, template files and plugins are unchanged is not touched.
* A changed channel reconfigures itself (``ChannelService.reconfigure``, called by
  ``Engine.reconfigure``): a new ``Channel`` and pipeline take over as its source's sink.  The source is kept as it is when its options did not change; a listener
  whose address and TLS did not change is handed over to the new source, open connections
  included; only a new address is bound afresh.  A destination whose config did not change keeps
  its queue (and its connection); a changed one gets a new queue once the old one has the
  outcome of its send in progress, and the new queue loads the QUEUED rows from the store, so
  nothing queued is lost or sent twice.
* A channel whose file is gone (or says ``enabled = false``) stops; its stored messages stay.
* A new channel file starts a new channel.

Changes to ``[engine]``, ``[store]``, ``[admin]`` or ``[alerts]`` in ``config.toml`` take effect at
the next restart (a warning says so).  The outcome of the latest reload is kept in memory and in
``reload.json`` beside the store (written atomically, removed at a clean stop) so that
``switchboard status``, which reads the store's directory and not the daemon, can show it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from twisted.internet import defer, threads
from twisted.logger import Logger
from watchdog.events import FileSystemEventHandler

from engine.runtime.reload_plan import channel_fingerprint, label, plugins_fingerprint, prepare
from engine.store.sqlite.schema import iso_utc

log = Logger(namespace="switchboard.reload")

DEBOUNCE = 0.3
STATE_FILE = "reload.json"
IGNORED_SUFFIXES = ("~", ".swp", ".swx", ".tmp", ".pyc")
EVENTS = frozenset({"created", "modified", "deleted", "moved", "closed"})


def state_file(config) -> Path:
    return Path(config.store.path).parent / STATE_FILE


def read_state(config) -> dict | None:
    """What the running daemon last reported (``switchboard status``); None when it is not running
    (no file, or one left by a daemon that was killed: its pid is gone)."""
    try:
        state = json.loads(state_file(config).read_text(encoding="utf-8"))
        os.kill(int(state["pid"]), 0)
    except ProcessLookupError:
        return None
    except PermissionError:      # alive, under another user
        return state
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if isinstance(state, dict) else None


def relevant(path: str) -> bool:
    """An event on this path may change the configuration (editor and bytecode files do not)."""
    if not path:
        return False
    parts = Path(path).parts
    name = parts[-1] if parts else ""
    return not (name.startswith(".") or name.endswith(IGNORED_SUFFIXES) or "__pycache__" in parts)


class Reloader:
    def __init__(self, engine, *, debounce: float = DEBOUNCE) -> None:
        self.engine = engine
        self.reactor = engine.reactor
        self.debounce = debounce
        self.lock = defer.DeferredLock()
        self.pending = None
        self.observer = None
        self.previous_sighup = None
        self.stopping = False
        settings = engine.config.engine
        self.plugins = plugins_fingerprint(settings.plugins_dir)
        for service in engine.channel_services.values():
            service.fingerprint = channel_fingerprint(service.config, settings.transforms_dir, self.plugins,
                                                      settings.lookups_dir)
        self.problems: list[dict] = []
        self.last: dict = {"at": None, "trigger": None, "applied": True, "problems": []}

    # -- life -------------------------------------------------------------------------------
    def start(self) -> "Reloader":
        self.observer = self._watch()
        try:
            self.previous_sighup = signal.signal(signal.SIGHUP, self._on_sighup)
        except (ValueError, AttributeError, OSError):   # not the main thread (tests), or no SIGHUP
            self.previous_sighup = None
        self._write_state()
        return self

    def _watch(self):
        settings = self.engine.config.engine
        folders = [(settings.channels_dir, False), (settings.transforms_dir, True), (settings.plugins_dir, False),
                   (settings.lookups_dir, False)]
        try:
            from watchdog.observers import Observer

            observer = Observer()
            watched = 0
            for folder, recursive in folders:
                if folder is not None and Path(folder).is_dir():
                    observer.schedule(_Handler(self), str(folder), recursive=recursive)
                    watched += 1
            if not watched:
                return None
            observer.start()
            return observer
        except Exception as error:  # noqa: BLE001 - inotify limits and the like: SIGHUP still works
            log.warn("live reload cannot watch the config folders ({error}); send SIGHUP to reload",
                     error=type(error).__name__)
            return None

    @defer.inlineCallbacks
    def stop(self):
        self.stopping = True
        if self.pending is not None and self.pending.active():
            self.pending.cancel()
        self.pending = None
        if self.previous_sighup is not None:
            try:
                signal.signal(signal.SIGHUP, self.previous_sighup)
            except (ValueError, OSError):
                pass
            self.previous_sighup = None
        if self.observer is not None:
            observer, self.observer = self.observer, None
            observer.stop()
            yield threads.deferToThread(observer.join, 5)
        yield self.lock.acquire()      # a reload in progress finishes first
        self.lock.release()
        try:
            state_file(self.engine.config).unlink()
        except OSError:
            pass

    # -- triggers ---------------------------------------------------------------------------
    def _on_sighup(self, _signum, _frame) -> None:
        self.reactor.callFromThread(self.schedule, "SIGHUP")

    def schedule(self, trigger: str = "file change") -> None:
        """Reload ``debounce`` seconds after the last trigger."""
        if self.stopping:
            return
        if self.pending is not None and self.pending.active():
            self.pending.reset(self.debounce)
            return
        self.pending = self.reactor.callLater(self.debounce, self._fire, trigger)

    def _fire(self, trigger: str) -> None:
        self.pending = None
        self.reload(trigger).addErrback(lambda failure: log.failure("live reload failed", failure))

    def reload(self, trigger: str = "request") -> defer.Deferred:
        """Deferred[dict]: what the reload did (``last``)."""
        return self.lock.run(self._reload, trigger)

    # -- the reload -------------------------------------------------------------------------
    @defer.inlineCallbacks
    def _reload(self, trigger: str):
        engine = self.engine
        plan = yield threads.deferToThread(prepare, engine.config.path, engine.registry, self.plugins,
                                           templates=engine.templates)
        outcome = {"at": iso_utc(time.time()), "trigger": trigger, "applied": plan.usable,
                   "redeployed": [], "added": [], "removed": [], "kept": [], "unchanged": []}
        if plan.usable:
            yield self._apply(plan, outcome)
        self.problems = self._describe(plan)
        outcome["problems"] = [p["text"] for p in self.problems]
        self.last = outcome
        for problem in self.problems:
            log.warn("reload: {problem}; {consequence}", problem=problem["text"], consequence=problem["consequence"])
        changed = [f"{word} {', '.join(outcome[word])}" for word in ("redeployed", "added", "removed") if outcome[word]]
        log.info("reload ({trigger}): {what}; {n} problem(s)", trigger=trigger,
                 what="; ".join(changed) or "nothing to change", n=len(self.problems))
        yield self._write_state()
        return outcome

    def _describe(self, plan) -> list[dict]:
        running = {Path(service.config.file).resolve(): name for name, service in self.engine.channel_services.items()}
        base = Path(self.engine.config.path).parent
        described = []
        for problem in plan.problems:
            name = running.get((base / problem.file).resolve())
            if not plan.usable:
                consequence = "nothing was reloaded"
            elif name is not None:
                consequence = f"channel {name} keeps running its previous version"
            else:
                consequence = "this file's channel was not started"
            described.append({"file": problem.file, "key": problem.key, "reason": problem.reason, "channel": name,
                              "text": str(problem), "consequence": consequence})
        return described

    def _apply(self, plan, outcome: dict) -> defer.Deferred:
        old = self.engine.config
        new = plan.config
        if (new.engine, new.store, new.admin, new.alerts) != (old.engine, old.store, old.admin, old.alerts):
            log.warn("reload: changes to [engine], [store], [admin] or [alerts] in {file} take effect at the "
                     "next restart", file=label(old.path, old.path.parent))
        self.plugins = plan.plugins_fingerprint
        return self.engine.reconfigure(plan, outcome)

    # -- what status and the dashboard show -------------------------------------------------
    def problems_for(self, channel: str) -> list[str]:
        return [p["text"] for p in self.problems if p["channel"] == channel]

    def other_problems(self) -> list[str]:
        return [p["text"] for p in self.problems if p["channel"] is None]

    def state(self) -> dict:
        return {**self.last, "problems": [dict(p) for p in self.problems]}

    def _write_state(self) -> defer.Deferred:
        path = state_file(self.engine.config)
        data = json.dumps({"pid": os.getpid(), **self.state()}, indent=1)
        return threads.deferToThread(_write_atomically, path, data).addErrback(
            lambda failure: log.warn("cannot write {path}: {error}", path=str(path),
                                     error=failure.getErrorMessage()))


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


class _Handler(FileSystemEventHandler):
    """Runs in watchdog's thread: hand relevant events to the reactor, nothing else."""

    def __init__(self, reloader: Reloader) -> None:
        super().__init__()
        self.reloader = reloader

    def dispatch(self, event) -> None:
        if event.event_type not in EVENTS or (event.is_directory and event.event_type == "modified"):
            return
        if relevant(event.src_path) or relevant(getattr(event, "dest_path", "")):
            self.reloader.reactor.callFromThread(self.reloader.schedule, "file change")
