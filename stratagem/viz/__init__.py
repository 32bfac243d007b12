"""Seeing what happened: episode recordings, the replay viewer and its exports, training curves."""
