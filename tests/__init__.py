"""The test suite: one package, so the loopback servers and fixtures have one import name (tests.*)."""
