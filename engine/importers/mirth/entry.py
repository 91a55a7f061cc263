"""``switchboard import mirth FILE... [--out DIR] [--strict] [--force]``: the whole import in one call.

All files are read and converted in memory first; a file that is malformed, foreign or unsafe stops
the import with one sentence and nothing is written.  The output is written into a temporary folder
inside DIR and moved into place file by file at the end, so a failure while writing leaves no
half-written file behind.  An existing file is not overwritten without ``force``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TextIO

from engine.importers.mirth import code_templates
from engine.importers.mirth.channel import convert_channel, effective_code, slug
from engine.importers.mirth.discover import Export, discover
from engine.importers.mirth.notes import Note, Section, render
from engine.importers.mirth.velocity import Velocity
from engine.importers.mirth.xml_read import ImportRefused, read_xml, text

NOTES = "IMPORT-NOTES.md"
_GLOBAL_DEFAULTS = {"return;", "return message;", ""}


def import_mirth(files: list[Path], out: Path, *, strict: bool, force: bool, stdout: TextIO, stderr: TextIO) -> int:
    """Convert Mirth Connect exports into channel files under ``out``; the exit code (0, or 1 with one
    sentence on ``stderr``)."""
    try:
        outputs, items, summary = build(files)
    except ImportRefused as refused:
        print(str(refused), file=stderr)
        return 1
    out = Path(out)
    existing = [rel for rel in outputs if (out / rel).exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        print(f"{out / existing[0]} already exists{more}; nothing was written (use --force to overwrite).",
              file=stderr)
        return 1
    try:
        write(out, outputs)
    except OSError as error:
        print(f"cannot write into {out}: {error.strerror or error}; nothing was written.", file=stderr)
        return 1
    for line in summary:
        print(line, file=stdout)
    print(f"{NOTES}: {items} item{'s' if items != 1 else ''} need{'s' if items == 1 else ''} a person.", file=stdout)
    if strict and items:
        print(f"--strict: {items} item{'s' if items != 1 else ''} in {out / NOTES} "
              f"need{'s' if items == 1 else ''} a person.", file=stderr)
        return 1
    return 0


def build(files: list[Path]) -> tuple[dict[str, str], int, list[str]]:
    """Every output file (relative path -> text), the number of notes, and the summary lines."""
    export = Export()
    if not files:
        raise ImportRefused("no export files given.")
    for file in files:
        discover(Path(file), read_xml(Path(file)), export)
    velocity = Velocity(export.config_map)
    slugs: dict[str, str] = {}
    clashes: dict[int, str] = {}      # channel -> the file that has its name
    taken: set[str] = set()
    for found in export.channels:
        base = slug(text(found.channel, "name").strip())
        name, counter = base, 2
        while name in taken:
            name, counter = f"{base}-{counter}", counter + 1
        if name != base:
            clashes[id(found.channel)] = f"channels/{base}.toml"
        taken.add(name)
        slugs[id(found.channel)] = name
    channels_by_id = {text(f.channel, "id").strip(): slugs[id(f.channel)] for f in export.channels}
    outputs: dict[str, str] = {}
    sections: list[Section] = []
    summary: list[str] = []
    converted = []
    claims: list = []
    for found in export.channels:
        result = convert_channel(found.channel, slug_name=slugs[id(found.channel)], velocity=velocity,
                                 channels_by_id=channels_by_id, group=found.group, claims=claims,
                                 name_taken_by=clashes.get(id(found.channel)))
        converted.append(result)
        outputs[f"channels/{result.slug}.toml"] = result.toml
        outputs.update(result.files)
        sections.append(result.section)
        summary.append(f"channels/{result.slug}.toml  <- Mirth channel \"{result.mirth_name}\"")
    for found in export.channels:
        for library in found.channel.findall("exportData/codeTemplateLibraries/codeTemplateLibrary"):
            export.libraries.append(library)
    sections.append(_code_templates(export, converted, outputs, summary))
    sections.append(_server(export, velocity))
    outputs[NOTES] = render(sections)
    items = sum(len(section.notes) for section in sections)
    return outputs, items, summary


def _code_templates(export: Export, converted, outputs: dict[str, str], summary: list[str]) -> Section:
    section = Section("Code template libraries", "JavaScript shared by channels. Switchboard does not run "
                      "JavaScript; a function's job goes to a code table (lookups/, DESIGN §3.9) with a `map` "
                      "edit operation, or to a template helper from a plugin (`register_template_helpers`).")
    seen: set[str] = set()
    tables: set[str] = set()
    for library in export.libraries:
        for template in code_templates.templates_of(library):
            ident = template.id or f"{template.library}/{template.name}/{template.code}"
            if ident in seen:
                continue
            seen.add(ident)
            callers = []
            for channel in converted:
                for where, code in channel.javascript:
                    if any(f"{fn}(" in code for fn in template.functions):
                        callers.append(f"channel \"{channel.mirth_name}\", {where}")
            used = ("Called by: " + "; ".join(callers) + ".") if callers else \
                "No imported channel's JavaScript calls it."
            port = "a template helper registered by a plugin, or a code table"
            extracted = code_templates.extract_table(template.code) if template.kind != "DRAG_AND_DROP_CODE" else None
            if extracted and template.functions:
                rows, options = extracted
                table = template.functions[0]
                if table not in tables:
                    tables.add(table)
                    outputs[f"lookups/{table}.csv"] = code_templates.table_csv(rows)
                    if options.get("case"):
                        outputs[f"lookups/{table}.toml"] = 'case = "insensitive"\n'
                    summary.append(f"lookups/{table}.csv  <- the table in code template \"{template.name}\"")
                default = options.get("default")
                port = (f"the code table `lookups/{table}.csv` (extracted from this function by the import): a "
                        f"`map` edit operation with `table = \"{table}\"`"
                        + (f", `missing = \"default\"`, `default = \"{default}\"`" if default is not None else
                           " (`missing = \"keep\"` returns an unknown code unchanged)")
                        + " replaces each call")
            kind = {"FUNCTION": "function", "DRAG_AND_DROP_CODE": "code snippet",
                    "COMPILED_CODE": "compiled code"}.get(template.kind, template.kind.lower())
            section.notes.append(Note(f"Library \"{template.library}\", template \"{template.name}\" ({kind})",
                                      f"A code template. {used}", port, template.code))
    return section


def _server(export: Export, velocity: Velocity) -> Section:
    section = Section("Server configuration and environment")
    for name, script in export.global_scripts.items():
        if effective_code(script) not in _GLOBAL_DEFAULTS:
            section.notes.append(Note(f"Global {name} script", "A global script that is not Mirth's default; it ran "
                                      "for every channel.", "a plugin (hooks run for every channel)", script))
    if export.alerts:
        section.notes.append(Note("Alerts", f"Mirth alerts ({', '.join(export.alerts)}) are not converted.",
                                  "`[alerts]` in config.toml (thresholds and a webhook) or an alert plugin"))
    for env, (key, default) in sorted(velocity.env_used.items()):
        if default is not None:
            continue
        if export.config_map is None:
            what = (f"`${{{env}}}` stands for Mirth's `${{{key}}}`, taken to be a configuration map entry (the map "
                    "was not imported); the channels that use it do not load until it is set.")
        else:
            what = (f"`${{{env}}}` stands for the configuration map entry `{key}`, whose value is not copied (it looks "
                    "like a secret, or holds a `}}`).")
        section.notes.append(Note(f"Environment variable {env}", what, "set the environment variable before "
                                  "`switchboard check` / `run` (or import configuration-map.xml with the channels)"))
    return section


def write(out: Path, outputs: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".switchboard-import-", dir=out))
    try:
        for rel, content in outputs.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode("utf-8"))
        for rel in outputs:
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
