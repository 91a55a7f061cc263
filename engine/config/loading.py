"""Loading a config the way the daemon does: plugins first, then every file against their schemas.

Plugins can add connector types with option schemas of their own, and ``plugins_dir`` is itself
set in ``config.toml``; so loading is two-phase: read ``[engine] plugins_dir``, load the plugins,
then load and validate the whole config against the built-in plus plugin schemas.  ``switchboard
check`` (``engine.runtime.check``) goes on to compile every channel.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from engine.config.loader import ConfigError, Problem, load_config
from engine.config.schema import ConnectorOptions
from engine.core.plugins import PluginError, Registry, load_plugins


def plugins_dir_of(path) -> Path:
    """``[engine] plugins_dir`` read ahead of full validation (errors surface in phase two)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        value = data.get("engine", {}).get("plugins_dir", "plugins")
    except (OSError, ValueError, AttributeError):
        value = "plugins"
    return path.parent / (value if isinstance(value, str) else "plugins")


def connector_options(registry: Registry) -> ConnectorOptions:
    """The option schemas of every connector ``registry`` holds, built-in or plugin: each connector
    class carries its own (``option_schema``), as DESIGN §1 asks."""
    return ConnectorOptions.from_registry(registry)


def load(path, *, environ=None):
    """(config, registry) for the daemon; raises ConfigError (or PluginError inside it)."""
    try:
        registry = load_plugins(plugins_dir_of(path))
    except PluginError as error:
        raise ConfigError([Problem(str(plugins_dir_of(path)), "plugins", str(error))]) from None
    config = load_config(path, environ=environ, connector_options=connector_options(registry))
    return config, registry


LOOPBACK = ("127.", "::1", "localhost")


def open_webhook(channel, where: str) -> list[Problem]:
    """An HTTP source reachable from other hosts must authenticate its callers (a token or
    mutual TLS): an unauthenticated payments webhook would let anyone post money."""
    source = channel.source
    if source.type != "http" or not channel.enabled:
        return []
    host = (source.options.get("listen") or ("127.0.0.1", 0))[0]
    tls = source.options.get("tls") or {}
    if host.startswith(LOOPBACK) or source.options.get("token") or tls.get("client_ca"):
        return []
    return [Problem(where, "source.token", f"the http source listens on {host}, beyond this host, without "
                    "a token or mutual TLS (tls.client_ca); set one of them")]
