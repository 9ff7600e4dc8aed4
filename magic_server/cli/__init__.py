"""The command lines: magic-edit, magic-label-map and the bundled sample."""
