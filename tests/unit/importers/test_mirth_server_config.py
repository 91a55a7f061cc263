"""A whole server configuration and a channel group export import in one call.

The server configuration is written here in Mirth's format (ServerConfiguration as XStream writes it:
channelGroups holding channel references, channels in full, codeTemplateLibraries, globalScripts,
configurationMap; see DefaultConfigurationController.getServerConfiguration in Mirth's source), from
real channel exports of the corpus and the real code template library."""
from __future__ import annotations

from .mirth_support import body, channel, check_output, export, notes, run, server_configuration


def test_a_server_configuration_imports_every_channel_and_the_library_in_one_call(tmp_path):
    config = tmp_path / "server.xml"
    config.write_text(server_configuration(["01", "03", "04", "05", "06", "12"]))
    out = tmp_path / "out"
    code, stdout, stderr = run([config], out)
    assert code == 0, stderr
    assert sorted(p.name for p in (out / "channels").iterdir()) == [
        "adt-archive-writer.toml", "adt-batch-file-intake.toml", "adt-router-pas-to-ris.toml",
        "lis-results-unit-and-flag-mapping.toml", "pas-adt-strip-z-segments.toml", "radiology-worklist-feed.toml"]
    assert 'group "Registration feeds"' in (out / "channels" / "adt-router-pas-to-ris.toml").read_text()
    assert channel(out, "radiology-worklist-feed")["destination"][0]["directory"] == "${outputDir:-/srv/radiology}/hl7"
    assert channel(out, "adt-batch-file-intake")["destination"][0]["channel"] == "adt-archive-writer"
    text = notes(out)
    assert "function mapUnit(code)" in text and "Strip Z segments" in text
    assert "Global" not in text                       # Mirth's default global scripts are not listed
    assert (out / "lookups" / "mapUnit.csv").is_file()
    assert check_output(out)[0] == []


def test_a_custom_global_script_is_quoted(tmp_path):
    config = tmp_path / "server.xml"
    config.write_text(server_configuration(["02"], preprocessor="return message.replace(/\\n/g, '\\r');"))
    out = tmp_path / "out"
    assert run([config], out)[0] == 0
    assert "### 1. Global Preprocessor script" in notes(out)
    assert "return message.replace(/\\n/g, '\\r');" in notes(out)


def test_a_channel_group_export_imports_its_channels(tmp_path):
    group = tmp_path / "group.xml"
    group.write_text(f"""<channelGroup version="4.5.0">
  <id>0f2c6e0e-5a57-4bd9-9d0f-6e0c3c1d2e11</id><name>Batch intake</name><revision>2</revision>
  <lastModified><time>1796169709824</time><timezone>Etc/UTC</timezone></lastModified>
  <description>Nightly batch files</description>
  <channels>{body(export("05"))}{body(export("06"))}</channels>
</channelGroup>""")
    out = tmp_path / "out"
    code, stdout, stderr = run([group], out)
    assert code == 0, stderr
    assert channel(out, "adt-batch-file-intake")["destination"][0]["channel"] == "adt-archive-writer"
    assert channel(out, "adt-archive-writer")["source"] == {"type": "channel"}
    assert 'group "Batch intake"' in (out / "channels" / "adt-archive-writer.toml").read_text()
    assert check_output(out)[0] == []


def test_a_channel_in_two_files_is_imported_once(tmp_path):
    config = tmp_path / "server.xml"
    config.write_text(server_configuration(["01"]))
    code, stdout, _ = run([config, export("01")], tmp_path / "out")
    assert code == 0 and stdout.count("adt-router-pas-to-ris.toml") == 1
