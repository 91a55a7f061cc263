"""What an export file holds: channels (alone, in a channel group, in a server configuration or in a
``<list>``), code template libraries, the configuration map, global scripts and alerts.

A root element that is none of these is a foreign file: one sentence, and nothing is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import Element

from engine.importers.mirth.xml_read import ImportRefused, text

KNOWN = "<channel>, <channelGroup>, <serverConfiguration>, <codeTemplateLibrary> or a configuration map <map>"


@dataclass
class Found:
    channel: Element
    file: Path
    group: str = ""


@dataclass
class Export:
    channels: list[Found] = field(default_factory=list)
    libraries: list[Element] = field(default_factory=list)
    config_map: dict[str, str] | None = None
    global_scripts: dict[str, str] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add_channel(self, channel: Element, file: Path, group: str = "") -> None:
        ident = text(channel, "id").strip()
        if channel.find("sourceConnector") is None:
            return                      # a reference (a group inside a server configuration)
        if ident and ident in self.seen:
            return
        self.seen.add(ident)
        self.channels.append(Found(channel, file, group))


def _config_map(root: Element, path: Path) -> dict[str, str]:
    result = {}
    for entry in root:
        children = list(entry)
        if entry.tag != "entry" or len(children) != 2 or children[0].tag != "string":
            raise ImportRefused(f"{path}: not a Mirth Connect configuration map: <{root.tag}> holds "
                                f"<{entry.tag}>, not key/value entries.")
        value = children[1]
        result[children[0].text or ""] = (text(value, "value") if value.find("value") is not None
                                          else (value.text or ""))
    return result


def discover(path: Path, root: Element, export: Export) -> None:
    tag = root.tag
    if tag == "channel":
        if root.find("sourceConnector") is None:
            raise ImportRefused(f"{path}: a <channel> without a source connector is not a Mirth channel export.")
        export.add_channel(root, path)
    elif tag == "channelGroup":
        name = text(root, "name").strip()
        for channel in root.findall("channels/channel"):
            export.add_channel(channel, path, name)
    elif tag == "serverConfiguration":
        groups = {}
        for group in root.findall("channelGroups/channelGroup"):
            for channel in group.findall("channels/channel"):
                groups[text(channel, "id").strip()] = text(group, "name").strip()
                export.add_channel(channel, path, text(group, "name").strip())
        for channel in root.findall("channels/channel"):
            export.add_channel(channel, path, groups.get(text(channel, "id").strip(), ""))
        export.libraries += root.findall("codeTemplateLibraries/codeTemplateLibrary")
        config = root.find("configurationMap")
        if config is not None:
            export.config_map = {**(export.config_map or {}), **_config_map(config, path)}
        for entry in root.findall("globalScripts/entry"):
            children = list(entry)
            if len(children) == 2:
                export.global_scripts[children[0].text or ""] = children[1].text or ""
        for alert in root.findall("alerts/*"):
            export.alerts.append(text(alert, "name").strip() or "(unnamed)")
    elif tag == "codeTemplateLibrary":
        export.libraries.append(root)
    elif tag == "map":
        export.config_map = {**(export.config_map or {}), **_config_map(root, path)}
    elif tag == "list":
        kinds = {child.tag for child in root}
        if not kinds or not kinds <= {"channel", "channelGroup", "codeTemplateLibrary"}:
            raise ImportRefused(f"{path}: not a Mirth Connect export: its <list> holds "
                                f"{', '.join(sorted('<' + k + '>' for k in kinds)) or 'nothing'}.")
        for child in root:
            discover(path, child, export)
    else:
        raise ImportRefused(f"{path}: not a Mirth Connect export: its root element is <{tag}> (expected {KNOWN}).")
