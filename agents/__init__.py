"""Built-in fmd modules: diagnosis engines and response agents."""
