"""``minimum-necessary``: strip what a collection agency must never see from an HL7 v2 message.

HIPAA's minimum-necessary standard, as a transform step: the output is the same HL7 message with
clinical segments removed and clinical fields blanked in the segments that stay, so everything
after it (templates, destinations, the FHIR export) can only use billing data.

```toml
[[transform]]
use = "minimum-necessary"
# also_remove = ["ZCL"]            # more segments to drop, on top of the defaults
# also_blank = ["PV1.3"]           # more fields (SEG.N) or components (SEG.N.C) to blank
# remove = [...] / blank = [...]   # replace the default lists instead
# keep = ["MSH", "EVN", "PID", "PV1", "GT1", "IN1", "FT1"]   # the alternative: an allow-list
# keep_z_segments = false          # Z segments are site-specific and unknown: dropped by default
```

Two modes.  The default is a deny-list (``remove``): the clinical segments of the standard plus
the ones that carry no billing data (orders, results, notes, diagnoses, procedures, allergies,
scheduling, pharmacy, specimens, providers, next of kin); any other segment stays, except Z
segments.  ``keep`` is the stricter alternative: only the listed segments survive (MSH always).
Either way the ``blank`` fields are then emptied in every occurrence and repetition of their
segment: diagnosis (FT1-19), procedure code and modifiers (FT1-25/26), NDC (FT1-29), the text of
the transaction code and the descriptions (FT1-7.2, FT1-8, FT1-9) which name the service,
providers (FT1-20/21, PV1-7/8/9/17/52), hospital service (PV1-10), ambulatory status (PV1-15),
discharge disposition (PV1-36), diet (PV1-38), admit reason and visit description (PV2-3/12/13).

Why text surgery instead of python-hl7: only the delimiters are needed to drop a segment or empty
a field, the message's own delimiters are kept (MSH-1/MSH-2), and every untouched field stays
byte-for-byte as received, escapes included, which a parse-and-serialise round trip does not
promise.  A field that is blanked keeps its place (``|`` separators), so positions after it do
not shift.
"""

from __future__ import annotations

import re

from engine.hl7.encoding import DEFAULT_ENCODING, DEFAULT_FIELD_SEP, normalize_segments
from engine.hl7.msh import peek_msh
from engine.hookspecs import hookimpl
from engine.core.pipeline import StageError

CLINICAL = (  # named by the placement kit's issue: clinical, never to an agency
    "DG1", "PR1", "OBX", "OBR", "ORC", "NTE", "AL1", "DRG", "DB1", "PDA", "ABS", "RMI", "BLC",
    "ROL", "IN3",
)
NO_BILLING_DATA = (  # no billing data: orders, pharmacy, specimens, scheduling, people, history
    "TQ1", "TQ2", "SPM", "SAC", "OM1", "OM2", "OM3", "OM4", "OM5", "OM6", "OM7", "RXA", "RXC",
    "RXD", "RXE", "RXG", "RXO", "RXR", "RXV", "TXA", "PRB", "GOL", "PTH", "VAR", "IAM", "IAR",
    "IAN", "ODS", "ODT", "CTI", "CTD", "PRD", "RF1", "AUT", "CON", "CDO", "RQD", "RQ1", "INV",
    "SCH", "AIS", "AIG", "AIL", "AIP", "RGS", "PRT", "PD1", "NK1", "ARV", "ACC", "SFT", "BPO",
    "BPX", "BTX", "CSR", "CSP", "CSS", "PES", "PEO", "PCR", "PSH", "FAC", "EQU", "ECD", "ISD",
    "NST", "OVR", "SID", "UAC", "DSP", "QRD", "QRF", "OH1", "OH2", "OH3", "OH4", "GP1", "GP2",
)
DEFAULT_REMOVE = CLINICAL + NO_BILLING_DATA
DEFAULT_BLANK = (
    "FT1.19", "FT1.25", "FT1.26", "FT1.29", "PV1.7", "PV1.8", "PV1.9", "PV1.10", "PV1.17",
    "PV1.36", "PV2.3",                                   # named by the issue
    "FT1.7.2", "FT1.7.5", "FT1.8", "FT1.9", "FT1.20", "FT1.21", "FT1.28", "FT1.42", "FT1.43",
    "PV1.15", "PV1.38", "PV1.52", "PV2.12", "PV2.13",    # the same kind of data, found in samples
)
_SEGMENT = re.compile(r"[A-Z][A-Z0-9]{2}")
_BLANK = re.compile(r"([A-Z][A-Z0-9]{2})\.([1-9][0-9]*)(?:\.([1-9][0-9]*))?")
_HEADERS = ("MSH", "BHS", "FHS")


