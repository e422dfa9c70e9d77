"""Shaman for Flamenco Manager: content-addressed file store, checkouts and GC.

The core modules (config, store, checkout, gc) know nothing about HTTP;
`manager_plugin.http` translates requests into calls on them.
"""

__version__ = "0.1.0"
