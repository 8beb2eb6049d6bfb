"""Connecting to a Ray cluster: the one place the product starts or joins one, for distributed
indexing (indexer/ray_distributor.py) and sharded search (engine/retrieval/shards.py).

Ray is optional (`pip install '.[ray]'`); nothing imports it until a Ray feature is used.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GLBError

RAY_VERSION = "2.60.0"


class RayUnavailableError(GLBError):
    pass


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None      # None: start a local cluster; "auto", "HOST:PORT", "ray://…"
    embed_actors: int | None = None  # indexing: default one per GPU of the cluster, else one (CPU)
    in_flight: int | None = None     # indexing: units read/embedded/written at once; default 2 x CPUs
    max_retries: int = 3             # re-runs of a task whose worker died
    local_cpus: int | None = None    # local cluster only: CPUs it may use (default: all)
    local_gpus: int | None = None    # local cluster only: GPUs it may use (default: all)


def _code_root() -> str:
    """The folder that holds the `engine` (and `indexer`) packages this driver runs, so a local
    cluster's workers import the same code (a checkout, not whatever is installed)."""
    return str(Path(__file__).resolve().parents[1])


def check_reachable(address: str) -> None:
    """A clear error for a cluster that is not there, before ray.init waits for it."""
    if address == "auto":
        return  # ray.init finds the local cluster's address itself, or raises ConnectionError
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = hostport.rpartition(":")
    if not sep:
        host, port = hostport, "10001" if address.startswith("ray://") else "6379"
    try:
        port_n = int(port)
    except ValueError:
        raise RayUnavailableError(f"--ray {address}: not HOST:PORT") from None
    try:
        with socket.create_connection((host, port_n), timeout=3):
            pass
    except OSError as e:
        raise RayUnavailableError(f"no Ray cluster at {address} ({e.strerror or e}); start one with "
                                  f"`ray start --head` or give --ray without an address for a "
                                  f"local cluster") from None


def connect(opts: RayOptions):
    """ray, initialised: the session already connected (tests, notebooks), the cluster at
    `opts.address`, or a new local cluster. Returns (ray, whether we started the connection)."""
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(f"Ray is not installed: pip install '.[ray]' (ray=={RAY_VERSION})") from None
    if ray.is_initialized():  # this process is already connected: use that cluster
        return ray, False
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(
        [_code_root()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}}
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if opts.address:
        check_reachable(opts.address)
        try:
            ray.init(address=opts.address, runtime_env=env, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RayUnavailableError(f"no Ray cluster at {opts.address}: "
                                      f"{str(e).splitlines()[0][:200]}") from None
    else:
        # A loaded machine can miss Ray's fixed 30 s wait for its own raylet: try again.
        for attempt in (1, 2, 3):
            try:
                ray.init(num_cpus=opts.local_cpus, num_gpus=opts.local_gpus, runtime_env=env, **kw)
                break
            except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for this
                ray.shutdown()
                if attempt == 3 or "timed out during startup" not in str(e):
                    raise RayUnavailableError(f"could not start a local Ray cluster: "
                                              f"{str(e).splitlines()[0][:200]}") from None
    return ray, True
