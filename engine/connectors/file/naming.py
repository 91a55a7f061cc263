"""The ``filename`` template of the file and SFTP destinations: what it sees, and what it may give.

It sees what every template sees (DESIGN §3.3): ``msg`` (the inbound message as the channel's
templates see it), ``raw``, ``meta``, ``channel``, ``id``, ``received_at``, plus ``body`` (what is
sent) and ``delivery`` (the delivery's id).  The message is read back from the store only when the
template names ``msg``, ``raw`` or ``received_at`` (the connector context's ``message_for``), in a
pool thread with the write.  The rendered name must stay a plain file name in the folder
(``safe_filename``): no ``/``, ``\\``, NUL, leading dot, or empty name; no control character
(newline, CR, tab, any other C0 or C1 character, DEL), which a file source refuses and which
breaks every line-based tool that lists the folder; and short enough for the file system, with
room for the destination's temporary name (``.NAME.tmp-PID``, ``.partial/NAME.journal``,
``.NAME.tmp`` on SFTP): at most NAME_MAX bytes (255 on Linux file systems, asked of the folder's
file system with ``pathconf``) and the whole path under PATH_MAX.

Each refusal is a ``PermanentError``: the name comes from the message (a 300-byte PID-18), so a
retry would render the same name and fail the same way, holding every later message behind it.
The message goes ERROR with a reason that names sizes and the character's code point, never
the name (it may be patient data), and the line moves on.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from jinja2 import meta as jinja_meta

from engine.core.contracts import PermanentError

MESSAGE_NAMES = frozenset({"msg", "raw", "received_at"})


NAME_MAX = 255       # bytes in one name: ext4, xfs, btrfs, tmpfs; SFTP servers are assumed alike
PATH_MAX = 4096      # bytes in a whole path, Linux


def safe_filename(name: str, *, name_max: int = NAME_MAX, reserve: int = 0, directory=None,
                  path_max: int = PATH_MAX) -> str:
    """Refuse names that could leave the directory or hide (path traversal, NUL, dot files), that
    hold control characters, or that the file system cannot store: ``reserve`` bytes are kept for
    what the destination adds around the name for its temporary file."""
    name = name.strip()
    if not name or "/" in name or "\\" in name or "\x00" in name or name.startswith(".") or name in ("..", "."):
        raise PermanentError("the rendered filename is empty or not a plain file name")
    control = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise PermanentError(f"the rendered filename holds a control character (U+{ord(control):04X}); "
                             "a file name may not hold a newline, CR, tab or any other control character")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise PermanentError("the rendered filename is not valid text (a lone surrogate)") from None
    if size + reserve > name_max:
        raise PermanentError(f"the rendered filename is {size} bytes, over this destination's limit of "
                             f"{name_max - reserve} bytes (the file system's {name_max}, less {reserve} for "
                             "the temporary name)")
    if directory is not None:
        total = len(os.fsencode(str(directory))) + 1 + size + reserve
        if total >= path_max:
            raise PermanentError(f"the file's path would be {total} bytes, over the file system's "
                                 f"limit of {path_max - 1}")
    return name


def name_limits(directory) -> tuple[int, int]:
    """(NAME_MAX, PATH_MAX) of the file system holding ``directory`` (or its nearest existing
    parent: the folder is made at the first write); the Linux values when pathconf cannot say."""
    path = Path(directory).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return os.pathconf(path, "PC_NAME_MAX"), os.pathconf(path, "PC_PATH_MAX")
    except (OSError, ValueError):
        return NAME_MAX, PATH_MAX


class FilenameTemplate:
    """``reserve``: bytes the destination adds to a name for its temporary file; ``directory``: the
    local folder (its file system's limits are asked once, lazily), or None with ``name_max`` /
    ``path_max`` given (SFTP: the remote's limits are not asked, the Linux ones are assumed)."""

    def __init__(self, context, source: str, name: str, *, reserve: int = 0, directory=None,
                 remote_path: str | None = None) -> None:
        self.reserve = reserve
        self.directory = directory
        self.remote_path = remote_path
        self._limits: tuple[int, int] | None = None if directory is not None else (NAME_MAX, PATH_MAX)
        self.template = context.templates.from_string(source, name)
        self.channel = context.channel_name
        self.message_for = getattr(context, "message_for", None)
        names = jinja_meta.find_undeclared_variables(context.templates.environment.parse(source))
        self.needs_message = bool(names & MESSAGE_NAMES)

    def render(self, delivery, **extra) -> str:
        """The file name for ``delivery`` (PermanentError for a template error or an unsafe name).
        Reads the store when the template needs the message: call it off the reactor thread."""
        from engine.core.templates import TemplateError

        values = {"id": delivery.message_id, "meta": delivery.meta or {}, "channel": self.channel,
                  "delivery": delivery.id, "body": delivery.body, **extra}
        if self.needs_message:
            message = self.message_for(delivery.message_id) if self.message_for is not None else None
            if message is None:
                raise PermanentError("filename template: the message's content is not in the store "
                                     "(pruned?), and the template reads msg, raw or received_at")
            values.update(msg=message.view, raw=message.raw, received_at=message.received_at)
        try:
            rendered = self.template.render(values)
        except TemplateError as error:
            raise PermanentError(f"filename template: {error}") from None
        if self._limits is None:
            self._limits = name_limits(self.directory)
        name_max, path_max = self._limits
        return safe_filename(rendered, name_max=name_max, reserve=self.reserve, path_max=path_max,
                             directory=self.directory if self.directory is not None else self.remote_path)
