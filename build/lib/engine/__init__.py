"""Switchboard: an HL7 interface engine."""
