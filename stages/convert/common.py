"""Pieces every conversion path records the same way."""

from __future__ import annotations

from stages.files import dumps_stable


def converter_record(converter, versions: dict, settings: dict) -> dict:
    import hashlib

    return {
        "name": converter.name,
        "versions": versions,
        "params_section": converter.params,
        "params_sha256": hashlib.sha256(dumps_stable(settings).encode()).hexdigest(),
    }
