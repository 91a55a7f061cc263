"""The message's way: contracts, message, pipeline, channel, queue, templates, events, plugins."""
