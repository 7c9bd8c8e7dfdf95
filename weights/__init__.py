"""Trained head weights shipped with howold (installed as the package `face.weights`)."""
