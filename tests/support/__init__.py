"""Shared test tools: the real daemon and its peers (``daemon``), store fixtures (``store``), the in-process engine (``harness``)."""
