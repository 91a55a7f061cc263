"""Mirth connectors as Switchboard sources and destinations (DESIGN §3.10).

  TCP Listener (MLLP mode)   -> source "mllp"   listen, ack (response setting), max_connections, batch split
  File Reader (FILE / SFTP)  -> source "file" / "sftp"   path, pattern, after, split, settle, poll_interval
  HTTP Listener              -> source "http"   listen, path (context path), ack
  Channel Reader             -> source "channel"
  TCP Sender (MLLP mode)     -> destination "mllp"   connect, ack_timeout, connect_timeout
  File Writer (FILE / SFTP)  -> destination "file" / "sftp"   directory, filename (a template)
  HTTP Sender                -> destination "http"   url and headers (templates), method, timeout
  Channel Writer             -> destination "channel"
  queue / retry settings     -> retry = { attempts, interval, backoff = 1.0 }

Mirth's response setting -> ``ack``: "None" -> none; "Auto-generate (Before processing)" -> stored;
"After source transformer" and "Destinations completed" -> processed (Switchboard's ACK after filters,
transform and queueing; it never waits for delivery).  A response taken from a destination, the
postprocessor or a map variable is not something Switchboard sends: processed, and a note.

Retry: without a queue Mirth tries ``retryCount + 1`` times then errors -> ``attempts = retryCount + 1``;
with "queue on failure" it retries for ever at the retry interval -> ``attempts = 0``.  Mirth's interval
is constant: ``backoff = 1.0``.

A connector Switchboard lacks (Database Reader/Writer, JavaScript Reader/Writer, Web Service, DICOM,
JMS, Document Writer, SMTP, FTP/SMB/S3/WebDAV file schemes, TCP without MLLP...) is left out and
noted.  A source Switchboard lacks leaves the channel disabled with an inert ``type = "channel"``
source, so the file loads and nothing listens.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

from engine.importers.mirth.notes import Note
from engine.importers.mirth.toml_text import literal
from engine.importers.mirth.velocity import Converted, Velocity, env_name
from engine.importers.mirth.xml_read import flag, integer, text

DATA_TYPES = {"HL7V2": "hl7", "JSON": "json", "XML": "xml", "DELIMITED": "csv", "RAW": "text", "HL7V3": "xml"}
_ACK = {"None": "none", "Auto-generate (Before processing)": "stored",
        "Auto-generate (After source transformer)": "processed",
        "Auto-generate (Destinations completed)": "processed"}
_PORT_CONNECTOR = "a connector plugin (engine/hookspecs.py: register_sources / register_destinations)"
URL_NAMES = frozenset({"id", "meta", "channel"})
TEMPLATE_NAMES = frozenset({"id", "meta", "channel", "body", "raw", "msg"})


class Raw(str):
    """A TOML string value already prepared for the loader's ${VAR} substitution."""


@dataclass
class Option:
    key: str
    value: object
    comment: str = ""


@dataclass
class ConnectorResult:
    options: list[Option] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    converted: bool = True          # False: the connector is left out (or the source is a placeholder)
    template: Converted | None = None
    template_kind: str = "hl7"
    retry: dict | None = None


def milliseconds(value: int) -> str:
    if value % 1000:
        return f"{value}ms"
    seconds = value // 1000
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def data_type(name: str) -> str | None:
    return DATA_TYPES.get(name.strip().upper())


def _plain(velocity: Velocity, raw: str, what: str, label: str, result: ConnectorResult) -> str | None:
    """A field that is not a template: literal text and ${VAR} only."""
    converted = velocity.convert(raw, variables=set(), allowed=frozenset())
    if not converted.ok:
        result.notes.append(Note(label, f"The {what} `{raw}` uses {', '.join(converted.missing)}, which Switchboard "
                                 f"cannot fill in this field (it is read once, when the channel loads).",
                                 "a fixed value, or an environment variable `${VAR}`"))
        return None
    return Raw(converted.toml(jinja=False))


