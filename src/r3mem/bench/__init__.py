"""Measurements shared by ``r3mem demo``, training evaluation and ``r3mem bench``."""
