"""Mirth's Velocity ``${...}`` in connector fields, rewritten for Switchboard.

Mirth resolves ``${name}`` in a connector field (file name, folder, URL, template) through the message's
maps, then the configuration map.  Switchboard has three places a value can come from:

* ``${message.messageId}`` -> ``{{ id }}``, ``${message.encodedData}`` / ``${message.transformedData}``
  -> ``{{ body }}``, ``${message.rawData}`` -> ``{{ raw }}``, ``${channelName}`` -> ``{{ channel }}``:
  template expressions, in fields that are templates (file names, URLs, destination templates);
* a variable a converted Mapper step sets (``${mrn}``) -> ``{{ meta.mrn }}``: Mapper steps become
  ``[metadata]`` columns, Switchboard's per-message values;
* a configuration map entry (``${outputDir}``) -> ``${outputDir}``, an environment variable the config
  loader substitutes when it reads the channel file (DESIGN §3.1).  When configuration-map.xml (or a
  server configuration holding the map) is imported too, its value becomes the default,
  ``${outputDir:-/var/spool/...}``, so the channel runs as it did in Mirth; entries whose name looks like
  a secret (password, token, key, ...) get no default and must be set.  Without the map, ``${x}`` that is
  neither of the above is assumed to be a configuration map entry, and the notes say to set it.

Anything else (``${originalFilename}``, ``${DATE}``, ``${UUID}``, Velocity tools, map variables set by
JavaScript) is not converted: the field is left out and the notes say why.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.importers.mirth.toml_text import literal

_REFERENCE = re.compile(r"\$!?\{([^{}]*)\}|\$!?([A-Za-z][A-Za-z0-9_]*)")
_MESSAGE = {"message.messageId": "id", "message.encodedData": "body", "message.transformedData": "body",
            "message.rawData": "raw", "channelName": "channel", "message.channelName": "channel"}
_SECRET = re.compile(r"pass|secret|token|key|pwd|credential", re.IGNORECASE)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_name(name: str) -> str:
    text = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return text if _ENV_NAME.fullmatch(text) else "_" + text


@dataclass
class Converted:
    """A field as segments: ("text", s), ("jinja", expr) or ("env", NAME, default-or-None)."""

    segments: list[tuple] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)      # references that could not be converted
    assumed: list[str] = field(default_factory=list)      # taken as configuration map entries, unknown

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def uses_jinja(self) -> bool:
        return any(s[0] == "jinja" for s in self.segments)

    @property
    def uses_env(self) -> bool:
        return any(s[0] == "env" for s in self.segments)

    def plain_value(self) -> str | None:
        """The literal text when there are no references at all."""
        if self.uses_jinja or self.uses_env:
            return None
        return "".join(s[1] for s in self.segments)

    def toml(self, jinja: bool) -> str:
        """The text to put in a TOML string: literal ``${`` doubled, env references kept as ${...};
        with ``jinja`` the literal text is also protected from Jinja."""
        out = []
        for segment in self.segments:
            if segment[0] == "text":
                out.append(literal(_jinja_literal(segment[1]) if jinja else segment[1]))
            elif segment[0] == "jinja":
                out.append("{{ " + segment[1] + " }}")
            else:
                out.append(_env(segment[1], segment[2]))
        return "".join(out)

    def template_file(self) -> str | None:
        """The text of a Jinja template file (None when an env reference needs the TOML loader)."""
        if self.uses_env:
            return None
        return "".join(_jinja_literal(s[1]) if s[0] == "text" else "{{ " + s[1] + " }}" for s in self.segments)


def _env(name: str, default: str | None) -> str:
    return "${" + name + ("" if default is None else ":-" + default) + "}"


def _jinja_literal(text: str) -> str:
    if not any(mark in text for mark in ("{{", "{%", "{#", "}}", "%}", "#}")):
        return text
    return "{% raw %}" + text.replace("{% endraw %}", "{% endraw %}{{ '{% endraw %}' }}{% raw %}") + "{% endraw %}"


class Velocity:
    """Converts fields for one import: knows the configuration map (None when not imported) and
    records every environment variable the output uses."""

    def __init__(self, config_map: dict[str, str] | None) -> None:
        self.config_map = config_map
        self.env_used: dict[str, tuple[str, str | None]] = {}   # env name -> (mirth key, default)

    def convert(self, text: str, *, variables, allowed: frozenset[str] | set[str]) -> Converted:
        """``allowed``: the template names the field's context has (``id``, ``body``, ``meta``...)."""
        result = Converted()
        position = 0
        for match in _REFERENCE.finditer(text):
            name = (match.group(1) if match.group(1) is not None else match.group(2)).strip()
            braced = match.group(1) is not None
            resolved = self._resolve(name, variables, allowed, result, braced)
            if resolved is None:
                continue        # a bare $word that is not a reference: stays text
            if match.start() > position:
                result.segments.append(("text", text[position:match.start()]))
            result.segments.append(resolved)
            position = match.end()
        if position < len(text):
            result.segments.append(("text", text[position:]))
        merged: list[tuple] = []
        for segment in result.segments:
            if merged and segment[0] == "text" and merged[-1][0] == "text":
                merged[-1] = ("text", merged[-1][1] + segment[1])
            else:
                merged.append(segment)
        result.segments = merged
        return result

    def _resolve(self, name: str, variables, allowed, result: Converted, braced: bool):
        if name in _MESSAGE:
            target = _MESSAGE[name]
            if target in allowed:
                return ("jinja", target)
            result.missing.append("${%s}" % name)
            return ("text", "${%s}" % name)
        if name in variables:
            if "meta" in allowed:
                return ("jinja", f"meta.{name}")
            result.missing.append("${%s}" % name)
            return ("text", "${%s}" % name)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", name) or "." in name:
            if not braced:
                return None
            result.missing.append("${%s}" % name)
            return ("text", "${%s}" % name)
        if self.config_map is not None and name not in self.config_map:
            if not braced:
                return None
            result.missing.append("${%s}" % name)
            return ("text", "${%s}" % name)
        if not braced and self.config_map is None:
            return None
        env = env_name(name)
        default = None
        if self.config_map is not None:
            value = self.config_map[name]
            if not _SECRET.search(name) and "}" not in value:
                default = value
        else:
            result.assumed.append(name)
        self.env_used[env] = (name, default)
        return ("env", env, default)