def _address(velocity, host: str, port: str, label: str, result: ConnectorResult, listen: bool) -> Raw | None:
    host = host.strip() or ("0.0.0.0" if listen else "")
    joined = f"[{host}]:{port.strip()}" if ":" in host and not host.startswith("[") else f"{host}:{port.strip()}"
    return _plain(velocity, joined, "address", label, result)


def _ack(response: str, after: bool, label: str, result: ConnectorResult, choices=("none", "stored", "processed")) -> str:
    if not after and response != "None":
        return "stored"
    ack = _ACK.get(response)
    if ack is None:
        result.notes.append(Note(label, f"Mirth answered with the response \"{response}\" (a destination's response, "
                                 "the postprocessor's or a map variable). Switchboard answers with its own ACK "
                                 "once the message is processed.", "a plugin source, or the sender accepting the "
                                 "processed ACK"))
        ack = "processed"
    if ack not in choices:
        ack = "stored"
    if response == "Auto-generate (Destinations completed)":
        result.comments.append("Mirth answered once the destinations completed; processed = after filters, "
                               "transform and queueing")
    return ack


# -- sources --------------------------------------------------------------------------------------
def convert_source(connector: Element, velocity: Velocity, inbound: str, slug: str) -> ConnectorResult:
    transport = text(connector, "transportName").strip()
    props = connector.find("properties")
    kind = props.get("class", "").rsplit(".", 1)[-1] if props is not None else ""
    result = ConnectorResult()
    label = f"Source connector ({transport or kind})"
    source_props = props.find("sourceConnectorProperties") if props is not None else None
    response = text(source_props, "responseVariable", "None")
    after = flag(source_props, "respondAfterProcessing", True)
    batch = flag(source_props, "processBatch", False)
    if kind == "TcpReceiverProperties":
        mode = text(props, "transmissionModeProperties/pluginPointName").strip()
        if mode != "MLLP" or not flag(props, "serverMode", True):
            return _lacking_source(result, label, f"a TCP Listener in {mode or 'raw'} mode"
                                   + ("" if flag(props, "serverMode", True) else " (client mode)"))
        listen = _address(velocity, text(props, "listenerConnectorProperties/host"),
                          text(props, "listenerConnectorProperties/port"), label, result, listen=True)
        if listen is None:
            return _lacking_source(result, label, "a TCP Listener whose address is not converted", noted=True)
        result.options += [Option("type", "mllp"), Option("listen", listen),
                           Option("ack", _ack(response, after, label, result), f"Mirth: {response}")]
        if integer(props, "maxConnections"):
            result.options.append(Option("max_connections", integer(props, "maxConnections")))
        if integer(props, "receiveTimeout"):
            result.options.append(Option("idle_timeout", milliseconds(integer(props, "receiveTimeout"))))
        if batch:
            _batch(connector, inbound, result, label, allowed=("hl7-batch",))
        return result
    if kind == "FileReceiverProperties":
        return _file_source(props, connector, velocity, inbound, slug, label, result, batch)
    if kind == "HttpReceiverProperties":
        listen = _address(velocity, text(props, "listenerConnectorProperties/host"),
                          text(props, "listenerConnectorProperties/port"), label, result, listen=True)
        if listen is None:
            return _lacking_source(result, label, "an HTTP Listener whose address is not converted", noted=True)
        path = text(props, "contextPath").strip() or "/"
        path = path if path.startswith("/") else "/" + path
        result.options += [Option("type", "http"), Option("listen", listen), Option("path", path),
                           Option("ack", _ack(response, after, label, result, choices=("stored", "processed")),
                                  f"Mirth: {response}")]
        host = text(props, "listenerConnectorProperties/host").strip()
        if not host.startswith(("127.", "::1", "localhost")):
            variable = env_name(f"{slug}_token").upper()
            result.options.append(Option("token", Raw("${" + variable + "}"),
                                         "callers must send Authorization: Bearer <token>"))
            result.notes.append(Note(label, f"The HTTP Listener accepts calls from other hosts ({host or 'all'}); "
                                     f"Switchboard requires a token (or mutual TLS) there, so the channel reads "
                                     f"`${{{variable}}}` and its callers must send it.",
                                     "set the environment variable and give the callers the token, or "
                                     "`tls = { client_ca = ... }`"))
        if batch:
            _batch(connector, inbound, result, label, allowed=())
        return result
    if kind == "VmReceiverProperties":
        result.options.append(Option("type", "channel"))
        return result
    return _lacking_source(result, label, f"a {transport or kind} source")


