"""The process `glb ui` becomes: Streamlit's own command line (`streamlit run ui/app.py
OPTIONS`), with the index and encoder loading in a thread from the moment the server starts
(ui/preload.py), so the first visitor's page does not wait for them."""

from __future__ import annotations

import os
import sys
import threading


def main(argv: list[str]) -> int:
    from ui import preload

    index = os.environ.get("GLB_UI_INDEX")
    if index:
        echo = lambda m: print(m, file=sys.stderr, flush=True)
        threading.Thread(target=preload.warm, args=(index, echo), name="glb-preload",
                         daemon=True).start()
    from streamlit.web import cli

    return cli.main(args=argv, prog_name="streamlit")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
