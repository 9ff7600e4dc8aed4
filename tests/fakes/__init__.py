"""Test doubles for the plug-in's unit tests (a fake GIMP 3 API under fakes/gi)."""
