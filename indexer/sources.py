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


@dataclass
class Discovery:
    sources: list[Source]
    problems: list[str]                        # one line each: path and what is wrong
    skipped: dict[str, int]                    # reason -> count (not errors: by rule or by type)
    roots: list[Path]
    notes: list[str] = field(default_factory=list)  # one line each: what the walk did not follow


def _walk(root: Path, problems: list[str], linked: list[Path]):
    """Files under root, sorted; hidden files and folders (a leading dot) left out. Symlinks to
    files are followed (their target is read); symlinked folders are not (a link loop or a link
    to / would make the walk endless): they are listed in `linked`, and folders that cannot be
    read in `problems`."""
    def unreadable(e: OSError) -> None:
        problems.append(f"{e.filename}: cannot read this folder ({e.strerror}); its files were not indexed")

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=unreadable):
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if os.path.islink(os.path.join(dirpath, d)):
                linked.append(Path(dirpath) / d)
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            if not f.startswith("."):
                yield Path(dirpath) / f


def discover(paths: list[str | Path], rules: list[Rule], cli_override: dict | None = None) -> Discovery:
    cli_override = {k: v for k, v in (cli_override or {}).items() if v is not None}
    sources, problems, skipped, roots, notes = [], [], {}, [], []
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
        linked: list[Path] = []
        for f in ([p] if explicit else _walk(p, problems, linked)):
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
        for d in linked:
            skip("symlinked folders (not followed)")
            notes.append(f"{d}: a symlinked folder, not followed; give its target "
                         f"({os.path.realpath(d)}) to index it")
    return Discovery(sources, problems, skipped, roots, notes)
