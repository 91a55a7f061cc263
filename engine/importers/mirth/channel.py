"""One Mirth channel -> one channel file (its TOML text), its template files and its notes.

The channel file says where everything came from: a header comment with the Mirth name and id, a
comment beside each converted key or step with its Mirth name, and a comment wherever the conversion
is approximate (a setting Switchboard does not have, a Mirth quirk kept as it was).  Names: Mirth
allows any text, Switchboard channel and destination names are ``[A-Za-z0-9][A-Za-z0-9._-]*`` and are
also file names, so both are made lower-case slugs ("ADT Router - PAS to RIS" -> "adt-router-pas-to-ris",
"To RIS" -> "to-ris"); the Mirth name stays in a comment, and the description is kept as it was.

Disabled things: a disabled channel is ``enabled = false`` (Mirth's "initial state: stopped" too); a
disabled destination is written in full with ``enabled = false`` (the loader checks it and leaves it
out, so enabling it later is one word); a disabled filter rule or transformer step is not part of
Mirth's script, so it is left out of the converted expression/step and named in a comment.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

from engine.importers.mirth import steps
from engine.importers.mirth.connectors import (
    Option,
    Raw,
    convert_destination,
    convert_source,
    data_type,
)
from engine.importers.mirth.notes import Note, Section
from engine.importers.mirth.toml_text import key as toml_key
from engine.importers.mirth.toml_text import literal, quote, quote_multiline
from engine.importers.mirth.toml_text import value as toml_value
from engine.importers.mirth.velocity import Velocity
from engine.importers.mirth.xml_read import flag, integer, text

DEFAULT_SCRIPTS = {"preprocessingScript": "return message;", "postprocessingScript": "return;",
                   "deployScript": "return;", "undeployScript": "return;"}
SCRIPT_NAMES = {"preprocessingScript": ("Preprocessor script", "a plugin transform step placed first, or a "
                                        "`when` filter"),
                "postprocessingScript": ("Postprocessor script", "an alert (DESIGN [alerts]) or a plugin"),
                "deployScript": ("Deploy script", "a plugin (it runs once at start)"),
                "undeployScript": ("Undeploy script", "a plugin (it runs once at stop)")}
_EXTENSIONS = {"hl7": "hl7", "json": "json", "text": "txt", "xml": "xml", "csv": "csv"}


def slug(name: str, fallback: str = "channel") -> str:
    text_ = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return text_ or fallback


def effective_code(script: str) -> str:
    """The script without comments and blank space: Mirth's defaults come down to a bare return."""
    code = re.sub(r"/\*.*?\*/", "", script, flags=re.S)
    code = re.sub(r"//[^\n]*", "", code)
    return re.sub(r"\s+", " ", code).strip()


def is_default(script: str, kind: str) -> bool:
    code = effective_code(script)
    return code in ("", DEFAULT_SCRIPTS[kind], "return message;" if kind == "preprocessingScript" else "return;")


@dataclass
class ChannelOut:
    slug: str
    mirth_name: str
    mirth_id: str
    toml: str = ""
    files: dict[str, str] = field(default_factory=dict)
    section: Section | None = None
    javascript: list[tuple[str, str]] = field(default_factory=list)    # (where, code) for code-template use
    destination_metadata: list = field(default_factory=list)            # Mapper steps of destinations


@dataclass
class DestinationOut:
    name: str
    mirth_name: str
    enabled: bool
    options: list[Option] = field(default_factory=list)
    retry: dict | None = None
    filters: list[tuple[str, str]] = field(default_factory=list)       # (when, comment)
    transforms: list[list[str]] = field(default_factory=list)          # rendered [[destination.transform]] bodies
    comments: list[str] = field(default_factory=list)


def channel_enabled(channel: Element) -> tuple[bool, str]:
    metadata = channel.find("exportData/metadata")
    enabled = flag(metadata, "enabled", True) if metadata is not None else flag(channel, "enabled", True)
    state = text(channel, "properties/initialState").strip()
    if not enabled:
        return False, "disabled in Mirth"
    if state == "STOPPED":
        return False, "Mirth's initial state was STOPPED"
    return True, ""


