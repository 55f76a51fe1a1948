"""The real-kernel harness: a Debian kernel under QEMU running the host's fmd (issue 11)."""
