"""What identity costs: the handshake, and one join at a static with many nodes.

Run from the repository root: ``python -m scripts.bench_identity``.

- *handshake*: one Noise XXpsk3 session between two cores, end to end
  (INIT, RESPONSE, FINISH through ``receive_datagram``), CPU per side.
- *join*: a static that already has N sessions (each in its WireGuard, so
  its table lists them all); one more node completes its handshake; what
  the static spends until it is quiet again: CPU, datagrams, bytes. The
  same for a node renaming itself (an ``Info``: one table change).

Medians of several runs; pure core, no sockets.
"""

from __future__ import annotations

import argparse
import statistics
import time
from ipaddress import IPv4Address, IPv4Network

from msgspec.structs import replace

from tests.lab import Lab
from tests.member import Member, source
from wg_netmanager import wire
from wg_netmanager.core.timers import Timers
from wg_netmanager.model import WgPeerReading


def handshake_seconds(runs: int) -> tuple[float, float]:
    """Median CPU seconds of one handshake: (initiator side, responder side)."""
    initiator, responder = [], []
    for _ in range(runs):
        lab = Lab({"alice": 1})
        alice = lab.start("alice")
        bob = lab.start("bob", 2)
        t0 = time.process_time()
        bob.handshake.initiate(alice.info.wg_ip, lab.boxes["alice"].admin, lab.now)
        (init,) = bob.datagrams_to_send()
        t1 = time.process_time()
        alice.receive_datagram(init[0], lab.boxes["bob"].admin, lab.now)
        (response,) = [d for d in alice.datagrams_to_send() if d[1] == lab.boxes["bob"].admin]
        t2 = time.process_time()
        bob.receive_datagram(response[0], lab.boxes["alice"].admin, lab.now)
        finish = [d for d in bob.datagrams_to_send() if d[1] == lab.boxes["alice"].admin]
        t3 = time.process_time()
        alice.receive_datagram(finish[0][0], lab.boxes["bob"].admin, lab.now)
        t4 = time.process_time()
        assert bob.info.wg_ip in alice.sessions and alice.info.wg_ip in bob.sessions
        initiator.append((t1 - t0) + (t3 - t2))
        responder.append((t2 - t1) + (t4 - t3))
    return statistics.median(initiator), statistics.median(responder)


def static_with(n: int) -> tuple[Lab, list[Member]]:
    # Default liveness (nobody times out here), room for a thousand nodes.
    lab = Lab({"alice": 1}, timers=Timers(), subnet=IPv4Network("10.1.0.0/16"))
    alice = lab.start("alice")
    members = []
    for i in range(n):
        member = Member(IPv4Address("10.1.4.0") + i, name=f"m{i}")
        address = (f"203.0.{i // 200}.{i % 200 + 1}", 50000)
        (response,) = lab.inject(member.init(alice.info.wg_ip), address, "alice")
        lab.inject(member.finish(response.data), address, "alice")
        members.append(member)
    readings = {
        key: WgPeerReading(key, ("203.0.113.9", 50000), (), 1.0, 1, 1)
        for key in (s.info.public_key for s in alice.sessions.values())
    }
    alice.update_wg(readings, lab.now)
    # As a static that has run a while: every session has the current table.
    # (Publishing it here, 1,000 whole tables, would only slow the set-up.)
    entries = alice.table.entries(alice.sessions, readings, lab.now)
    alice.table.take_change(entries)
    alice.table.push_at = None
    for session in alice.sessions.values():
        session.table_sent = alice.table.version
    alice.datagrams_to_send()
    return lab, members


def quiet(lab: Lab, until: float) -> tuple[float, int, int]:
    """CPU, datagrams and bytes the static spends from now until ``until``."""
    alice = lab.boxes["alice"].node
    t0 = time.process_time()
    sent = 0
    bytes_ = 0
    while lab.now < until:
        lab.now = min(until, lab.now + 0.005)
        due = alice.get_timer()
        if due is not None and due <= lab.now:
            alice.handle_timer(lab.now)
        out = alice.datagrams_to_send()
        sent += len(out)
        bytes_ += sum(len(d) + 28 for d, _ in out)  # + IPv4 and UDP headers
    return time.process_time() - t0, sent, bytes_


def join(n: int) -> tuple[float, int, int]:
    lab, _members = static_with(n)
    alice = lab.boxes["alice"].node
    newcomer = Member(IPv4Address("10.1.4.0") + n, name="newcomer")
    t0 = time.process_time()
    (response,) = lab.inject(newcomer.init(alice.info.wg_ip), source(250), "alice")
    lab.inject(newcomer.finish(response.data), source(250), "alice")
    key = newcomer.public_key
    alice.update_wg({**alice._wg, key: WgPeerReading(key, source(250), (), 1.0, 1, 1)}, lab.now)
    handshake_cpu = time.process_time() - t0
    cpu, sent, bytes_ = quiet(lab, lab.now + 0.2)
    lab.collect()
    return handshake_cpu + cpu, sent + 1, bytes_


def rename(n: int) -> tuple[float, int, int]:
    lab, members = static_with(n)
    alice = lab.boxes["alice"].node
    member = members[0]
    member.name = "renamed"
    datagram = member.send(alice.info.wg_ip, wire.Info(replace(member.info())))
    t0 = time.process_time()
    alice.receive_datagram(datagram, ("203.0.0.1", 50000), lab.now)
    first = time.process_time() - t0
    cpu, sent, bytes_ = quiet(lab, lab.now + 0.2)
    return first + cpu, sent, bytes_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="static sizes, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    args = parser.parse_args()
    i_cpu, r_cpu = handshake_seconds(max(args.runs, 20))
    print(f"handshake: initiator {i_cpu * 1e3:.2f} ms CPU, responder {r_cpu * 1e3:.2f} ms CPU")
    print(f"{'N':>6} {'what':>7} {'static CPU':>11} {'datagrams':>10} {'bytes':>10}")
    for n in (int(x) for x in args.sizes.split(",")):
        for name, measure in (("join", join), ("rename", rename)):
            runs = [measure(n) for _ in range(args.runs)]
            cpu = statistics.median(r[0] for r in runs)
            sent = statistics.median(r[1] for r in runs)
            size = statistics.median(r[2] for r in runs)
            print(f"{n:>6} {name:>7} {cpu * 1e3:>8.1f} ms {sent:>10.0f} {size:>10.0f}")


if __name__ == "__main__":
    main()
