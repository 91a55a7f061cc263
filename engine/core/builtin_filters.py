"""Built-in filter and transform plugins that ship with the engine (registered via the hooks).

``require-fields``: pass only messages whose listed HL7 paths are all non-empty — the check an
analyst writes most often, without an expression.  ``message-type``: pass only the listed
MSH-9 types ("ADT^A04", "DFT" for any trigger).
"""

from __future__ import annotations

from engine.hookspecs import hookimpl
from engine.core.pipeline import FilterResult


class RequireFields:
    def __init__(self, options: dict) -> None:
        fields = options.pop("fields", None)
        if not isinstance(fields, (list, tuple)) or not fields or not all(isinstance(f, str) for f in fields):
            raise ValueError("require-fields needs fields = [\"PID.3.1\", ...]")
        if options:
            raise ValueError(f"require-fields: unknown option(s) {', '.join(sorted(options))}")
        self.fields = fields
        self.name = "require-fields"

    def check(self, message, context):
        view = message.view
        missing = [path for path in self.fields if not view[path]]
        if missing:
            return FilterResult(False, f"empty: {', '.join(missing)}")
        return FilterResult(True)


class MessageType:
    def __init__(self, options: dict) -> None:
        types = options.pop("types", None)
        if not isinstance(types, (list, tuple)) or not types:
            raise ValueError("message-type needs types = [\"ADT^A04\", \"DFT\", ...]")
        if options:
            raise ValueError(f"message-type: unknown option(s) {', '.join(sorted(options))}")
        self.types = {t.upper() for t in types}
        self.name = "message-type"

    def check(self, message, context):
        message_type = (message.message_type or "").upper()
        code = message_type.split("^")[0]
        if message_type in self.types or code in self.types:
            return FilterResult(True)
        return FilterResult(False, f"type {message_type or '(none)'} not in {sorted(self.types)}")


@hookimpl
def register_filters():
    return {"require-fields": RequireFields, "message-type": MessageType}
