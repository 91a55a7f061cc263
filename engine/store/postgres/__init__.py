"""The message store on PostgreSQL (``[store] url``): see ``store.py``."""
