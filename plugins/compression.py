"""Compression of migration traffic, chosen by the step's ``compression`` input.

``xbzrle`` (delta pages, cache size ``xbzrle_cache_mib``), ``mt`` (zlib on ``mt_threads``
threads at ``mt_level``), or ``multifd-zstd`` / ``multifd-zlib`` (parallel streams,
compressed). Multifd compression needs libvirt 9.4 or newer on the source: the version
is asked, not assumed, and an older host gets uncompressed multifd with a note.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evac import hookimpl
from evac.convergence import MigrationTuning
from evac.errors import ConfigError
from evac.hypervisor import Hypervisor
from evac.inventory import HostSpec
from evac.model import Guest

MULTIFD_COMPRESSION_SINCE = 9_004_000
METHODS = ("none", "xbzrle", "mt", "multifd-zstd", "multifd-zlib")


@hookimpl
def evac_migration_tuning(
    guest: Guest, source: HostSpec, target: HostSpec, options: Mapping[str, Any]
) -> MigrationTuning | None:
    method = str(options.get("compression") or "none")
    if method not in METHODS:
        raise ConfigError(f"compression: expected one of {', '.join(METHODS)}, got {method!r}")
    if method == "none":
        return None
    if method == "xbzrle":
        cache = int(options.get("xbzrle_cache_mib") or 64) * 2**20
        return MigrationTuning(
            {"compression": ["xbzrle"], "compression.xbzrle-cache": cache}, ("COMPRESSED",), ("xbzrle",)
        )
    if method == "mt":
        params = {
            "compression": ["mt"],
            "compression.mt-threads": int(options.get("mt_threads") or 2),
            "compression.mt-level": int(options.get("mt_level") or 1),
        }
        return MigrationTuning(params, ("COMPRESSED",), ("mt compression",))
    with Hypervisor.connect(source.name, source.uri) as hv:
        version = hv.library_version()
    streams = int(options.get("parallel_connections") or 4)
    if version < MULTIFD_COMPRESSION_SINCE:
        note = f"multifd without compression: libvirt {version} on {source.name} has no multifd compression"
        return MigrationTuning({"parallel.connections": streams}, ("PARALLEL",), (note,))
    algorithm = method.split("-", 1)[1]
    return MigrationTuning(
        {"compression": [algorithm], "parallel.connections": streams},
        ("PARALLEL", "COMPRESSED"),
        (f"multifd {algorithm}",),
    )
