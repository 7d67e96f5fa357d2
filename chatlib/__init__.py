"""chatlib: the finished versions behind the course's lessons.

Each module is small enough to read in one sitting; the lessons open them in
this order:

- ``chatlib.original``       the seed's ``servidor.py`` and ``cliente.py`` (lesson 01)
- ``chatlib.console``        runs a script with scripted typing, records its console (01)
- ``chatlib.proxy``          a loopback relay that records and re-cuts the stream (01, 03, 07)
- ``chatlib.sequence``       sequence diagrams drawn from a real run's trace (01)
- ``chatlib.conversation``   the fixed one-to-one chat (02)
- ``chatlib.framing``        length-prefixed frames, fed bytes, free of I/O (03)
- ``chatlib.messages``       the chat's JSON messages, checked (06)
- ``chatlib.room``           the room as pure logic: who is in, who gets what (04-06)
- ``chatlib.server_threads`` and ``chatlib.server_asyncio``: two thin engines (04, 05)
- ``chatlib.serve``          start either engine in the background
- ``chatlib.client``, ``chatlib.terminal``: the client and ``chatlib chat``
- ``chatlib.tls``, ``chatlib.accounts``, ``chatlib.history``: lesson 07
- ``chatlib.widgets``        chat panels, the bug stepper, the server console
- ``chatlib.tryit``          the kind checks of the Try-it exercises
"""

__version__ = "0.1.0"
