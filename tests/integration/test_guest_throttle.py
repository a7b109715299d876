"""With the tiny Linux guest: an iops limit set live slows the guest's reads, and removing it
gives the speed back, on the same disk the guest kept all along."""

import time

from .conftest import GUEST_MARKS
from .helpers import by_serial

pytestmark = GUEST_MARKS

READS = 40  # 4 KiB direct reads: at 20 IOPS they take about 2 s, unthrottled well under 0.1 s


def timed_reads(ga, dev):
    """Host wall time of READS direct 4 KiB reads in the guest (its page cache bypassed)."""
    start = time.monotonic()
    ga.run("dd if=/dev/%s of=/dev/null bs=4096 count=%d iflag=direct" % (dev, READS), timeout=60)
    return time.monotonic() - start


def test_an_iops_limit_set_live_slows_the_guests_reads_and_removing_it_restores_them(guest):
    disk = dict(name="v", path=guest.image("v.raw", "16M"), serial="THR1")
    assert guest.guest_run(disks=[disk])["changed"]
    with guest.agent() as ga:
        dev = by_serial(ga)["THR1"]["name"]
        assert timed_reads(ga, dev) < 1.0

    throttled = guest.guest_run(disks=[dict(disk, limits=dict(iops_total=20))])
    assert [a["action"] for a in throttled["actions"]] == ["throttle"], throttled.get("msg")
    with guest.agent() as ga:
        assert by_serial(ga)["THR1"]["name"] == dev  # the guest kept its disk
        assert timed_reads(ga, dev) >= 1.5

    freed = guest.guest_run(disks=[disk])
    assert [a["action"] for a in freed["actions"]] == ["throttle"], freed.get("msg")
    with guest.agent() as ga:
        assert by_serial(ga)["THR1"]["name"] == dev
        assert timed_reads(ga, dev) < 1.0