def _claims_of(source_options: list[Option]) -> list[tuple[str, tuple, str]]:
    """What a source holds that no other enabled channel may: (key, what, shown)."""
    options = {option.key: option.value for option in source_options}
    held = []
    if options.get("type") in ("mllp", "http") and isinstance(options.get("listen"), str):
        host, _, port = options["listen"].rpartition(":")
        if port.isdigit() and int(port):
            held.append(("source.listen", (host.strip("[]"), int(port)), options["listen"]))
    if options.get("type") in ("file", "sftp") and isinstance(options.get("path") or options.get("remote_path"), str):
        path = (options.get("path") or options.get("remote_path")).rstrip("/") or "/"
        held.append((f"source.{'path' if options['type'] == 'file' else 'remote_path'}",
                     (options.get("host", ""), path), path))
    return held


def _clash(key: str, mine: tuple, theirs: tuple) -> bool:
    if key != "source.listen":
        return mine == theirs
    wildcard = ("", "0.0.0.0", "::")
    return mine[1] == theirs[1] and (mine[0] == theirs[0] or mine[0] in wildcard or theirs[0] in wildcard)


def convert_channel(channel: Element, *, slug_name: str, velocity: Velocity, channels_by_id: dict[str, str],
                    group: str = "", claims: list | None = None, name_taken_by: str | None = None) -> ChannelOut:
    """``claims`` collects the listen addresses and read folders of the enabled channels converted so far
    (shared across one import): a channel that would take one again is reported as `switchboard check`
    reports it and imported with ``enabled = false``.  ``name_taken_by``: the channel file whose name
    this channel's Mirth name also gives (this one was numbered)."""
    name = text(channel, "name").strip()
    ident = text(channel, "id").strip()
    out = ChannelOut(slug_name, name, ident)
    section = Section(f"Channel \"{name}\" -> channels/{slug_name}.toml")
    out.section = section
    header = [f"Imported from Mirth Connect {channel.get('version', '')} by `switchboard import mirth`:".replace("  ", " "),
              f"channel \"{name}\" (id {ident})" + (f", group \"{group}\"" if group else "") + "."]
    enabled, why = channel_enabled(channel)
    if why:
        header.append(f"enabled = false: {why}.")
    source = channel.find("sourceConnector")
    transformer = source.find("transformer") if source is not None else None
    inbound_name = text(transformer, "inboundDataType", "HL7V2")
    outbound_name = text(transformer, "outboundDataType", inbound_name)
    inbound = data_type(inbound_name)
    if inbound is None:
        section.notes.append(Note("Source data type", f"The channel's data type is {inbound_name}, which Switchboard "
                                  "does not parse; it is imported as `inbound = \"text\"`.",
                                  "a plugin step that parses it, or `inbound = \"x12\"` for X12 when available"))
        inbound = "text"
    outbound = data_type(outbound_name) or "text"
    if outbound != inbound:
        section.notes.append(Note("Source transformer data types", f"Mirth turned the {inbound_name} message into "
                                  f"{outbound_name} in the source transformer; Switchboard passes the {inbound} "
                                  "message on.", "a Jinja template step with `outbound = \"" + outbound + "\"`"))
    source_result = convert_source(source, velocity, inbound, slug_name)
    section.notes += source_result.notes
    if any(option.key == "split" and option.value == "hl7-batch" for option in source_result.options):
        section.differences.append("Mirth's batch reader (Process Batch, split by MSH) dropped the blanks at the end "
                                   "of each segment; Switchboard keeps every segment as it came. A message with "
                                   "trailing blanks goes out with them.")
    if not source_result.converted:
        enabled = False
        header.append("enabled = false: its source is not converted (IMPORT-NOTES.md).")
    header += source_result.comments
    if name_taken_by is not None:
        base = name_taken_by.rsplit("/", 1)[-1].removesuffix(".toml")
        section.notes.append(Note("Channel name", f"`channels/{slug_name}.toml: name: channel name '{base}' is already "
                                  f"used by {name_taken_by}` (two Mirth channels give this name); this one is "
                                  f"written as '{slug_name}'.", "a name of its own (`name` and the file name)"))
    for key, held, shown in _claims_of(source_result.options) if claims is not None else ():
        owner = next((owner for other_key, other, owner in claims if other_key == key and _clash(key, held, other)),
                     None)
        if owner is None:
            if enabled:
                claims.append((key, held, f"channel '{slug_name}' (channels/{slug_name}.toml)"))
            continue
        verb = "used" if key == "source.listen" else "read"
        section.notes.append(Note(f"Source ({key.split('.')[1]})", f"`channels/{slug_name}.toml: {key}: {shown} is "
                                  f"already {verb} by {owner}`; this channel is imported with `enabled = false`.",
                                  "a listen address or folder of its own, then `enabled = true`"))
        if enabled:
            header.append(f"enabled = false: its {key} is already {verb} by {owner} (IMPORT-NOTES.md).")
        enabled = False

    destinations = channel.findall("destinationConnectors/connector")
    dest_ids = [integer(d, "metaDataId") for d in destinations]
    variables: set[str] = set()
    used_keys: set[str] = set()

    # source filter and transformer
    source_filter = steps.convert_filter(source.find("filter"), "Source filter", inbound, variables)
    section.notes += source_filter.notes
    out.javascript += [(n.where, n.code) for n in source_filter.notes if n.code]
    source_steps = steps.convert_transformer(transformer, steps.TransformerContext(
        "Source transformer", inbound, outbound, variables, dest_ids, "source", used_keys))
    section.notes += source_steps.notes
    section.differences += source_steps.differences
    out.javascript += [(n.where, n.code) for n in source_steps.notes if n.code]
    json_step = _json_reserialized(transformer, inbound, outbound)
    if json_step is not None:
        out.files[f"transforms/{slug_name}/{JSON_TEMPLATE}"] = json_step

    # destinations
    dest_outs: list[DestinationOut] = []
    taken: set[str] = set()
    for connector in destinations:
        dest_outs.append(_destination(connector, out, section, velocity, variables, used_keys, inbound,
                                      source_steps, channels_by_id, taken))
    _scripts(channel, section, out)
    attachment = text(channel, "properties/attachmentProperties/type", "None").strip()
    if attachment not in ("", "None"):
        section.notes.append(Note("Attachments", f"Mirth extracted attachments ({attachment}); Switchboard keeps the "
                                  "message whole.", "a plugin transform step",
                                  text(channel, "properties/attachmentProperties/properties") or None))
    for column in channel.findall("properties/metaDataColumns/metaDataColumn"):
        mapping = text(column, "mappingName").strip()
        if mapping in ("mirth_source", "mirth_type"):
            continue
        if mapping not in variables:
            header.append(f"Mirth's metadata column {text(column, 'name')} ({mapping}) was set by JavaScript: "
                          "not converted.")
    out.toml = _render(out, header, enabled, channel, inbound, source_result, source_filter, source_steps,
                       dest_outs)
    return out


