# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a task asks QEMU before it plans and after it applies (shell): read-only queries, sent
together and answered in one round-trip (qmp.QmpSession.execute_all). The answers are read by
pure code: verify.Live for a running instance, adopt.found_layout for a QEMU the collection did
not start."""

from __future__ import annotations

from ansible_collections.blocklayer.qemu.plugins.module_utils import verify


def live(qmp) -> verify.Live:
    """What QEMU has now: devices, PCI slots, QOM types, nodes, netdevs (verify.QUERIES)."""
    return verify.Live.from_answers(*qmp.execute_all(verify.QUERIES))


_ADOPTION = (("qom-list", {"path": "/machine/peripheral"}), ("query-pci", {}), ("query-block", {}),
             ("query-named-block-nodes", {"flat": True}),
             ("human-monitor-command", {"command-line": "info network"}), ("query-kvm", {}),
             # The machine's QOM type names its versioned machine type (e.g. pc-i440fx-7.2-machine).
             ("qom-get", {"path": "/machine", "property": "type"}))


def adoption(qmp) -> dict:
    """Every answer adopt.found_layout needs (the shape of tests/data/qmp-adopt-*.json): the
    instance-wide queries in one round-trip, then each device's properties in another."""
    from ansible_collections.blocklayer.qemu.plugins.module_utils import adopt  # adoption only
    answers = dict(zip(("qom-list", "query-pci", "query-block", "query-named-block-nodes", "human-monitor-command",
                        "query-kvm", "machine"), qmp.execute_all(_ADOPTION)))
    wanted = [(dev_id, prop) for dev_id, driver in adopt.peripherals(answers["qom-list"]).items()
              if driver in adopt.ADOPTED_DRIVERS for prop in adopt.props_to_read(driver)]
    values = qmp.execute_all([("qom-get", {"path": adopt.PERIPHERAL + dev_id, "property": prop})
                              for dev_id, prop in wanted])
    answers["qom-get"] = {}
    for (dev_id, prop), value in zip(wanted, values):
        answers["qom-get"].setdefault(dev_id, {})[prop] = value
    return answers
