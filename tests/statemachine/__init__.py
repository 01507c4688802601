"""Tests: statemachine."""
