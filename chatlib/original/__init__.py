"""The seed's two scripts, kept verbatim (Spanish names, the ``tur`` typo and
the ``close()`` inside ``while True``) except that host and port come from the
command line: ``python servidor.py [HOST [PORT]]``, defaulting to 127.0.0.1:5000.

They are meant to be run as programs, exactly as a student would run them, so
this package only says where they are.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "servidor.py"
CLIENT_SCRIPT = HERE / "cliente.py"
DEFAULT_PORT = 5000  # the seed's port; on recent macOS the AirPlay receiver holds it
