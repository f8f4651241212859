"""Thin command functions behind the CLI: each validates, calls the library, prints."""
