"""Keep the course's notebooks in one clean, reviewable form.

The committed form of a lesson:

- outputs only in cells tagged ``nbval-check-output``: those are the results
  the lesson promises, and nbval compares a fresh run against them; pieces of
  one stream are joined, as nbval joins them before comparing;
- execution counts only on those checked cells (nbval skips a cell with
  outputs and no count), numbered by their place among the code cells, so a
  re-run changes nothing;
- no widget state, no per-cell metadata but ``tags``;
- notebook metadata reduced to the kernel and the language.

    python tools/nbclean.py notebooks/*.ipynb            # clean in place
    python tools/nbclean.py --check notebooks/*.ipynb    # exit 1 if any is not clean
    python tools/nbclean.py --execute notebooks/01-*.ipynb   # run, then clean

``--execute`` is how the expected outputs are refreshed after a lesson changes.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat

CHECKED = "nbval-check-output"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
KEPT_CELL_METADATA = ("tags",)


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = copy.deepcopy(nb)
    nb.metadata = nbformat.from_dict(
        {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    )
    nb.nbformat, nb.nbformat_minor = 4, 5
    code_cells = 0
    for index, cell in enumerate(nb.cells):
        cell.metadata = nbformat.from_dict(
            {k: cell.metadata[k] for k in KEPT_CELL_METADATA if cell.metadata.get(k)}
        )
        if not cell.get("id"):
            cell.id = f"cell-{index:03d}"
        if cell.cell_type == "code":
            code_cells += 1
            if CHECKED in cell.metadata.get("tags", []):
                cell.execution_count = code_cells
                kept = [_clean_output(out) for out in cell.outputs if _keep(out)]
                cell.outputs = _join_streams(kept)
            else:
                cell.execution_count = None
                cell.outputs = []
        if "attachments" in cell and not cell.attachments:
            del cell["attachments"]
    return nb


def _keep(output) -> bool:
    # Widget views cannot be compared and carry per-run ids.
    data = output.get("data", {})
    return "application/vnd.jupyter.widget-view+json" not in data


def _join_streams(outputs):
    joined = []
    for output in outputs:
        previous = joined[-1] if joined else None
        if (
            output.output_type == "stream"
            and previous is not None
            and previous.output_type == "stream"
            and previous.name == output.name
        ):
            previous.text += output.text
        else:
            joined.append(output)
    return joined


def _clean_output(output):
    output = copy.deepcopy(output)
    if "execution_count" in output:
        output.execution_count = None  # nbval does not compare it
    output.metadata = nbformat.from_dict({}) if "metadata" in output else output.get("metadata")
    if output.get("metadata") is None:
        output.pop("metadata", None)
    return output


def execute(path: Path) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def serialise(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb, version=4) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only report notebooks not clean")
    mode.add_argument("--execute", action="store_true", help="run each notebook, then clean")
    args = parser.parse_args(argv)

    dirty = []
    for path in args.notebooks:
        nb = execute(path) if args.execute else nbformat.read(path, as_version=4)
        wanted = serialise(clean(nb))
        if path.read_text(encoding="utf-8") != wanted:
            if args.check:
                dirty.append(path)
            else:
                path.write_text(wanted, encoding="utf-8")
                print(f"cleaned {path}")
    for path in dirty:
        print(f"{path} is not in its clean form: run python tools/nbclean.py {path}")
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main())
