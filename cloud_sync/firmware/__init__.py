"""Firmware on the cloud side: bundles, blocklist, gateway groups, staged rollouts over Jobs."""
