"""The engine core: what a channel does with a message, whatever its transport or store."""
