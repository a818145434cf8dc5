"""Options every command group shares, kept free of heavy imports so `callgrid router ...` (a plain SDK user)
can take them without loading callgrid's platform."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from callgrid.datadir import DATA_DIR_ENV, DATA_DIR_FOLDER

# No typer envvar: `locate_data_dir` reads CALLGRID_DATA_DIR itself, so messages can say which rule chose the folder.
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        "-d",
        help=f"Where state lives (default: ${DATA_DIR_ENV}, else the nearest {DATA_DIR_FOLDER} folder here or "
        "above, else ~/.local/share/callgrid).",
        show_default=False,
    ),
]
PortOption = Annotated[int | None, typer.Option("--port", "-p", help="The server's port (default: as last served).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (stable keys, for scripts) instead of a table.")]