def _lacking_source(result: ConnectorResult, label: str, what: str, noted: bool = False) -> ConnectorResult:
    result.options = [Option("type", "channel", "placeholder: the Mirth source is not converted (IMPORT-NOTES.md)")]
    result.converted = False
    if not noted:
        result.notes.append(Note(label, f"The channel's source is {what}, which Switchboard lacks. The channel is "
                                 "written disabled with an inert `type = \"channel\"` source.", _PORT_CONNECTOR))
    return result


def _batch(connector: Element, inbound: str, result: ConnectorResult, label: str, allowed) -> None:
    split = text(connector, "transformer/inboundProperties/batchProperties/splitType").strip()
    script = text(connector, "transformer/inboundProperties/batchProperties/batchScript")
    if inbound == "hl7" and split in ("MSH_Segment", "") and "hl7-batch" in allowed:
        result.options.append(Option("split", "hl7-batch", "Mirth: Process Batch, split by MSH"))
    elif inbound == "csv" and "lines" in allowed:
        result.options.append(Option("split", "lines", "Mirth: Process Batch"))
    else:
        result.notes.append(Note(label, f"Mirth split each input into a batch of messages ({split or 'batch'}); "
                                 "Switchboard takes each input as one message here.",
                                 "`split = \"hl7-batch\"` (HL7) or `split = \"lines\"` (csv) where they fit; "
                                 "a plugin source otherwise", script if script.strip() else None))


def _scheme_host(host: str) -> tuple[str, int | None, str]:
    """``host[:port][/path]`` as Mirth's remote file schemes write it."""
    match = re.fullmatch(r"([^/:]*)(?::(\d+))?(/.*)?", host.strip())
    if not match:
        return host.strip(), None, "/"
    return match.group(1), int(match.group(2)) if match.group(2) else None, match.group(3) or "/"


def _sftp_options(props: Element, slug: str, side: str, result: ConnectorResult, velocity: Velocity, label: str):
    """An SFTP File Reader or File Writer: the same host, port, folder and credentials either way."""
    host, port, remote = _scheme_host(text(props, "host"))
    result.options += [Option("type", "sftp"), Option("host", literal(host))]
    if port:
        result.options.append(Option("port", port))
    result.options.append(Option("remote_path", literal(remote)))
    _credentials(props, slug, side, result, velocity, label)


def _credentials(props: Element, slug: str, side: str, result: ConnectorResult, velocity: Velocity, label: str):
    username = text(props, "username").strip()
    result.options.append(Option("username", literal(username) if username else "anonymous"))
    if text(props, "password").strip() and not flag(props, "anonymous", False):
        variable = env_name(f"{slug}_{side}_password").upper()
        result.options.append(Option("password", Raw("${" + variable + "}"), "the export held a password"))
        result.notes.append(Note(label, f"The export held the SFTP password; it is not copied. The channel reads "
                                 f"`${{{variable}}}`.", "set the environment variable (or `private_key`)"))