def _segment_names(options: dict, key: str, default=None) -> frozenset[str] | None:
    value = options.pop(key, default)
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, str) and _SEGMENT.fullmatch(v) for v in value):
        raise ValueError(f"minimum-necessary: {key} must be a list of segment names like \"DG1\"")
    return frozenset(value)


def _blank_paths(options: dict, key: str, default=()) -> dict[str, list[tuple[int, int | None]]]:
    value = options.pop(key, default)
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"minimum-necessary: {key} must be a list of paths like \"FT1.19\"")
    table: dict[str, list[tuple[int, int | None]]] = {}
    for path in value:
        match = _BLANK.fullmatch(path.strip())
        if match is None or match.group(1) in _HEADERS:
            raise ValueError(f"minimum-necessary: {key}: {path!r} is not SEG.FIELD or "
                             "SEG.FIELD.COMPONENT (MSH cannot be blanked)")
        component = int(match.group(3)) if match.group(3) else None
        table.setdefault(match.group(1), []).append((int(match.group(2)), component))
    return table


class MinimumNecessary:
    def __init__(self, options: dict) -> None:
        options = dict(options)
        if "keep" in options and ("remove" in options or "also_remove" in options):
            raise ValueError("minimum-necessary: give either keep (an allow-list) or remove/also_remove")
        keep = _segment_names(options, "keep")
        remove = _segment_names(options, "remove", DEFAULT_REMOVE)
        also_remove = _segment_names(options, "also_remove", ())
        self.keep = None if keep is None else keep | {"MSH"}
        self.remove = remove | also_remove
        blank = _blank_paths(options, "blank", DEFAULT_BLANK)
        for name, fields in _blank_paths(options, "also_blank").items():
            blank.setdefault(name, []).extend(fields)
        self.blank = blank
        self.keep_z = options.pop("keep_z_segments", False)
        if not isinstance(self.keep_z, bool):
            raise ValueError("minimum-necessary: keep_z_segments must be true or false")
        if options:
            raise ValueError(f"minimum-necessary: unknown option(s) {', '.join(sorted(options))}")
        self.name = "minimum-necessary"

    def kept(self, name: str) -> bool:
        if self.keep is not None:
            return name in self.keep
        if name.startswith("Z") and not self.keep_z:
            return False
        return name not in self.remove

    def apply(self, message, context) -> str:
        if message.inbound != "hl7":
            raise StageError(f"minimum-necessary works on HL7 messages, not {message.inbound}")
        text = normalize_segments(message.raw)
        msh = peek_msh(text)
        if msh is None:
            raise StageError("minimum-necessary: the message does not start with an MSH segment")
        field_sep, encoding = msh.field_sep, msh.encoding or DEFAULT_ENCODING
        component_sep = encoding[0] if encoding else DEFAULT_ENCODING[0]
        repetition_sep = encoding[1] if len(encoding) > 1 else DEFAULT_ENCODING[1]
        out = []
        for segment in text.split("\r"):
            if not segment:
                continue
            name = segment.split(field_sep, 1)[0]
            if not self.kept(name):
                continue
            if name in self.blank:
                segment = self.blank_fields(segment, self.blank[name], field_sep or DEFAULT_FIELD_SEP,
                                            component_sep, repetition_sep)
            out.append(segment)
        return "\r".join(out)

    @staticmethod
    def blank_fields(segment: str, paths, field_sep: str, component_sep: str, repetition_sep: str) -> str:
        fields = segment.split(field_sep)
        for number, component in paths:
            if number >= len(fields) or not fields[number]:
                continue
            if component is None:
                fields[number] = ""
                continue
            repetitions = []
            for repetition in fields[number].split(repetition_sep):
                parts = repetition.split(component_sep)
                if component <= len(parts):
                    parts[component - 1] = ""
                repetitions.append(component_sep.join(parts))
            fields[number] = repetition_sep.join(repetitions)
        return field_sep.join(fields)


@hookimpl
def register_transforms():
    return {"minimum-necessary": MinimumNecessary}
