"""Which files a run indexes, as what: walk the given paths, apply --rules and the command
line's overrides, and report paths that do not exist (`discover`); then which of them changed
since they were indexed, grouped into work units (`plan_work`, `content_change`)."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable
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


# --- change detection --------------------------------------------------------------------
CHIPS_PER_UNIT = 256  # chips read and embedded together (one work unit)

Known = Callable[[str], "dict | None"]   # path -> the index's record of it (size, mtime_ns, sha256)


@dataclass
class WorkPlan:
    """What a run must read: work units (one scene, or up to CHIPS_PER_UNIT chips of one
    group), each a list of (source, the index's record of it or None)."""
    units: list[list[tuple[Source, dict | None]]]
    unchanged: int                               # size and mtime match the index: not read
    problems: list[str]                          # one line each


def plan_work(found: Discovery, known: Known) -> WorkPlan:
    """Unchanged files (same size and mtime as indexed) cost one stat; the rest become work
    units. Whether a changed file's content really changed is decided when it is read
    (`content_change`), in the reader's thread."""
    todo, unchanged, problems = [], 0, []
    for src in found.sources:
        prev = known(src.key)
        try:
            size, mtime = file_fingerprint(src)
        except OSError as e:
            problems.append(f"{src.label}: cannot stat ({e.strerror})")
            continue
        if prev is not None and prev["size"] == size and prev["mtime_ns"] == mtime:
            unchanged += 1
            continue
        todo.append((src, prev))
    units: list[list[tuple[Source, dict | None]]] = []
    chip_groups: dict[str, list] = {}
    for src, prev in todo:
        if src.kind == "chip":
            chip_groups.setdefault(src.group, []).append((src, prev))
        else:
            units.append([(src, prev)])
    for items in chip_groups.values():
        for i in range(0, len(items), CHIPS_PER_UNIT):
            units.append(items[i:i + CHIPS_PER_UNIT])
    return WorkPlan(units, unchanged, problems)


def missing_paths(indexed: Iterable[str], roots: list[Path]) -> list[str]:
    """Indexed files under the run's roots that no longer exist."""
    return [p for p in indexed if any(is_under(p, r) for r in roots) and not Path(p).exists()]


def is_under(path: str, root: Path) -> bool:
    p = Path(path)
    return p == root or root in p.parents


@dataclass
class ContentCheck:
    """A changed-looking file, hashed: `sha` to index it, `restamp` when only its size/mtime
    changed (same content: update the record), `error` when it cannot be read."""
    sha: str | None = None
    restamp: dict | None = None
    error: str | None = None


def content_change(src: Source, prev: dict | None) -> ContentCheck:
    if src.remote is None and not _regular(src.path):  # a FIFO would block the run forever on open()
        return ContentCheck(error=f"{src.path}: not a regular file (a pipe, socket or device); skipped")
    try:
        sha = sha256_of(src)
    except OSError as e:
        return ContentCheck(error=f"{src.label}: cannot read ({e.strerror})")
    if prev is not None and prev["sha256"] == sha:
        try:
            size, mtime = file_fingerprint(src)
        except OSError as e:
            return ContentCheck(error=f"{src.label}: cannot stat ({e.strerror})")
        return ContentCheck(restamp={"size": size, "mtime_ns": mtime})
    return ContentCheck(sha=sha)


def file_fingerprint(path) -> tuple[int, int]:
    """(size, mtime_ns) of a file, or of a Source (a remote STAC asset: its version stamp)."""
    if isinstance(path, Source):
        if path.remote is not None:
            return path.remote.size, path.remote.version_ns
        path = path.path
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def sha256_of(path) -> str:
    """Content hash of a file, or of a Source (a remote STAC asset: its URL and version)."""
    if isinstance(path, Source):
        if path.remote is not None:
            return path.remote.digest
        path = path.path
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True  # let the read report why it cannot