def _destination(connector, out, section, velocity, variables, used_keys, inbound, source_steps, channels_by_id,
                 taken) -> DestinationOut:
    mirth_name = text(connector, "name").strip()
    name = slug(mirth_name, "destination")
    base, counter = name, 2
    while name in taken:
        name, counter = f"{base}-{counter}", counter + 1
    taken.add(name)
    meta_id = integer(connector, "metaDataId")
    dest = DestinationOut(name, mirth_name, flag(connector, "enabled", True))
    where = f"Destination \"{mirth_name}\""
    transformer = connector.find("transformer")
    dest_in = data_type(text(transformer, "inboundDataType", "HL7V2")) or "text"
    dest_outbound = data_type(text(transformer, "outboundDataType", "HL7V2")) or "text"
    # destination set filter removals from the source transformer
    for when, comment in source_steps.removals.get(meta_id, []):
        dest.filters.append((when, comment))
    flt = steps.convert_filter(connector.find("filter"), f"{where} filter", inbound, variables)
    section.notes += flt.notes
    out.javascript += [(n.where, n.code) for n in flt.notes if n.code]
    hits = steps._overlaps(flt.paths, source_steps.edited)
    if flt.when is not None and hits:
        section.notes.append(Note(f"{where} filter", f"The filter reads {', '.join(hits)}, which the source "
                                  "transformer changed; a destination filter sees the message as received. The "
                                  f"filter is left out: `{flt.when}`.", "a `when` expression on the original values"))
    elif flt.when is not None:
        dest.filters.append((flt.when, "; ".join(flt.comments)))
    else:
        dest.comments += flt.comments
    if dest_in != inbound and dest_in is not None:
        dest.comments.append(f"Mirth's destination data type was {text(transformer, 'inboundDataType')}")
    dsteps = steps.convert_transformer(transformer, steps.TransformerContext(
        f"{where} transformer", dest_in if dest_in else inbound, dest_outbound, variables, [], "destination",
        used_keys))
    section.notes += dsteps.notes
    section.differences += dsteps.differences
    out.javascript += [(n.where, n.code) for n in dsteps.notes if n.code]
    dest.comments += dsteps.comments
    if dsteps.metadata:
        out.destination_metadata += dsteps.metadata
    if dsteps.edits:
        # Mirth's destination transformer starts from the source transformer's output; a destination's
        # steps start from the message as received (DESIGN §3.3), so the source's edits run again first
        dest.transforms.append(_edit_block(source_steps.edits + dsteps.edits))
        if source_steps.edits:
            dest.comments.append(f"the first {len(source_steps.edits)} edit(s) repeat the source transformer's: "
                                 "Mirth's destination transformer started from its output")
    result = convert_destination(connector, velocity, variables, dest_outbound, out.slug, name, channels_by_id)
    section.notes += result.notes
    dest.comments += result.comments
    dest.options = result.options
    dest.retry = result.retry
    if not result.converted:
        dest.options = []
        return dest
    if result.template is not None:
        ext = _EXTENSIONS.get(result.template_kind, "txt")
        body = result.template.template_file()
        if body is not None:
            rel = f"{out.slug}/{name}.{ext}.j2"
            out.files[f"transforms/{rel}"] = body
            dest.transforms.append([f"template = {quote(literal(rel))}",
                                    f"outbound = {quote(result.template_kind)}"])
        else:
            dest.transforms.append([f"inline = {quote(result.template.toml(jinja=True))}",
                                    f"outbound = {quote(result.template_kind)}"])
    written = [str(option.value) for option in dest.options] + [line for body in dest.transforms for line in body]
    written += [out.files[path] for path in out.files if path.startswith(f"transforms/{out.slug}/{name}.")]
    if dest.enabled and any(re.search(r"\{\{-?\s*id\s*-?\}\}", piece) for piece in written):
        section.differences.append(f"Destination \"{mirth_name}\" uses `${{message.messageId}}`, now `{{{{ id }}}}`: "
                                   "Switchboard's message id (the store's), not Mirth's count from 1 per channel, "
                                   "so a file name or body built with it holds a different number.")
    response = connector.find("responseTransformer")
    for index, element in enumerate(steps.elements(response), 1):
        if not flag(element, "enabled", True):
            continue
        label = steps.step_label(f"{where} response transformer", index, element, "step")
        code = text(element, "script") if element.find("script") is not None else steps._describe(element)
        section.notes.append(Note(label, "A response transformer step: Switchboard keeps the peer's response as it "
                                  "came.", "a plugin destination, or an alert on errors", code,
                                  "javascript" if element.find("script") is not None else "xml"))
        if element.find("script") is not None:
            out.javascript.append((label, code))
    return dest


