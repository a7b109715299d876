"""Make ``ansible_collections.blocklayer.qemu`` importable from this checkout."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, "build", "collections")
_view = os.path.join(COLLECTIONS, "ansible_collections", "blocklayer", "qemu")
if not os.path.lexists(_view):
    os.makedirs(os.path.dirname(_view), exist_ok=True)
    os.symlink(ROOT, _view)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
