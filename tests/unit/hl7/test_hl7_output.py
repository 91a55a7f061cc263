"""Every HL7 segment we write ends with CR (DESIGN §3.5): template output and what destinations send."""

from __future__ import annotations

from engine.hl7.encoding import hl7_output, with_final_cr


def test_template_output_lines_become_cr_terminated_segments():
    assert hl7_output("\n  MSH|a\n\nPID|1||X  \r\n   \nNTE|1\n") == "MSH|a\rPID|1||X  \rNTE|1\r"


def test_with_final_cr_only_touches_hl7_without_its_final_cr():
    assert with_final_cr("MSH|a\rPID|1") == "MSH|a\rPID|1\r"
    assert with_final_cr("MSH|a\rPID|1 \r") == "MSH|a\rPID|1 \r"
    assert with_final_cr('{"a": 1}') == '{"a": 1}'
    assert with_final_cr("") == ""
