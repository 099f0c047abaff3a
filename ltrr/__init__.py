"""Entry points: the `ltrr` CLI, the demo driver and its report. They bind configuration; ml/ and serving/ do the work."""
