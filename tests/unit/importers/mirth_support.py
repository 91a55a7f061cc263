"""Shared by the Mirth importer tests: run an import into a folder, read its channel files, and show
that the output passes ``switchboard check`` as written; and a server configuration in Mirth's format."""
from __future__ import annotations

import io
import re
import shutil
import tomllib
from pathlib import Path

from engine.runtime.check import check
from engine.importers.mirth.entry import import_mirth

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


def check_output(out: Path, *, environ=None):
    """(problems, [], config) of ``switchboard check`` on the import in ``out``, its files as written."""
    work = out.parent / "check"
    shutil.rmtree(work, ignore_errors=True)
    (work / "channels").mkdir(parents=True)
    (work / "plugins").mkdir()
    for file in sorted((out / "channels").glob("*.toml")):
        shutil.copyfile(file, work / "channels" / file.name)
    transforms = out / "transforms"
    transforms.mkdir(exist_ok=True)
    (work / "config.toml").write_text(
        f'[engine]\nchannels_dir = "channels"\ntransforms_dir = "{transforms.as_posix()}"\n'
        f'plugins_dir = "plugins"\n[store]\npath = "var/switchboard.db"\n', encoding="utf-8")
    config, _registry, problems = check(work / "config.toml", environ=environ or {})
    return problems, [], config


# -- a server configuration in Mirth's format (ServerConfiguration as XStream writes it: channelGroups
# holding channel references, channels in full, codeTemplateLibraries, globalScripts, configurationMap;
# DefaultConfigurationController.getServerConfiguration in Mirth's source), from the corpus's real exports
def body(path) -> str:
    return re.sub(r"^<\?xml[^>]*>\s*", "", path.read_text(encoding="utf-8"))


def channel_id(path) -> str:
    return re.search(r"<id>([^<]+)</id>", path.read_text()).group(1)


def server_configuration(numbers, *, preprocessor="// Modify the message variable below to pre process data\n"
                         "// This script applies across all channels\nreturn message;") -> str:
    refs = "".join(f'<channel version="4.5.0"><id>{channel_id(export(n))}</id><revision>0</revision></channel>'
                   for n in numbers[:2])
    channels = "".join(body(export(n)) for n in numbers)
    return f"""<serverConfiguration version="4.5.0">
  <date>2026-11-01 12:00:00</date>
  <channelGroups>
    <channelGroup version="4.5.0">
      <id>6b5c35c5-1c47-4e58-a8d3-2b1d2f0f2d11</id><name>Registration feeds</name><revision>1</revision>
      <description>PAS outbound</description>
      <channels>{refs}</channels>
    </channelGroup>
  </channelGroups>
  <channels>{channels}</channels>
  <channelTags/>
  <alerts/>
  <codeTemplateLibraries>{body(LIBRARY)}</codeTemplateLibraries>
  <serverSettings/>
  <updateSettings/>
  <globalScripts>
    <entry><string>Deploy</string><string>// This script executes once for each deploy or redeploy task
// You only have access to the globalMap here to persist data
return;</string></entry>
    <entry><string>Preprocessor</string><string>{preprocessor}</string></entry>
  </globalScripts>
  <pluginProperties/>
  <channelDependencies/>
  <configurationMap>
    <entry>
      <string>outputDir</string>
      <com.mirth.connect.util.ConfigurationProperty><value>/srv/radiology</value><comment>root</comment></com.mirth.connect.util.ConfigurationProperty>
    </entry>
  </configurationMap>
</serverConfiguration>"""
