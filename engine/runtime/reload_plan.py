"""What a live reload would deploy: the configuration on disk, loaded file by file, fully validated
and fingerprinted.  Pure work for a thread; ``engine.runtime.reload`` applies the result in the reactor.

Why not ``engine.runtime.check.check``: ``load_config`` is all-or-nothing by design (``switchboard check``
lists every problem and the daemon refuses to start), but a reload must not let one broken
channel file hold back a fixed one.  ``load_lenient`` therefore drives the same ``config.ConfigLoader``
steps as ``load_config`` (read, settings, channels, cross_check) and sorts the problems by file:
a problem in ``config.toml`` stops the whole reload, a problem in a channel file puts that file
aside (its running channel keeps its previous version).  Every other channel then goes through
what ``check`` does in its second phase: its pipeline is compiled (``when`` expressions, template
files, plugin filters and steps, metadata) and each destination connector is built once.

Fingerprints decide what a reload touches.  A channel is redeployed when its ``ChannelConfig``
differs (frozen dataclasses compare by value), when one of the template files it uses changed
(``template_fingerprint``: the files its transforms name, followed through ``{% include %}``,
``{% import %}`` and ``{% extends %}``; a name computed at render time makes it depend on every
file in ``transforms_dir``), or when any ``*.py`` file of ``plugins_dir`` changed (plugins are
loaded again into a new registry, and every channel is rebuilt against it).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from jinja2 import meta

from engine.config.loading import connector_options, plugins_dir_of
from engine.config.loader import Config, ConfigError, ConfigLoader, Problem
from engine.core.pipeline import ChannelPipeline
from engine.core.plugins import PluginError, Registry, load_plugins
from engine.runtime.assembly import build_templates, compile_channel, tables_used

MISSING = "missing"


@dataclass
class Plan:
    """A validated configuration ready to apply, or the reasons there is none."""

    config: Config | None                       # settings + every valid channel (None: config.toml broken)
    registry: Registry | None
    registry_changed: bool
    plugins_fingerprint: str
    templates: object | None = None             # engine.templates.Templates for the new pipelines
    pipelines: dict[str, ChannelPipeline] = field(default_factory=dict)   # valid, enabled channels
    fingerprints: dict[str, tuple] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    bad_files: set[Path] = field(default_factory=set)                    # channel files set aside

    @property
    def usable(self) -> bool:
        return self.config is not None and self.registry is not None


def label(path: Path, base: Path) -> str:
    """A file as problems name it: relative to config.toml's directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(base))
    except ValueError:
        return str(path)


def plugins_fingerprint(plugins_dir: Path | None) -> str:
    """sha256 over the names and contents of ``plugins_dir/*.py`` (helpers with a leading ``_`` too:
    plugins import them)."""
    digest = hashlib.sha256()
    if plugins_dir is not None and Path(plugins_dir).is_dir():
        for path in sorted(Path(plugins_dir).glob("*.py")):
            digest.update(path.name.encode() + b"\0")
            try:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            except OSError:
                digest.update(MISSING.encode())
    return digest.hexdigest()


