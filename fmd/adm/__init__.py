"""The control socket: the daemon's server and the client the CLIs use."""
