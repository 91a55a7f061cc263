"""``switchboard import mirth``: Mirth Connect 3.x/4.x exports -> Switchboard channels (DESIGN §3.10).

Modules, one job each: ``xml_read`` (defusedxml, no DTDs or entities), ``discover`` (channels, groups,
server configurations, code template libraries, the configuration map), ``connectors`` (sources and
destinations), ``rules`` and ``e4x`` (Rule Builder rules and the JavaScript expressions of declarative
steps), ``steps`` (filters and transformer steps), ``velocity`` (``${...}`` in connector fields),
``code_templates``, ``channel`` (one channel's file), ``notes`` (IMPORT-NOTES.md), ``toml_text``
(writing TOML), ``entry`` (the verb: :func:`import_mirth`).
"""
