"""SFTP: the poller source and the upload destination (paramiko)."""
