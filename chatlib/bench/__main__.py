import importlib
import sys

BENCHMARKS = ("framing", "fanout")


def main(argv: list[str]) -> int:
    names = argv[:1] or list(BENCHMARKS)
    if names[0] not in BENCHMARKS:
        print(f"unknown benchmark {names[0]!r}; choose one of: {', '.join(BENCHMARKS)}")
        return 2
    for name in names:
        module = importlib.import_module(f"chatlib.bench.{name}")
        status = module.main(argv[1:])
        if status:
            return status
    return 0


sys.exit(main(sys.argv[1:]))
