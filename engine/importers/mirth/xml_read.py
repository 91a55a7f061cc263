"""Reading an export safely, and the small accessors the converters use.

defusedxml refuses a DTD, entity declarations and external references: a Mirth export never has any,
and an XML file that does is either not an export or an attack (billion laughs, XXE).  Every failure
is an :class:`ImportRefused` whose text is one sentence naming the file.
"""
from __future__ import annotations

import re
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring


class ImportRefused(Exception):
    """A file that cannot be imported at all: ``str()`` is the one sentence the CLI prints."""


_DTD = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)


def read_xml(path: Path) -> Element:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImportRefused(f"{path}: file not found.") from None
    except OSError as error:
        raise ImportRefused(f"{path}: cannot read the file ({error.strerror}).") from None
    if _DTD.search(data):  # the house rule (tests/e2e/test_security.py); defusedxml would refuse it too
        raise ImportRefused(f"{path}: refused: it declares a DTD, entities or external references, "
                            "which a Mirth Connect export never has.")
    try:
        return fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise ImportRefused(f"{path}: refused: it declares a DTD, entities or external references, "
                            "which a Mirth Connect export never has.") from None
    except ParseError as error:
        line, column = getattr(error, "position", (0, 0))
        raise ImportRefused(f"{path}: not well-formed XML (line {line}, column {column + 1}).") from None


def local(element: Element) -> str:
    """The element's class name without its package (``com.mirth...MapperStep`` -> ``MapperStep``)."""
    return element.tag.rsplit(".", 1)[-1]


def text(element: Element | None, path: str, default: str = "") -> str:
    if element is None:
        return default
    found = element.find(path)
    if found is None or found.text is None:
        return default
    return found.text


def flag(element: Element | None, path: str, default: bool = False) -> bool:
    value = text(element, path, "").strip().lower()
    return default if not value else value == "true"


def integer(element: Element | None, path: str, default: int = 0) -> int:
    value = text(element, path, "").strip()
    try:
        return int(value)
    except ValueError:
        return default


def strings(element: Element | None, path: str) -> list[str]:
    """The text of each ``<string>`` under ``path`` (Mirth's List<String>)."""
    found = element.find(path) if element is not None else None
    if found is None:
        return []
    return [child.text or "" for child in found if child.tag == "string"]
