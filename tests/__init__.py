"""Test suite of tidings (a package so that tests/conftest.py does not put tests/ on sys.path,
where tests/engine would shadow the engine package)."""