JSON_TEMPLATE = "mirth-json.json.j2"
# JSON.stringify as Mirth's JSON data type wrote it: compact, keys in their order, no final newline
_COMPACT_JSON = """{#- Mirth re-serialized the JSON message (JSON.stringify) after the source transformer ran -#}
{%- macro compact(value) -%}
{%- if value is mapping -%}
{ {%- for key, item in value.items() -%}{{ key | tojson }}:{{ compact(item) }}{{ "," if not loop.last }}{%- endfor -%} }
{%- elif value is sequence and value is not string -%}
[ {%- for item in value -%}{{ compact(item) }}{{ "," if not loop.last }}{%- endfor -%} ]
{%- else -%}
{{ value | tojson }}
{%- endif -%}
{%- endmacro -%}
{{ compact(msg) -}}"""


def _json_reserialized(transformer, inbound: str, outbound: str) -> str | None:
    """Mirth runs a JSON channel's source transformer script only when it has steps, and then sends
    ``JSON.stringify(msg)``: the message compacted.  The template that does the same, or None."""
    if inbound != "json" or outbound != "json":
        return None
    if not any(flag(element, "enabled", True) for element in steps.elements(transformer)):
        return None
    return _COMPACT_JSON + "\n"


def _scripts(channel: Element, section: Section, out: ChannelOut) -> None:
    for tag, (label, port) in SCRIPT_NAMES.items():
        script = text(channel, tag)
        if script and not is_default(script, tag):
            section.notes.append(Note(label, "A channel script that is not Mirth's default.", port, script))
            out.javascript.append((label, script))


