"""Analysis: recordings in, typed findings and key figures out. Never reads /proc."""
