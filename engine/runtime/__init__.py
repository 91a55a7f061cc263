"""The running engine: channel assembly, services, live reload, replay, retention."""
