"""Which files a run indexes, as what: walk the given paths, apply --rules and the command
line's overrides, and report paths that do not exist."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .rules import Rule, first_match, locate

SCENE_SUFFIXES = {".tif", ".tiff", ".jp2", ".img", ".vrt"}
PICTURE_SUFFIXES = {".jpg", ".jpeg", ".png"}
IGNORED_SUFFIXES = {".txt", ".xml", ".json", ".ovr", ".msk", ".aux", ".md", ".csv", ".mat"}


@dataclass
class Source:
    path: Path
    kind: str                                  # "scene" (has a CRS) or "chip" (placed by a rule)
    override: dict = field(default_factory=dict)
    location: tuple[float, float, float] | None = None
    group: str = ""                            # chips of one group are read and embedded together
    # STAC assets (indexer/stac.py): what GDAL opens when it is not `path` (/vsicurl/URL), the
    # version stamp that stands in for a remote file's stat and hash, the display name
    # (collection/item[/asset]) and the item's identity.
    gdal_path: str | None = None
    remote: object | None = None               # stac.RemoteStamp
    display: str | None = None
    stac: dict | None = None

    @property
    def key(self) -> str:
        """The scene's identity in the index (its `path` column) and what GDAL opens."""
        return self.gdal_path or str(self.path)

    @property
    def label(self) -> str:
        """How messages name it: the file, or a remote asset's URL."""
        return self.stac["href"] if self.remote is not None and self.stac else str(self.path)


@dataclass
class Discovery:
    sources: list[Source]
    problems: list[str]                        # one line each: path and what is wrong
    skipped: dict[str, int]                    # reason -> count (not errors: by rule or by type)
    roots: list[Path]


def _walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith("."):
                yield Path(dirpath) / f


def discover(paths: list[str | Path], rules: list[Rule], cli_override: dict | None = None) -> Discovery:
    cli_override = {k: v for k, v in (cli_override or {}).items() if v is not None}
    sources, problems, skipped, roots = [], [], {}, []
    seen = set()

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            problems.append(f"{raw}: no such file or folder")
            continue
        p = p.resolve()
        roots.append(p)
        explicit = p.is_file()
        for f in ([p] if explicit else _walk(p)):
            if f in seen:
                continue
            seen.add(f)
            suffix = f.suffix.lower()
            if f.name.endswith(".aux.xml") or (suffix in IGNORED_SUFFIXES and not explicit):
                continue
            rule = first_match(rules, f)
            if rule is not None and rule.skip:
                skip("skipped by a rule")
                continue
            override = dict(rule.override(f)) if rule else {}
            override = {k: v for k, v in override.items() if v is not None}
            override.update(cli_override)
            if rule is not None and rule.locate:
                loc = locate(rule, f)
                if loc is None:
                    problems.append(f"{f}: the rule for {rule.glob} cannot place it ({rule.locate})")
                    continue
                sources.append(Source(f, "chip", override, loc, group=f"{rule.glob}|{f.parent}"))
            elif suffix in SCENE_SUFFIXES or explicit:
                sources.append(Source(f, "scene", override))
            elif suffix in PICTURE_SUFFIXES:
                skip("pictures with no location rule")
            else:
                skip("not imagery")
    return Discovery(sources, problems, skipped, roots)