def _file_source(props, connector, velocity, inbound, slug, label, result, batch) -> ConnectorResult:
    scheme = text(props, "scheme", "FILE").strip().upper()
    if scheme not in ("FILE", "SFTP"):
        return _lacking_source(result, label, f"a File Reader over {scheme}")
    if scheme == "FILE":
        path = _plain(velocity, text(props, "host"), "folder", label, result)
        if path is None:
            return _lacking_source(result, label, "a File Reader whose folder is not converted", noted=True)
        result.options += [Option("type", "file"), Option("path", path)]
    else:
        _sftp_options(props, slug, "source", result, velocity, label)
    pattern = text(props, "fileFilter", "*").strip() or "*"
    if flag(props, "regex", False):
        result.notes.append(Note(label, f"The file filter is a regular expression (`{pattern}`); Switchboard takes "
                                 "a glob pattern, so every file is read.", "`pattern` (a glob such as `*.hl7`)"))
        pattern = "*"
    result.options.append(Option("pattern", literal(pattern)))
    action = text(props, "afterProcessingAction", "NONE").strip().upper()
    if action == "DELETE":
        result.options.append(Option("after", "delete"))
    else:
        target = text(props, "moveToDirectory").strip()
        name = text(props, "moveToFileName").strip()
        mirth = f"Mirth moved them to {target or 'the same folder'}" + (f" as {name}" if name else "") \
            if action == "MOVE" else "Mirth left them in place"
        result.options.append(Option("after", "move", f"processed files go to path/done/ ({mirth})"))
    if text(props, "errorMoveToDirectory").strip():
        result.comments.append(f"Mirth moved unreadable files to {text(props, 'errorMoveToDirectory').strip()}; "
                               "Switchboard moves them to path/error/ with a .reason file")
    if batch:
        _batch(connector, inbound, result, label, allowed=("hl7-batch", "lines"))
    if flag(props, "checkFileAge", False):
        result.options.append(Option("settle", milliseconds(integer(props, "fileAge", 1000)),
                                     "Mirth: check file age"))
    else:
        result.options.append(Option("settle", "0s"))
    polling = text(props, "pollConnectorProperties/pollingType", "INTERVAL").strip()
    frequency = integer(props, "pollConnectorProperties/pollingFrequency", 5000)
    if polling == "INTERVAL" and frequency > 0:
        result.options.append(Option("poll_interval", milliseconds(frequency)))
    else:
        result.comments.append(f"Mirth polled on a {polling.lower()} schedule; Switchboard watches the folder")
    if flag(props, "directoryRecursion", False):
        result.comments.append("Mirth also read sub-folders; Switchboard reads the folder itself")
    if text(props, "sortBy").strip():
        result.comments.append(f"Mirth read the files sorted by {text(props, 'sortBy').strip()}")
    return result


