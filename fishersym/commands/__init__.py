"""Subcommands of the ``fishersym`` CLI: one module each, with ``register(subparsers)``."""
