"""Transports: one module per connector type, each registering through the plugin hooks."""
