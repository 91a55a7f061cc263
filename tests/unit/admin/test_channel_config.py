"""The channel page's view of a channel file (engine/admin/channel_config.py): secrets masked
wherever they are (keys named like a secret, tables under such a key, URL user parts, variable
defaults), ``${VAR}`` shown as the variable, comments and layout kept; steps named as
``switchboard show`` names them."""

from __future__ import annotations

from engine.admin.channel_config import filter_steps, mask_value, masked_toml, transform_steps
from engine.config.loader import FilterConfig, TransformConfig, freeze

FILE = '''# the agency feed
[source]
type = "http"
token = "s3cr3t-literal"   # inline secret

[[destination]]
name = "agency"
url = "https://bob:hunter2@api.example.org/in"
headers = { Authorization = "Bearer ${AGENCY_TOKEN}", X-Source = "switchboard" }
password = "${SFTP_PASSWORD:-changeme}"
port = 22
retries = [1, 2]

[destination.secrets]
anything = "opaque"
'''


def test_secrets_are_masked_and_variables_shown(tmp_path):
    path = tmp_path / "agency.toml"
    path.write_text(FILE)
    shown = masked_toml(path)
    for secret in ("s3cr3t-literal", "hunter2", "bob", "changeme", "opaque"):
        assert secret not in shown, secret
    assert 'token = "•••"   # inline secret' in shown and shown.startswith("# the agency feed")
    assert 'Authorization = "Bearer ${AGENCY_TOKEN}"' in shown and 'X-Source = "switchboard"' in shown
    assert 'password = "${SFTP_PASSWORD:-•••}"' in shown and "https://•••@api.example.org/in" in shown
    assert "port = 22" in shown and "retries = [1, 2]" in shown


def test_mask_value():
    assert mask_value("plain") == "•••"
    assert mask_value("Bearer ${T}") == "Bearer ${T}"
    assert mask_value("x${T}y") == "•••${T}•••"
    assert mask_value("") == "•••"


def test_an_unreadable_file_is_a_sentence(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('token = "unterminated\n')
    shown = masked_toml(path)
    assert shown.startswith("# broken.toml could not be read") and "unterminated" not in shown


def test_steps_by_name():
    filters = (FilterConfig(when="msg['MSH.9.1'] != 'ORU'", use=None, label="no-results"),
               FilterConfig(when="true", use=None), FilterConfig(when=None, use="drop-tests"))
    assert [f["name"] for f in filter_steps(filters)] == ["no-results", "filter[2]", "drop-tests"]
    transforms = (TransformConfig(use=None, template=None, inline=None, outbound=None,
                                  edit=freeze([{"set": "MSH.5", "value": "LAB"}, {"delete": "NTE"}])),
                  TransformConfig(use=None, template="out.json.j2", inline=None, outbound="json"))
    steps = transform_steps(transforms)
    assert steps[0] == {"name": "edit", "kind": "edit", "ops": ["set MSH.5 value=LAB", "delete NTE"], "outbound": None}
    assert steps[1]["kind"] == "template" and steps[1]["name"] == "out.json.j2" and steps[1]["outbound"] == "json"