# -- destinations ---------------------------------------------------------------------------------
def convert_destination(connector: Element, velocity: Velocity, variables, outbound: str, channel_slug: str,
                        dest_slug: str, channels_by_id: dict[str, str]) -> ConnectorResult:
    transport = text(connector, "transportName").strip()
    props = connector.find("properties")
    kind = props.get("class", "").rsplit(".", 1)[-1] if props is not None else ""
    result = ConnectorResult()
    label = f"Destination \"{text(connector, 'name')}\" ({transport or kind})"
    template_field = None
    if kind == "TcpDispatcherProperties":
        mode = text(props, "transmissionModeProperties/pluginPointName").strip()
        if mode != "MLLP" or flag(props, "serverMode", False):
            return _lacking(result, label, f"a TCP Sender in {mode or 'raw'} mode")
        connect = _address(velocity, text(props, "remoteAddress"), text(props, "remotePort"), label, result, False)
        if connect is None:
            result.converted = False
            return result
        result.options += [Option("type", "mllp"), Option("connect", connect)]
        if integer(props, "responseTimeout") > 0:
            result.options.append(Option("ack_timeout", milliseconds(integer(props, "responseTimeout"))))
        if integer(props, "sendTimeout") > 0:
            result.options.append(Option("connect_timeout", milliseconds(integer(props, "sendTimeout"))))
        if flag(props, "ignoreResponse", False):
            result.notes.append(Note(label, "Mirth did not wait for the peer's ACK (Ignore Response); Switchboard "
                                     "waits for it, and a peer that never answers holds the queue.",
                                     "a peer that answers, or a plugin destination"))
        template_field = "template"
    elif kind == "FileDispatcherProperties":
        scheme = text(props, "scheme", "FILE").strip().upper()
        if scheme not in ("FILE", "SFTP"):
            return _lacking(result, label, f"a File Writer over {scheme}")
        if scheme == "FILE":
            directory = _plain(velocity, text(props, "host"), "folder", label, result)
            if directory is None:
                result.converted = False
                return result
            result.options += [Option("type", "file"), Option("directory", directory)]
        else:
            _sftp_options(props, f"{channel_slug}_{dest_slug}", "destination", result, velocity, label)
        pattern = text(props, "outputPattern").strip()
        if pattern:
            name = velocity.convert(pattern, variables=variables, allowed=URL_NAMES)
            if name.ok:
                result.options.append(Option("filename", Raw(name.toml(jinja=True)), f"Mirth: {pattern}"))
            else:
                result.notes.append(Note(label, f"The file name `{pattern}` uses {', '.join(name.missing)}, which "
                                         "Switchboard has no value for; the files are named `{{ id }}.txt` until "
                                         "it is ported.", "`filename` (a template: `{{ id }}`, `{{ meta.NAME }}`)"))
        if flag(props, "outputAppend", False):
            result.notes.append(Note(label, "Mirth appended every message to one file; Switchboard writes one file "
                                     "per message.", "`batch = \"daily\"` (one file per period) if that fits"))
        if flag(props, "errorOnExists", False):
            result.comments.append("Mirth failed when the file existed; Switchboard replaces it")
        template_field = "template"
    elif kind == "HttpDispatcherProperties":
        _http(props, velocity, variables, label, result)
        if not result.converted:
            return result
        template_field = "content"
    elif kind == "VmDispatcherProperties":
        target_id = text(props, "channelId").strip()
        if target_id in ("", "none"):
            result.converted = False
            result.comments.append(f"Mirth destination \"{text(connector, 'name')}\" (Channel Writer to no channel) "
                                   "sends nowhere: left out")
            return result
        if target_id not in channels_by_id:
            result.converted = False
            result.notes.append(Note(label, f"The Channel Writer sends to channel id {target_id}, which is not in "
                                     "this import; the destination is left out.", "import that channel too (or "
                                     "its server configuration), then `type = \"channel\"`"))
            return result
        result.options += [Option("type", "channel"), Option("channel", channels_by_id[target_id])]
        passed = [v.text for v in (props.find("mapVariables") or []) if v.text]
        if passed:
            result.comments.append(f"Mirth passed the map variables {', '.join(passed)} along; Switchboard passes "
                                   "the message")
        template_field = "channelTemplate"
    else:
        return _lacking(result, label, f"a {transport or kind} destination")
    _retry(props, result)
    template = text(props, template_field) if template_field else ""
    if template.strip() and template.strip() != "${message.encodedData}":
        converted = velocity.convert(template, variables=variables, allowed=TEMPLATE_NAMES)
        if converted.ok:
            result.template = converted
            first = converted.segments[0] if converted.segments else ("text", "")
            result.template_kind = outbound if outbound == "json" else (
                "hl7" if outbound == "hl7" and first[0] == "text" and first[1].startswith("MSH") else "text")
        else:
            result.notes.append(Note(label, f"The destination's template uses {', '.join(converted.missing)}, which "
                                     "Switchboard has no value for; the destination sends the message as it is "
                                     "until it is ported.", "a destination transform (a Jinja template)",
                                     template, language="velocity"))
    return result


def _lacking(result: ConnectorResult, label: str, what: str) -> ConnectorResult:
    result.converted = False
    result.notes.append(Note(label, f"The destination is {what}, which Switchboard lacks; it is left out.",
                             _PORT_CONNECTOR))
    return result


