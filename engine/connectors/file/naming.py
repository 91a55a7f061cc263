"""The ``filename`` template of the file and SFTP destinations: what it sees, and what it may give.

It sees what every template sees (DESIGN §3.3): ``msg`` (the inbound message as the channel's
templates see it), ``raw``, ``meta``, ``channel``, ``id``, ``received_at``, plus ``body`` (what is
sent) and ``delivery`` (the delivery's id).  The message is read back from the store only when the
template names ``msg``, ``raw`` or ``received_at`` (the connector context's ``message_for``), in a
pool thread with the write.  The rendered name must stay a plain file name in the folder
(``safe_filename``): no ``/``, ``\\``, NUL, leading dot, or empty name.
"""

from __future__ import annotations

from jinja2 import meta as jinja_meta

from engine.core.contracts import PermanentError

MESSAGE_NAMES = frozenset({"msg", "raw", "received_at"})


def safe_filename(name: str) -> str:
    """Refuse names that could leave the directory or hide (path traversal, NUL, dot files)."""
    name = name.strip()
    if not name or "/" in name or "\\" in name or "\x00" in name or name.startswith(".") or name in ("..", "."):
        raise PermanentError("the rendered filename is empty or not a plain file name")
    return name


class FilenameTemplate:
    def __init__(self, context, source: str, name: str) -> None:
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
            return safe_filename(self.template.render(values))
        except TemplateError as error:
            raise PermanentError(f"filename template: {error}") from None
