"""The message store behind one interface: all SQL lives in this package."""
