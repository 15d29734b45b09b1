"""Recordings: the Parquet tables the recorder writes and everything else reads.

``open_recording(path)`` is the one way the rest of loadmem opens a recording; the table
schemas live in ``loadmem.recording.schema``; ``loadmem.recording.writer`` writes them.
"""

from loadmem.recording.reader import Recording, open_recording
from loadmem.recording.schema import SCHEMA_VERSION, TABLES

__all__ = ["SCHEMA_VERSION", "TABLES", "Recording", "open_recording"]
