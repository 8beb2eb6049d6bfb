"""`glb index --stac CATALOG.json`: the image assets of a STAC catalogue, collection or item
(a local file or an http(s) URL) as indexer sources.

Each item's image assets become scenes: band centre wavelengths come from the `eo` extension
(`eo:bands[].center_wavelength`, or STAC 1.1 `bands[].eo:center_wavelength`), the acquisition
date from the item, and the item id and collection name the scene (`collection/item[/asset]`,
returned with every result). Remote assets are read as cloud-optimised GeoTIFFs through GDAL's
`/vsicurl/` (HTTP range requests: only the bytes of the windows read travel).

Incremental: a local asset is fingerprinted like any file (size, mtime, content hash); a remote
one by its URL and version (HTTP ETag, else Last-Modified, else the item's `updated` time),
asked with one HEAD request, so an unchanged asset costs one round trip and is not read.

A catalogue on disk may only name files under its own folder: hrefs that escape it (`../`,
absolute paths elsewhere, symlinks out) are refused, and a remote catalogue may not name local
files at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .sources import Source

IMAGE_MEDIA = ("image/tiff", "image/geotiff", "image/vnd.stac.geotiff", "image/jp2",
               "application/x-geotiff")
IMAGE_SUFFIXES = (".tif", ".tiff", ".jp2")
NOT_DATA_ROLES = {"thumbnail", "overview", "metadata", "visual-thumbnail"}
HEAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RemoteStamp:
    """What stands in for (size, mtime, content hash) of an asset read over HTTP."""
    size: int
    version_ns: int          # a number derived from the version string, compared for equality
    digest: str              # sha256 of (url, version): the scene's identity in tile ids


def _is_url(href: str) -> bool:
    return urllib.parse.urlparse(href).scheme in ("http", "https")


def _local(href: str) -> Path:
    u = urllib.parse.urlparse(href)
    if u.scheme == "file":
        return Path(urllib.parse.unquote(u.path))
    return Path(href)


class _Refused(Exception):
    pass


def _guarded_io(root: Path | None):
    """A pystac StacIO that reads only what the catalogue may name: for a catalogue on disk,
    files under `root`; for a remote one, no local files."""
    from pystac.stac_io import DefaultStacIO

    class GuardedStacIO(DefaultStacIO):
        def read_text(self, source, *args, **kwargs) -> str:
            href = str(source)
            if not _is_url(href):
                _check_local(href, root)
            return super().read_text(source, *args, **kwargs)

    return GuardedStacIO()


def _check_local(href: str, root: Path | None) -> Path:
    if root is None:
        raise _Refused(f"{href}: a remote catalogue may not name local files; refused")
    p = _local(href).resolve()
    if p != root and root not in p.parents:
        raise _Refused(f"{href}: outside the catalogue's folder {root}; refused")
    return p


def _wavelengths(asset, item) -> tuple[float, ...] | None:
    bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands")
    if not bands:
        bands = item.properties.get("eo:bands")
    if not bands:
        return None
    out = []
    for b in bands:
        w = b.get("center_wavelength", b.get("eo:center_wavelength"))
        if w is None:
            return None
        out.append(float(w))
    return tuple(out)


def _acquired(item) -> dt.date | None:
    when = item.datetime or item.common_metadata.start_datetime
    return when.date() if when else None


def _is_image(asset) -> bool:
    roles = set(asset.roles or [])
    if roles & NOT_DATA_ROLES and "data" not in roles:
        return False
    mt = (asset.media_type or "").lower()
    if mt:
        return any(mt.startswith(m) for m in IMAGE_MEDIA)
    return urllib.parse.urlparse(asset.href).path.lower().endswith(IMAGE_SUFFIXES)


def _head(url: str) -> tuple[int, str | None]:
    """(Content-Length, ETag or Last-Modified) of a remote asset; raises OSError when it
    cannot be reached."""
    req = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(req, timeout=HEAD_TIMEOUT_S) as r:
        size = int(r.headers.get("Content-Length") or 0)
        return size, r.headers.get("ETag") or r.headers.get("Last-Modified")


def remote_stamp(url: str, fallback_version: str | None) -> RemoteStamp:
    size, version = _head(url)
    version = version or fallback_version or ""
    digest = hashlib.sha256(f"{url}|{version}|{size}".encode()).hexdigest()
    return RemoteStamp(size, int(digest[:15], 16), digest)


def discover_stac(href: str) -> tuple[list[Source], list[str], dict[str, int]]:
    """Sources for every image asset under `href`; problems (one line each: the asset or
    document and what is wrong); skipped counts by reason."""
    import pystac

    sources: list[Source] = []
    problems: list[str] = []
    skipped: dict[str, int] = {}
    remote_root = _is_url(href)
    root = None
    if not remote_root:
        p = _local(href).expanduser()
        if not p.is_file():
            return [], [f"{href}: no such STAC file"], {}
        root = p.resolve().parent
        href = str(p.resolve())
    io = _guarded_io(root)
    try:
        obj = pystac.read_file(href, stac_io=io)
    except _Refused as e:
        return [], [str(e)], {}
    except Exception as e:  # noqa: BLE001 - a broken document: one line, nothing indexed
        return [], [f"{href}: not a readable STAC document ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:200] if str(e) else ''})"], {}
    if isinstance(obj, pystac.Item):
        items = iter([obj])
    elif isinstance(obj, pystac.Catalog):
        items = obj.get_items(recursive=True)
    else:
        return [], [f"{href}: a STAC {type(obj).__name__}, not a catalogue, collection or item"], {}
    while True:
        try:
            item = next(items)
        except StopIteration:
            break
        except _Refused as e:
            problems.append(str(e))
            continue
        except Exception as e:  # noqa: BLE001 - one bad child or item must not stop the walk
            problems.append(f"{href}: a linked document cannot be read ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''})")
            continue
        sources.extend(_item_sources(item, root, remote_root, problems, skipped))
    return sources, problems, skipped


def _item_sources(item, root: Path | None, remote_root: bool, problems: list[str],
                  skipped: dict[str, int]) -> list[Source]:
    collection = item.collection_id or ""
    images = [(k, a) for k, a in item.assets.items() if _is_image(a)]
    skipped_n = len(item.assets) - len(images)
    if skipped_n:
        skipped["STAC assets that are not images"] = skipped.get("STAC assets that are not images", 0) + skipped_n
    updated = item.properties.get("updated")
    out = []
    for key, asset in images:
        href = asset.get_absolute_href() or asset.href
        name = "/".join(x for x in (collection, item.id, key if len(images) > 1 else "") if x)
        override = {"wavelengths": _wavelengths(asset, item), "acquired": _acquired(item)}
        override = {k: v for k, v in override.items() if v is not None}
        stac = {"item": item.id, "collection": collection, "asset": key, "href": href,
                "name": name}
        if _is_url(href):
            url = href
            try:
                stamp = remote_stamp(url, asset.extra_fields.get("updated") or updated)
            except (OSError, ValueError) as e:
                reason = getattr(e, "reason", None) or getattr(e, "code", None) or e
                problems.append(f"{url}: STAC asset {name} cannot be reached ({reason})")
                continue
            src = Source(Path(name), "scene", override)
            src.gdal_path = "/vsicurl/" + url
            src.remote = stamp
        else:
            if remote_root:
                problems.append(f"{href}: STAC asset {name} of a remote catalogue names a local "
                                f"file; refused")
                continue
            try:
                path = _check_local(href, root)
            except _Refused as e:
                problems.append(f"{e} (STAC asset {name})")
                continue
            src = Source(path, "scene", override)
        src.display = name
        src.stac = stac
        out.append(src)
    return out


def gdal_remote_defaults() -> None:
    """GDAL settings for reading COGs over HTTP: no directory listing per file (a request
    each); set only where the environment does not already choose."""
    os.environ.setdefault("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    os.environ.setdefault("GDAL_HTTP_MAX_RETRY", "2")
