"""Tests: recovery."""
