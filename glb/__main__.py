"""`python -m glb`: the `glb` command."""

from .cli import main

raise SystemExit(main())
