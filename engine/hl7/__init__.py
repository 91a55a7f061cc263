"""HL7 v2: MSH peek, charsets, ACKs, batches, escaping, dates, paths. No Twisted, no store."""
