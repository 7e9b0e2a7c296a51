"""wg_netmanager: a WireGuard mesh network manager."""

__version__ = "0.1.0"
