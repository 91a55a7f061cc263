"""Files: the inbox source, the destination and batch files."""
