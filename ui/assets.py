"""The map's browser libraries, fetched from the npm registry at install time (never at run time).

`python -m ui.assets` (run by `make install`) downloads each pinned package with `npm pack`,
checks it against the registry's sha512 integrity recorded here, and copies the files the
map needs into `ui/static/vendor/` (ignored by git). After that the UI needs no network:
Streamlit serves these files to the browser together with the page.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
VENDOR = STATIC / "vendor"
STAMP = VENDOR / "packages.json"

# name -> (version, npm integrity, {path in the package: path under vendor/}); a path ending
# in "/" copies a folder.
PACKAGES: dict[str, tuple[str, str, dict[str, str]]] = {
    "leaflet": ("1.9.4",
                "sha512-nxS1ynzJOmOlHp+iL3FyWqK89GtNL8U8rvlMOsQdTTssxZwCXh8N2NB3GDQOL+YR3XnWyZAxwQixURb+FA74PA==",
                {"dist/leaflet.js": "leaflet/leaflet.js", "dist/leaflet.css": "leaflet/leaflet.css",
                 "dist/images/": "leaflet/images/", "LICENSE": "leaflet/LICENSE"}),
    "leaflet-draw": ("1.0.4",
                     "sha512-rsQ6saQO5ST5Aj6XRFylr5zvarWgzWnrg46zQ1MEOEIHsppdC/8hnN8qMoFvACsPvTioAuysya/TVtog15tyAQ==",
                     {"dist/leaflet.draw.js": "leaflet-draw/leaflet.draw.js",
                      "dist/leaflet.draw.css": "leaflet-draw/leaflet.draw.css",
                      "dist/images/": "leaflet-draw/images/"}),
    "leaflet-imageoverlay-rotated": ("0.2.1",
                                     "sha512-8MsrIuW/aXI0EjDXgJSJJ67nqVNQJsP/glmND9g6yc6t+zQgdPUbTRHC65jSs/IBwzwyhggnDgDuydalcEX+ew==",
                                     {"Leaflet.ImageOverlay.Rotated.js": "leaflet-imageoverlay-rotated/Leaflet.ImageOverlay.Rotated.js"}),
    "topojson-client": ("3.1.0",
                        "sha512-605uxS6bcYxGXw9qi62XyrV6Q3xwbndjachmNxu8HWTtVPxZfEJN9fd/SZS1Q54Sn2y0TMyMxFj/cJINqGHrKw==",
                        {"dist/topojson-client.min.js": "topojson-client/topojson-client.min.js",
                         "LICENSE": "topojson-client/LICENSE"}),
    # Natural Earth 1:110m country outlines (public domain): orientation where no basemap loads.
    "world-atlas": ("2.0.2",
                    "sha512-IXfV0qwlKXpckz1FhwXVwKRjiIhOnWttOskm5CtxMsjgE/MXAYRHWJqgXOpM8IkcPBoXnyTU5lFHcYa5ChG0LQ==",
                    {"countries-110m.json": "world-atlas/countries-110m.json", "LICENSE": "world-atlas/LICENSE"}),
}

# Files the page loads; if any is missing the map is replaced by a message saying how to fetch.
REQUIRED = ["leaflet/leaflet.js", "leaflet/leaflet.css", "leaflet-draw/leaflet.draw.js",
            "leaflet-draw/leaflet.draw.css",
            "leaflet-imageoverlay-rotated/Leaflet.ImageOverlay.Rotated.js",
            "topojson-client/topojson-client.min.js", "world-atlas/countries-110m.json"]


def pinned() -> dict[str, str]:
    return {name: version for name, (version, _, _) in PACKAGES.items()}


def missing(vendor: Path = VENDOR) -> list[str]:
    """Required files that are absent, or all of them when they came from other versions."""
    try:
        if json.loads((vendor / STAMP.name).read_text()) != pinned():
            return list(REQUIRED)
    except (OSError, ValueError):
        return list(REQUIRED)
    return [f for f in REQUIRED if not (vendor / f).is_file()]


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _strip_source_map(data: bytes) -> bytes:
    # Maps are not shipped: drop the comment so no browser ever asks for one.
    lines = data.split(b"\n")
    keep = [ln for ln in lines if b"sourceMappingURL=" not in ln]
    return b"\n".join(keep)


def _copy_member(tar: tarfile.TarFile, name: str, dst: Path) -> None:
    member = tar.getmember(name)
    if not member.isfile():
        raise RuntimeError(f"{name} is not a regular file in the package")
    data = tar.extractfile(member).read()
    if dst.suffix in (".js", ".css"):
        data = _strip_source_map(data)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)


def _unpack(tgz: Path, files: dict[str, str], out: Path) -> None:
    with tarfile.open(tgz, "r:gz") as tar:
        names = tar.getnames()
        for src, dst in files.items():
            if src.endswith("/"):
                members = [n for n in names if n.startswith("package/" + src) and not n.endswith("/")]
                if not members:
                    raise RuntimeError(f"{tgz.name}: no files under {src}")
                for n in members:
                    _copy_member(tar, n, out / dst / n[len("package/" + src):])
            else:
                _copy_member(tar, "package/" + src, out / dst)


def fetch(vendor: Path = VENDOR, npm: str = "npm", echo=print) -> None:
    """Download the pinned packages with `npm pack`, verify them, install into `vendor`."""
    if shutil.which(npm) is None:
        raise RuntimeError("npm is not installed: it is needed once, at install time, to fetch "
                           "the map's browser libraries (apt-get install npm)")
    with tempfile.TemporaryDirectory(prefix="glb-ui-assets-") as tmp:
        tmp = Path(tmp)
        staged = tmp / "vendor"
        for name, (version, integrity, files) in PACKAGES.items():
            proc = subprocess.run([npm, "pack", f"{name}@{version}", "--silent",
                                   "--pack-destination", str(tmp)],
                                  capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"npm pack {name}@{version} failed: "
                                   f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
            tgz = tmp / f"{name}-{version}.tgz"
            got = _integrity(tgz.read_bytes())
            if got != integrity:
                raise RuntimeError(f"{name}@{version}: integrity {got} does not match the pinned {integrity}")
            _unpack(tgz, files, staged)
            echo(f"ui assets: {name}@{version} ok")
        (staged / STAMP.name).write_text(json.dumps(pinned(), indent=1, sort_keys=True))
        if vendor.exists():
            shutil.rmtree(vendor)
        vendor.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, vendor)


def ensure(vendor: Path = VENDOR, echo=print) -> list[str]:
    """Fetch when anything is missing; returns what is still missing (empty when all is well)."""
    if missing(vendor):
        try:
            fetch(vendor, echo=echo)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            echo(f"ui assets: {e}")
    return missing(vendor)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    force = "--force" in argv
    if not force and not missing():
        print(f"ui assets: up to date in {VENDOR}")
        return 0
    try:
        fetch()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print(f"ui assets: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