def _file_hash(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return MISSING


def template_fingerprint(channel, transforms_dir: Path | None) -> tuple:
    """((name, sha256), ...) of every template file the channel's transforms can reach."""
    if transforms_dir is None:
        return ()
    base = Path(transforms_dir)
    parser = jinja2.Environment()          # parsing only: nothing is compiled or rendered here
    steps = list(channel.transforms) + [step for d in channel.destinations for step in d.transforms]
    todo = [step.template for step in steps if step.template]
    dynamic = False
    sources = [step.inline for step in steps if step.inline]
    seen: dict[str, str] = {}
    while sources or todo:
        if sources:
            source = sources.pop()
        else:
            name = todo.pop()
            if name in seen:
                continue
            path = (base / name).resolve()
            seen[name] = _file_hash(path) if path.is_relative_to(base.resolve()) else MISSING
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
        try:
            for reference in meta.find_referenced_templates(parser.parse(source)):
                if reference is None:
                    dynamic = True
                else:
                    todo.append(reference)
        except jinja2.TemplateSyntaxError:
            continue           # the file's hash already says it changed; the compile reports the error
    if dynamic and base.is_dir():
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            seen.setdefault(str(path.relative_to(base)), _file_hash(path))
    return tuple(sorted(seen.items()))


def lookups_fingerprint(channel, lookups_dir: Path | None) -> tuple:
    """((table, sha256 of NAME.csv and NAME.toml), ...) of the code tables the channel's edit steps map
    through: editing a table redeploys the channels that use it."""
    if lookups_dir is None:
        return ()
    return tuple((name, _file_hash(Path(lookups_dir) / f"{name}.csv"), _file_hash(Path(lookups_dir) / f"{name}.toml"))
                 for name in sorted(tables_used(channel)))


def channel_fingerprint(channel, transforms_dir: Path | None, plugins: str, lookups_dir: Path | None = None) -> tuple:
    return (channel, template_fingerprint(channel, transforms_dir), plugins, lookups_fingerprint(channel, lookups_dir))


def load_lenient(path, registry: Registry, *, environ=None) -> tuple[Config | None, list[Problem], set[Path]]:
    """(config with only the valid channels, every problem, the channel files set aside).

    ``config`` is None when ``config.toml`` itself has a problem.  A channel file with a problem is
    left out of ``config.channels``; the other channels are loaded as ``load_config`` would."""

    path = Path(path).resolve()
    base = path.parent
    loader = ConfigLoader(os.environ if environ is None else environ, connector_options(registry), base)
    data = loader.read(path)
    if data is None:
        return None, _relabel(loader.problems, base), set()
    settings = loader.settings(path, data)
    channels = loader.channels(path, settings[0])
    loader.cross_check(path, channels, settings[2])
    problems = _relabel(loader.problems, base)
    top = label(path, base)
    if any(problem.file == top for problem in problems):
        return None, problems, set()
    bad = {(base / problem.file).resolve() for problem in problems}
    good = tuple(channel for channel in channels if Path(channel.file).resolve() not in bad)
    engine, store, admin, alerts = settings
    return Config(path, engine, store, admin, good, alerts), problems, bad


def _relabel(problems: list[Problem], base: Path) -> list[Problem]:
    """The loader names files relative to the current directory; we name them from config.toml's."""
    return [Problem(label(Path(problem.file).resolve(), base), problem.key, problem.reason) for problem in problems]


def prepare(path, running: Registry, running_plugins: str, *, environ=None, templates=None) -> Plan:
    """In a thread: load, validate and fingerprint the configuration on disk."""
    path = Path(path).resolve()
    base = path.parent
    plugins_dir = plugins_dir_of(path)
    fingerprint = plugins_fingerprint(plugins_dir)
    registry, changed = running, fingerprint != running_plugins
    if changed:
        try:
            registry = load_plugins(plugins_dir)
        except PluginError as error:
            problem = Problem(label(plugins_dir, base), "plugins", str(error))
            return Plan(None, None, True, fingerprint, problems=[problem])
    try:
        config, problems, bad = load_lenient(path, registry, environ=environ)
    except ConfigError as error:          # belt and braces: the loader reports, it does not raise
        return Plan(None, registry, changed, fingerprint, problems=list(error.problems))
    plan = Plan(config, registry, changed, fingerprint, problems=problems, bad_files=bad)
    if config is None:
        return plan
    plan.templates = build_templates(config, registry, previous=templates)
    valid = []
    for channel in config.channels:
        if not channel.enabled:
            valid.append(channel)
            continue
        compiled = compile_channel(channel, registry, plan.templates)
        pipeline, found = compiled.pipeline, compiled.problems
        if found:
            where = label(channel.file, base)
            plan.problems.extend(Problem(where, key, reason) for key, reason in found)
            plan.bad_files.add(Path(channel.file).resolve())
            continue
        valid.append(channel)
        plan.pipelines[channel.name] = pipeline
        plan.fingerprints[channel.name] = channel_fingerprint(channel, config.engine.transforms_dir, fingerprint,
                                                             config.engine.lookups_dir)
    plan.config = Config(config.path, config.engine, config.store, config.admin, tuple(valid), config.alerts)
    return plan
