"""Experiments that answer the original questions with numbers."""
