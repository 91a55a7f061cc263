"""HL7 v2: reading and editing messages by Mirth/HAPI path, with the message's own delimiters."""
