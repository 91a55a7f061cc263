"""Template helpers of the collections kit: ``from_json``, ``fhir_id`` and ``fhir_clean``.

* ``body | from_json`` reads a JSON text (the placement JSON) back into data, so the daily CSV
  and the FHIR export are built from the same minimum-necessary JSON the agency receives and can
  never carry more than it.  A text that is not JSON fails the render with a reason that does not
  quote it.
* ``fhir_id('Patient', meta.mrn)`` is a stable UUID (version 5, from the parts): the same
  account always gets the same resource ids, so a re-sent export updates instead of duplicating,
  and ids never expose the MRN or account number they were made from.
* ``resource | fhir_clean`` drops empty values (``""``, None, ``[]``, ``{}``) at every depth: FHIR
  forbids empty strings and empty elements, and an HL7 message leaves many fields empty, so the
  template can write every element plainly and let this remove the ones with nothing in them.
"""

from __future__ import annotations

import json
import uuid

from jinja2 import TemplateRuntimeError

from engine.hookspecs import hookimpl

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://switchboard.invalid/collections-kit")


def from_json(text):
    if not isinstance(text, str):
        raise TemplateRuntimeError("from_json: the value is not text")
    try:
        return json.loads(text)
    except ValueError:
        raise TemplateRuntimeError("from_json: the text is not valid JSON") from None


def fhir_id(*parts) -> str:
    if not parts or not all(isinstance(p, (str, int)) for p in parts):
        raise TemplateRuntimeError("fhir_id: give one or more strings or numbers")
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(str(p) for p in parts)))


def fhir_clean(value):
    if isinstance(value, dict):
        cleaned = {key: fhir_clean(item) for key, item in value.items()}
        return {key: item for key, item in cleaned.items() if not _empty(item)}
    if isinstance(value, (list, tuple)):
        return [item for item in (fhir_clean(v) for v in value) if not _empty(item)]
    return value.strip() if isinstance(value, str) else value


def _empty(value) -> bool:
    return value is None or value == "" or value == [] or value == {}


@hookimpl
def register_template_helpers():
    return {"filters": {"from_json": from_json, "fhir_clean": fhir_clean},
            "globals": {"fhir_id": fhir_id}}
