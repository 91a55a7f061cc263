"""Importers: turn another engine's exports into Switchboard channel files (DESIGN §3.10).

Each importer is a package of its own (``engine.importers.mirth``) with one entry function that the
CLI verb calls; nothing here is used by the running daemon.
"""