def _retry(props: Element, result: ConnectorResult) -> None:
    common = props.find("destinationConnectorProperties")
    queue = flag(common, "queueEnabled", False)
    count = integer(common, "retryCount", 0)
    interval = max(integer(common, "retryIntervalMillis", 10000), 1)
    retry: dict = {"attempts": 0 if queue else count + 1, "interval": milliseconds(interval), "backoff": 1.0}
    if interval > 300_000:
        retry["max_interval"] = milliseconds(interval)
    result.retry = retry
    if queue:
        how = "queue on failure" if flag(common, "sendFirst", False) else "queue always (sent from the queue)"
        result.comments.append(f"Mirth: {how}, {count} retries first, then every {milliseconds(interval)}")


def _http(props: Element, velocity: Velocity, variables, label: str, result: ConnectorResult) -> None:
    url_raw = text(props, "host").strip()
    url = velocity.convert(url_raw, variables=variables, allowed=URL_NAMES)
    if not url.ok:
        result.converted = False
        result.notes.append(Note(label, f"The URL `{url_raw}` uses {', '.join(url.missing)}, which Switchboard has "
                                 "no value for; the destination is left out.", "`url` (a template: "
                                 "`{{ meta.NAME }}`)"))
        return
    method = text(props, "method", "post").strip().upper()
    if method not in ("POST", "PUT", "PATCH"):
        result.converted = False
        result.notes.append(Note(label, f"The HTTP Sender uses {method}; Switchboard's http destination sends a "
                                 "body with POST, PUT or PATCH. The destination is left out.", _PORT_CONNECTOR))
        return
    result.options += [Option("type", "http"), Option("url", Raw(url.toml(jinja=True)))]
    if method != "POST":
        result.options.append(Option("method", method))
    headers: dict[str, Raw] = {}
    for entry in props.find("headers") or []:
        children = list(entry)
        if len(children) < 2:
            continue
        name = children[0].text or ""
        values = [v.text or "" for v in children[1]] if children[1].tag == "list" else [children[1].text or ""]
        raw_value = ", ".join(values)
        converted = velocity.convert(raw_value, variables=variables, allowed=URL_NAMES)
        if converted.ok:   # a per-message value becomes a header template (``{{ meta.NAME }}``)
            headers[name] = Raw(converted.toml(jinja=converted.uses_jinja))
        else:
            result.notes.append(Note(label, f"The header `{name}: {raw_value}` uses {', '.join(converted.missing)}, "
                                     "which Switchboard has no value for; it is left out.",
                                     "a header template (`{{ meta.NAME }}` from a `[metadata]` entry)"))
    content_type = text(props, "contentType").strip()
    if content_type:
        charset = text(props, "charset", "UTF-8").strip()
        value = content_type if "charset" in content_type.lower() or not charset else f"{content_type}; charset={charset}"
        converted = velocity.convert(value, variables=set(), allowed=frozenset())
        if converted.ok and not any(n.lower() == "content-type" for n in headers):
            headers["Content-Type"] = Raw(converted.toml(jinja=False))
    if headers:
        result.options.append(Option("headers", headers))
    if integer(props, "socketTimeout") > 0:
        result.options.append(Option("timeout", milliseconds(integer(props, "socketTimeout"))))
    if flag(props, "useHeadersVariable", False) or flag(props, "useParametersVariable", False):
        result.notes.append(Note(label, "Mirth took headers or query parameters from a map variable; they are not "
                                 "sent.", "fixed `headers`, or the `url` template"))
    params = props.find("parameters")
    if params is not None and len(params):
        result.notes.append(Note(label, "Mirth added query parameters; they are not sent.",
                                 "the `url` (a template)"))
    if flag(props, "useAuthentication", False):
        result.notes.append(Note(label, f"Mirth authenticated ({text(props, 'authenticationType')}) with a user "
                                 "name and password that are not copied.", "`headers = { Authorization = "
                                 "\"Basic ${HTTP_AUTH}\" }` or a token"))
