"""The ``chatlib`` command line (PROTOCOL.md section 3).

Each sub-command is a small function; argparse does the rest.  Errors a user
can cause (a taken port, a refused connection) are one line on stderr and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from chatlib import original, terminal

DEFAULT_HOST = "127.0.0.1"


def run_original(args: argparse.Namespace) -> int:
    """Run the seed's script as a program, exactly as a student would."""
    script = original.SERVER_SCRIPT if args.side == "server" else original.CLIENT_SCRIPT
    command = [sys.executable, "-u", str(script), args.host, str(args.port)]
    child = subprocess.Popen(command)
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            # Ctrl-C reaches the script too; let it show its own traceback.
            continue


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatlib",
        description="The course's chat: the original scripts, the server and the client.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    orig = commands.add_parser(
        "original",
        help="run the seed's original servidor.py or cliente.py (lesson 01)",
        description=(
            "Run the seed's original scripts, unchanged but for the address, so the bug "
            "can be shown live: start the server in one terminal, the client in another. "
            "The first exchange works; the second kills both with "
            "'OSError: [Errno 9] Bad file descriptor'."
        ),
    )
    orig.add_argument("side", choices=["server", "client"])
    orig.add_argument("--host", default=DEFAULT_HOST, help="default: %(default)s")
    orig.add_argument(
        "--port", type=int, default=original.DEFAULT_PORT, help="default: %(default)s"
    )
    orig.set_defaults(run=run_original)

    chat = commands.add_parser(
        "chat",
        help="the terminal chat client",
        description=(
            "Join the room as NICK and chat: incoming lines appear above the line you "
            "are typing, never through it.  /who lists who is here, /quit (or Ctrl-D) "
            "leaves.  With stdin from a pipe or a file, each line read is sent."
        ),
    )
    terminal.add_arguments(chat)
    chat.set_defaults(run=terminal.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)
