"""The command line: one module per subcommand, each thin over a library function."""
