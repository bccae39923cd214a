"""The ``asr-adapt`` command line: thin subcommands that parse arguments and call the library."""
