"""MLLP: the listener, the sender, framing and the client."""
