"""The settings of every step, declared once as typed parameters over the config schema (the one source of defaults)."""
