"""The plugin manager: one per engine, holding built-ins, ``plugins_dir`` modules and entry points.

No module-global manager (datasette's lesson): tests build several engines in one process and a
channel reload builds a fresh registry.  ``load_plugins`` returns a ``Registry``, the resolved
view the rest of the engine uses (connector classes, filter and transform factories, template
helpers), so callers never talk to pluggy directly.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from engine import hookspecs

BUILTIN_PLUGINS = (
    "engine.connectors.mllp.source",
    "engine.connectors.http.source",
    "engine.connectors.http.destination",
    "engine.connectors.file.destination",
    "engine.connectors.file.source",
    "engine.connectors.sftp.destination",
    "engine.connectors.channel",
    "engine.core.builtin_filters",
    "engine.core.template_helpers",
    "engine.admin.alert_webhook",
)
# The connector types every Switchboard has; SFTP ships as a bundled plugin beside them.
CORE_CONNECTORS = (
    "engine.connectors.mllp.source",
    "engine.connectors.http.source",
    "engine.connectors.http.destination",
    "engine.connectors.file.destination",
    "engine.connectors.file.source",
    "engine.connectors.channel",
)


class PluginError(Exception):
    """A plugin could not be loaded or two plugins claim one name; the message names the plugin."""


@dataclass
class Registry:
    """Everything the plugins registered, by name."""

    manager: pluggy.PluginManager
    sources: dict[str, type] = field(default_factory=dict)
    destinations: dict[str, type] = field(default_factory=dict)
    filters: dict[str, Any] = field(default_factory=dict)
    transforms: dict[str, Any] = field(default_factory=dict)
    template_filters: dict[str, Any] = field(default_factory=dict)
    template_globals: dict[str, Any] = field(default_factory=dict)

    @property
    def hook(self):
        return self.manager.hook


def new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def load_plugins(plugins_dir: Path | None = None, *, entry_points: bool = True,
                 builtins: tuple[str, ...] = BUILTIN_PLUGINS) -> Registry:
    """Build a manager with the built-ins, every ``*.py`` in ``plugins_dir`` and entry points."""
    manager = new_manager()
    for module_name in builtins:
        manager.register(importlib.import_module(module_name), name=module_name)
    if plugins_dir is not None and plugins_dir.is_dir():
        for path in sorted(plugins_dir.glob("*.py")):
            if path.name.startswith("_"):
                continue
            manager.register(_import_file(path), name=f"plugins/{path.name}")
    if entry_points:
        manager.load_setuptools_entrypoints(hookspecs.PROJECT)
    return _collect(manager)


def _import_file(path: Path):
    """Import one plugin file under a private module name, so two engines never share it."""
    module_name = f"switchboard_plugin_{path.stem.replace('-', '_')}_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # a plugin's own bug: report it by file, not as our traceback
        sys.modules.pop(module_name, None)
        raise PluginError(f"{path}: failed to import: {type(error).__name__}: {error}") from error
    return module


def load_sibling(plugin_file: str, name: str):
    """Import a helper module that sits beside a plugin file (plugins are files, not a package),
    once per path; a leading underscore keeps the loader from registering it as a plugin."""
    path = Path(plugin_file).resolve().with_name(f"{name}.py")
    module_name = f"switchboard_plugin_helper_{name}_{abs(hash(str(path)))}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def _collect(manager: pluggy.PluginManager) -> Registry:
    registry = Registry(manager)
    hook = manager.hook
    for classes in hook.register_sources():
        for cls in classes or ():
            _claim(registry.sources, cls.type_name, cls, "source type")
    for classes in hook.register_destinations():
        for cls in classes or ():
            _claim(registry.destinations, cls.type_name, cls, "destination type")
    for mapping in hook.register_filters():
        for name, factory in (mapping or {}).items():
            _claim(registry.filters, name, factory, "filter")
    for mapping in hook.register_transforms():
        for name, factory in (mapping or {}).items():
            _claim(registry.transforms, name, factory, "transform")
    for helpers in hook.register_template_helpers():
        for name, function in ((helpers or {}).get("filters") or {}).items():
            _claim(registry.template_filters, name, function, "template filter")
        for name, function in ((helpers or {}).get("globals") or {}).items():
            _claim(registry.template_globals, name, function, "template global")
    return registry


def _claim(table: dict, name: str, value: Any, what: str) -> None:
    if name in table and table[name] is not value:
        raise PluginError(f"two plugins register the {what} {name!r}")
    table[name] = value