def _edit_block(edits: list[steps.EditOp]) -> list[str]:
    lines = ["edit = ["]
    for edit in edits:
        op = {k: (literal(v) if isinstance(v, str) else v) for k, v in edit.op.items()}
        line = f"  {toml_value(op)},"
        if edit.comment:
            line += f"   # {_one_line(edit.comment)}"
        lines.append(line)
    lines.append("]")
    return lines


def _one_line(comment: str) -> str:
    return comment.replace("\r", " ").replace("\n", " ")


def _option_line(option: Option) -> str:
    value = option.value
    if isinstance(value, dict):
        value = {k: (v if isinstance(v, Raw) else literal(v) if isinstance(v, str) else v) for k, v in value.items()}
    elif isinstance(value, str) and not isinstance(value, Raw):
        value = literal(value)
    line = f"{toml_key(option.key)} = {toml_value(value)}"
    return line + (f"   # {_one_line(option.comment)}" if option.comment else "")


def _render(out: ChannelOut, header, enabled, channel, inbound, source_result, source_filter, source_steps,
            dest_outs: list[DestinationOut]) -> str:
    lines = [f"# {_one_line(line)}" for line in header]
    if out.section.notes:
        lines.append(f"# IMPORT-NOTES.md lists {len(out.section.notes)} thing(s) in this channel that need a person.")
    lines.append(f"name = {quote(out.slug)}")
    description = text(channel, "description")
    if description:
        lines.append(f"description = {quote_multiline(literal(description))}")
    lines.append(f"enabled = {toml_value(enabled)}")
    lines.append(f"inbound = {quote(inbound)}")
    lines += ["", "[source]"] + [_option_line(option) for option in source_result.options]
    if source_filter.when is not None:
        lines += [""] + [f"# source filter, {_one_line(c)}" for c in source_filter.comments]
        lines += ["[[filter]]", f"when = {quote(literal(source_filter.when))}"]
    else:
        lines += [f"# source filter: {_one_line(c)}" for c in source_filter.comments]
    for comment in source_steps.comments:
        lines.append(f"# {_one_line(comment)}")
    if source_steps.edits:
        lines += ["", "[[transform]]   # the source transformer's Message Builder steps"]
        lines += _edit_block(source_steps.edits)
    if f"transforms/{out.slug}/{JSON_TEMPLATE}" in out.files:
        lines += ["", "[[transform]]   # Mirth sent the JSON re-serialized (compact) once its source transformer ran",
                  f"template = {quote(literal(out.slug + '/' + JSON_TEMPLATE))}", 'outbound = "json"']
    metadata = source_steps.metadata + out.destination_metadata
    if metadata:
        lines += ["", "[metadata]   # Mirth's Mapper steps: per-message values, {{ meta.NAME }} in templates"]
        for item in metadata:
            line = f"{toml_key(item.key)} = {quote(literal(item.value))}"
            lines.append(line + (f"   # {_one_line(item.comment)}" if item.comment else ""))
    for dest in dest_outs:
        lines.append("")
        if not dest.options:
            lines.append(f"# Mirth destination \"{dest.mirth_name}\" is not converted: see IMPORT-NOTES.md")
            lines += [f"# {_one_line(c)}" for c in dest.comments]
            continue
        lines += [f"# {_one_line(c)}" for c in dest.comments]
        lines.append("[[destination]]")
        lines.append(f"name = {quote(dest.name)}   # Mirth: {_one_line(dest.mirth_name)}")
        if not dest.enabled:
            lines.append("enabled = false   # disabled in Mirth")
        lines += [_option_line(option) for option in dest.options]
        if dest.retry is not None:
            lines.append(f"retry = {toml_value(dest.retry)}")
        for when, comment in dest.filters:
            lines += ["", "  [[destination.filter]]" + (f"   # {_one_line(comment)}" if comment else ""),
                      f"  when = {quote(literal(when))}"]
        for body in dest.transforms:
            lines += ["", "  [[destination.transform]]"] + [f"  {line}" for line in body]
    return "\n".join(lines) + "\n"
