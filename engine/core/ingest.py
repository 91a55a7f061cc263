"""From one HL7 frame to one HL7 answer: checks, batch splitting and the ACK code (DESIGN §3.5).

Shared by every source that answers in HL7 (the MLLP listener, the HTTP source with HL7 bodies),
so that "AR for what is not HL7, AA only once stored, AE when storing or processing failed" is
decided in one place.  Only the MSH segment is read here (``peek_msh``); the full message is
parsed later, and only if a filter or transform needs it.
"""

from __future__ import annotations

from twisted.internet import defer

from engine.hl7.acceptance import check_hl7, holds_several_messages, is_batch
from engine.hl7.ack import build_ack, build_reject
from engine.hl7.batch import split_batch
from engine.hl7.msh import Msh


def ack_for(msh: Msh, receipt) -> str:
    """The ACK for a message the channel took: AA when stored/processed, AE with ERR otherwise."""
    if receipt.ok:
        return build_ack(msh, "AA")
    return build_ack(msh, "AE", "message not accepted", error=receipt.error or "processing failed")


def answer_frame(sink, text: str, *, split_batches: bool, original: bytes | None = None) -> defer.Deferred:
    """Hand one decoded, normalized frame to ``sink``; the Deferred fires with the HL7 answer text.

    A batch (FHS/BHS, or messages one after another in one frame) is split when the channel says so
    (RELIABILITY 13) and answered with one ACK
    mirroring its first message: AA only when every message in it was taken.  Without splitting,
    a frame with a second MSH is answered AR (``check_hl7``).  ``original``: the
    frame's bytes when decoding it replaced invalid ones (RELIABILITY 17), else None; a batch keeps
    them once, on its first message (the bytes cannot be cut per message once decoding was lossy,
    and a copy on every message would multiply the frame's size by its message count).

    The single-message path is a plain callback on the sink's Deferred rather than a generator
    under ``@inlineCallbacks``: it runs for every message, and the generator's machinery cost
    more than the rest of this function (bench/README.md, "Cuts (issue 22)").
    """
    try:
        if split_batches and (is_batch(text) or holds_several_messages(text)):   # FHS/BHS, or MSH...MSH...
            return _answer_batch(sink, text, original)
        msh, problem = check_hl7(text)
        if problem is not None:
            sink.note_rejected(problem)
            return defer.succeed(build_ack(msh, "AR", "message rejected", error=problem) if msh
                                 else build_reject(problem))
        return sink.receive(text, msh=msh, original=original).addCallback(_ack_for_receipt, msh)
    except Exception:  # a sink's synchronous failure reaches the caller as a failed Deferred
        return defer.fail()


def _ack_for_receipt(receipt, msh: Msh) -> str:
    return ack_for(msh, receipt)


@defer.inlineCallbacks
def _answer_batch(sink, text: str, original: bytes | None):
    try:
        messages, declared = split_batch(text)
    except ValueError as error:
        sink.note_rejected(str(error))
        return build_reject(f"malformed batch: {error}")
    if declared is not None and declared != len(messages):
        problem = f"batch declares {declared} messages (BTS-1) but holds {len(messages)}"
        sink.note_rejected(problem)
        return build_reject(problem)
    checked = [check_hl7(message) for message in messages]
    for _msh, problem in checked:
        if problem is not None:
            sink.note_rejected(problem)
            return build_reject(f"batch rejected: {problem}")
    if not messages:
        sink.note_rejected("empty batch")
        return build_reject("empty batch")
    receipts = yield defer.gatherResults(
        [sink.receive(message, msh=msh, original=original if number == 0 else None)
         for number, (message, (msh, _)) in enumerate(zip(messages, checked))],
        consumeErrors=True,
    )
    failed = [receipt for receipt in receipts if not receipt.ok]
    first_msh = checked[0][0]
    if failed:
        return build_ack(first_msh, "AE", "batch not fully accepted", error=failed[0].error)
    return build_ack(first_msh, "AA")
