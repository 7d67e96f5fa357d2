"""chatlib: the finished versions behind the course's lessons.

The lessons open these modules one at a time:

- ``chatlib.original``  the seed's ``servidor.py`` and ``cliente.py`` (lesson 01)
- ``chatlib.console``   runs a script with scripted typing and records what it shows
- ``chatlib.proxy``     a loopback relay that records and re-cuts the byte stream
- ``chatlib.framing``   length-prefixed frames, fed bytes, free of I/O (lesson 03)
"""

__version__ = "0.1.0"
