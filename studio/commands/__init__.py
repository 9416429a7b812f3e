"""One module per command-line command, each with configure_parser() and run()."""
