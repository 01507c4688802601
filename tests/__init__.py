"""Test suite; a package so that tests/<area> folders do not shadow the packages they test."""
