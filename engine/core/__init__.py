"""The engine core: what a channel does with a message, independent of how it arrives or is stored."""
