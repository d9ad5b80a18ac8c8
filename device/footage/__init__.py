"""Footage: recording state machine, recorder, segments, pre-event buffer, retention."""
