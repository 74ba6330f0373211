"""The ``ecgx`` subcommands, one module each: compose a config, instantiate, run."""
