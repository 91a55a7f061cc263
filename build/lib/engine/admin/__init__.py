"""The admin side of the daemon (DESIGN §3.7): the HTTP API with its bearer tokens (``auth``,
``api``), Prometheus metrics (``metrics``), the hash-chained audit log (``audit``), alerts and
the built-in webhook alert plugin (``alerts``, ``alert_webhook``), wired together in ``server``.

Nothing is imported here: ``engine.plugins`` loads ``engine.admin.alert_webhook`` as a built-in
plugin, and importing the server from this package would import the engine from the plugins.
"""
