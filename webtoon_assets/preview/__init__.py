"""Offline preview drawing: what the local provider renders instead of calling a model."""
