"""Adaptive overload control (``etsfctl overload auto``).

``law`` is the pure control law (signals -> level, admission rate); ``signals`` reads the
proxy sockets, eTSF's telemetry and /proc/stat; ``state`` holds the state file (level, rate,
manual pin) the exporter, ``status`` and ``top`` read; ``runner`` ties them to the control map.
"""
