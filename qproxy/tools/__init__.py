"""The sub-commands of the ``qproxy`` command line, one module each."""
