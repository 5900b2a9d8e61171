"""Helpers shared by the test modules: builders, parsers, fakes and the loopback upstream."""
