"""Reliability test kit: the hostile input corpus (generated at test time, nothing binary is
committed) and helpers that read an index's state straight from its files."""
