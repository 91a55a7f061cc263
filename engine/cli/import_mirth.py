"""``switchboard import mirth FILE... [--out DIR] [--strict] [--force]`` (DESIGN §3.10)."""

from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("kind", choices=["mirth"], help="what the files are: mirth (Mirth Connect 3.x/4.x exports)")
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="a channel, a channel group or a whole server configuration export (XML)")
    parser.add_argument("--out", default=".", metavar="DIR",
                        help="where channels/, transforms/, lookups/ and IMPORT-NOTES.md go (default: .)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when IMPORT-NOTES.md lists anything")
    parser.add_argument("--force", action="store_true", help="overwrite files that exist")


def command(args, _config_path) -> int:
    # only this verb needs the importer (and defusedxml): not imported at every start of the daemon
    from engine.importers.mirth.entry import import_mirth

    return import_mirth([Path(f) for f in args.files], Path(args.out), strict=args.strict, force=args.force,
                        stdout=sys.stdout, stderr=sys.stderr)
