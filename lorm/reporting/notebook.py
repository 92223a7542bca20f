"""Run the figures notebook headless: ``python -m lorm.reporting.notebook [--project DIR] [--out OUT.ipynb]``.

Executes ``workflow/notebooks/figures.ipynb`` with nbclient in the project folder ``DIR`` (default: the working
directory; it must hold ``results/``), which rewrites every figure under ``DIR/figures/``. The executed notebook
(with its outputs) is saved only when ``--out`` is given, so the tracked notebook stays output-free.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[2] / "workflow" / "notebooks" / "figures.ipynb"


def execute(project: str | Path = ".", notebook: str | Path = NOTEBOOK, out: str | Path | None = None,
            timeout: int = 600):
    """Execute ``notebook`` with the working directory ``project``; returns the executed notebook node."""
    import nbformat
    from nbclient import NotebookClient

    project = Path(project).resolve()
    if not (project / "results").is_dir():
        raise FileNotFoundError(f"{project}: no results/ folder (run the pipeline first)")
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(project)}}).execute()
    if out is not None:
        nbformat.write(nb, out)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lorm.reporting.notebook", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=".", help="folder holding results/ (default: .)")
    parser.add_argument("--out", default=None, help="save the executed notebook here")
    args = parser.parse_args(argv)
    try:
        execute(args.project, out=args.out)
    except FileNotFoundError as exc:
        print(f"lorm notebook: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # nbclient's CellExecutionError: the failing cell's error, one line
        print(f"lorm notebook: {NOTEBOOK}: {str(exc).strip().splitlines()[-1]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
