"""Seeing what happened: recordings of episodes (and, later, the viewer and plots)."""
