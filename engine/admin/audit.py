"""The audit log: who (a token's name) viewed, searched, replayed or changed what, by message id.

The admin API and the dashboard record through ``AuditLog.record`` and wait for its commit before
they answer, so nothing is shown that was not recorded first. The rows and their hash chain are
the store's (``Store.append_audit``, ``audit_entries``, ``verify_audit``).

``detail`` is JSON with ids, filter names, counts and statuses: never message content, and for a
search only the *keys* of ``meta.*`` filters (their values may be patient data).
"""

from __future__ import annotations


class AuditLog:
    """The daemon's writer side: ``record(who, action, target, detail)`` -> Deferred[row id]."""

    def __init__(self, store) -> None:
        self.store = store

    def record(self, who: str, action: str, target: str = "", detail=None):
        return self.store.append_audit(who, action, target, detail)
