"""Built-in transports: the local ingest socket and followed files."""
