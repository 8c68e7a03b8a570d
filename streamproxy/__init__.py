"""streamproxy: stream call recordings from an IVR platform's REST uploads into object storage.

The public surface is the ``streamproxy`` command and ``make_app(settings, sink)`` for embedding.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
