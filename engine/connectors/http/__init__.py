"""HTTP: the listener (webhooks) and the sender."""
