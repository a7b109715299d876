# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Desired declaration vs runtime file -> what differs (pure)."""

from __future__ import annotations

import json


def normalise(declaration: dict) -> dict:
    """The declaration as the runtime file stores it (JSON types: tuples become lists)."""
    return json.loads(json.dumps(declaration))


def _label(item, index):
    return "[%s]" % item["name"] if isinstance(item, dict) and "name" in item else "[%d]" % index


def changes(before, after, path: str = "") -> list:
    """Every leaf that differs, as ``path: old -> new``, in a stable order."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            sub = "%s.%s" % (path, key) if path else key
            found += changes(before.get(key), after.get(key), sub)
        return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        found = []
        for index, (old, new) in enumerate(zip(before, after)):
            found += changes(old, new, path + _label(new, index))
        return found
    if before == after:
        return []
    return ["%s: %s -> %s" % (path, _short(before), _short(after))]


def _short(value) -> str:
    if isinstance(value, (list, dict)):
        names = [v.get("name") for v in value if isinstance(v, dict)] if isinstance(value, list) else []
        if names and all(names):
            return "[%s]" % ", ".join(names)
    return json.dumps(value)
