"""The test suite and its support library, imported as ``tests.<module>``.

Test modules (``test_*.py``) import only this library, never each other.
Scripts use it too: run them from the repository root as
``python -m scripts.<name>``.

- ``helpers``: the shared key, addresses, ``make_node()``.
- ``waits``: bounded polling, from plain code and from trio.
- ``lab``: ``Lab``, the hand-driven harness: cores on one underlay, datagram
  by datagram.
- ``sim``: ``SimNet``, many cores over a simulated underlay with NAT and a
  WireGuard model; the working example as a topology.
- ``fakes``: recording fakes of the WireGuard device and the route table.
- ``fake_host``: fake machines for the daemon (``FakeNet``, ``FakeHost``,
  ``Machine``) on trio's mock clock.
- ``status_samples``: status documents as the TUI and ``status`` read them.
- ``netns``: ``Testbed`` (a namespace testbed from ``ns/``) and ``Daemons``
  (real daemons in its boxes).
- ``faults``: ``FaultMesh``, the working example's daemons with probers and
  fault commands.
- ``gateways``: ``GatewayMesh``, the working example with a LAN device and an
  exit node's network, gateways in network.yaml; ``PingLog``, ``host_state``.
- ``prober``: the reachability prober, a program run inside the boxes.
- ``procfs``: what ``/proc`` says about a process.
- ``services``: an installed service read back (the command line its unit
  or OpenRC script runs), a service manager's notify socket, counted pings.
- ``http``: an in-memory ASGI client, a raw HTTP client, a stand-in daemon
  for the API.
- ``browser``: headless chromium in a testbed box, driven by selenium
  through a worker program in that box.
- ``qr``: QR codes read back (Debian's zbarimg) from a screenshot or from
  the terminal rendering.
"""
