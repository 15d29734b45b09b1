"""The side recorder: process selection, the PSS budget, one sampling tick, the loop.

``Recorder(options).run()`` records until the duration ends, a signal arrives or the
control channel says stop; ``loadmem record`` is a thin CLI over it.
"""

from loadmem.recorder.recorder import Recorder, RecordOptions

__all__ = ["RecordOptions", "Recorder"]
