"""``switchboard test CHANNEL FILE``: the channel's real pipeline over each message, with no I/O.

Uses the same ``ChannelPipeline.run`` as the daemon, so what the dry run shows is what the daemon
would do; only storing and sending are left out.  ``body`` is exactly what each destination
would send.
"""

from __future__ import annotations

from datetime import datetime, timezone

from engine.core.message import Message, MessageParseError
from engine.core.pipeline import EditStep, PipelineError
from engine.runtime.assembly import build_templates, compile_channel


def dry_run(config, registry, channel_config, raw_messages: list[str]) -> list[dict]:
    compiled = compile_channel(channel_config, registry, build_templates(config, registry))
    if compiled.pipeline is None:
        raise PipelineError(compiled.problems)
    pipeline = compiled.pipeline
    all_stages = [pipeline.channel_stages, *pipeline.destination_stages.values()]
    edit_steps = [step for stages in all_stages for step, _outbound, _name in stages.steps
                  if isinstance(step, EditStep)]
    results = []
    for number, raw in enumerate(raw_messages, 1):
        message = Message(raw, channel_config.inbound, id=number, channel=channel_config.name,
                          received_at=datetime.now(timezone.utc))
        meta = pipeline.metadata(message)
        for step in edit_steps:
            step.last_changes = []
        outcome = pipeline.run(message, meta)
        results.append({
            "id": number,        # the dry run's message id: what {{ id }} rendered as
            "status": outcome.status,
            **({"x12": _x12_outline(message)} if message.inbound == "x12" else {}),
            "meta": meta,
            "filters": [{"name": f.name, "passed": f.passed, "reason": f.reason, "rules": f.rules}
                        for f in outcome.filters],
            "transformed": outcome.transformed,
            "edits": [{"step": step.name, "changes": [change._asdict() for change in step.last_changes]}
                      for step in edit_steps if step.last_changes],
            "error": outcome.error,
            "destinations": [
                {"name": plan.name, "filtered": plan.filtered, "body": plan.body, "error": plan.error,
                 "filters": [{"name": f.name, "passed": f.passed, "reason": f.reason} for f in plan.filters]}
                for plan in outcome.destinations
            ],
        })
    return results


def _x12_outline(message: Message) -> dict | None:
    """The transaction and its loops (``X12View.outline``), or None when it does not parse."""
    try:
        return message.view.outline()
    except MessageParseError:
        return None
