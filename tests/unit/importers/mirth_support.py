"""Shared by the Mirth importer tests: run an import into a folder, read its channel files, and show
that the output passes today's ``switchboard check``.

The edit step (DESIGN §3.8) is not in the config loader yet, so :func:`check_output` takes the
``edit`` transform steps out of a copy of each channel file (and returns them, for the tests to
assert) before checking: that is the only thing it skips.  Once the edit step lands, check the
output as written (``check_output(out, strip_edits=False)``).
"""
from __future__ import annotations

import io
import shutil
import tomllib
from pathlib import Path

from engine.runtime.check import check
from engine.importers.mirth.entry import import_mirth
from engine.importers.mirth.toml_text import dumps

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "mirth"
CHANNELS = CORPUS / "channels"
CONFIG_MAP = CORPUS / "configuration-map.xml"
LIBRARY = CORPUS / "code-templates" / "lab-code-mapping.xml"


def export(number: str) -> Path:
    return next(CHANNELS.glob(f"{number}-*.xml"))


def run(files, out: Path, *, strict: bool = False, force: bool = False) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = import_mirth([Path(f) for f in files], out, strict=strict, force=force, stdout=stdout, stderr=stderr)
    return code, stdout.getvalue(), stderr.getvalue()


def imported(tmp_path: Path, *files, config_map: bool = True) -> Path:
    out = tmp_path / "out"
    extra = [CONFIG_MAP] if config_map else []
    code, _stdout, stderr = run([*files, *extra], out)
    assert code == 0, stderr
    return out


def channel(out: Path, name: str) -> dict:
    return tomllib.loads((out / "channels" / f"{name}.toml").read_text(encoding="utf-8"))


def notes(out: Path) -> str:
    return (out / "IMPORT-NOTES.md").read_text(encoding="utf-8")


def _strip(table: dict, removed: list) -> None:
    steps = table.get("transform")
    if isinstance(steps, dict):
        steps = [steps]
    if steps is None:
        return
    removed += [step["edit"] for step in steps if "edit" in step]
    kept = [step for step in steps if "edit" not in step]
    if kept:
        table["transform"] = kept
    else:
        del table["transform"]


def check_output(out: Path, *, environ=None, strip_edits: bool = False):
    """(problems, edit steps taken out) of ``switchboard check`` on the import in ``out``."""
    work = out.parent / "check"
    shutil.rmtree(work, ignore_errors=True)
    (work / "channels").mkdir(parents=True)
    (work / "plugins").mkdir()
    removed: list = []
    for file in sorted((out / "channels").glob("*.toml")):
        text = file.read_text(encoding="utf-8")
        if strip_edits:
            data = tomllib.loads(text)
            _strip(data, removed)
            for destination in data.get("destination", []):
                _strip(destination, removed)
            text = dumps(data)
        (work / "channels" / file.name).write_text(text, encoding="utf-8")
    transforms = out / "transforms"
    transforms.mkdir(exist_ok=True)
    (work / "config.toml").write_text(
        f'[engine]\nchannels_dir = "channels"\ntransforms_dir = "{transforms.as_posix()}"\n'
        f'plugins_dir = "plugins"\n[store]\npath = "var/switchboard.db"\n', encoding="utf-8")
    config, _registry, problems = check(work / "config.toml", environ=environ or {})
    return problems, removed, config
