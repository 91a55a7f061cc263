"""The SFTP source with inbound = "x12": accepted sets stored, the 999/TA1 written beside the file on
the server (through the SFTP calls, answered from local disk by the sftp tests' LocalSftp)."""

from __future__ import annotations

from pathlib import Path

from unit.connectors.sftp.test_sftp import make_source, names

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "x12"


def test_an_x12_file_is_stored_per_set_and_its_999_goes_to_done(tmp_path):
    (tmp_path / "era.835").write_bytes((SAMPLES / "835_remittance.x12").read_bytes())
    source, sink, clock = make_source(tmp_path, inbound="x12", settle="0s", ack="999")
    source.start()
    clock.advance(0)
    assert [text.count("ST*835*") for text, _key in sink.received] == [1, 1]
    assert names(tmp_path / "done") == ["era.835", "era.835.999"]
    assert "AK9*A*2*2*2~" in (tmp_path / "done" / "era.835.999").read_text()


def test_claims_split_and_a_broken_interchange_gets_its_ta1_beside_the_error_file(tmp_path):
    (tmp_path / "a.835").write_bytes((SAMPLES / "835_remittance.x12").read_bytes())
    (tmp_path / "b.835").write_bytes((SAMPLES / "malformed_iea_control.x12").read_bytes())
    source, sink, clock = make_source(tmp_path, inbound="x12", settle="0s", ack="999", split="claims")
    source.start()
    clock.advance(0)
    assert len(sink.received) == 6   # the sample's six claim payments, one message each
    assert names(tmp_path / "error") == ["b.835", "b.835.999", "b.835.reason"]
    assert "TA1*000000111*250116*0800*R*001" in (tmp_path / "error" / "b.835.999").read_text()
    assert sink.rejected and "IEA-02" in sink.rejected[0]
