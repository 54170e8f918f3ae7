"""Exception types. Every message names the problem and how to fix it."""
from __future__ import annotations


class InfovaeError(Exception):
    """Base class of every error infovae raises on purpose."""


class PluginError(InfovaeError):
    """Something is wrong with a plugin or the way it is asked for."""


class UnknownPluginError(PluginError, LookupError):
    """A plugin name that no loaded plugin registered."""


class DuplicatePluginError(PluginError):
    """Two plugins registered the same name for the same kind."""


class PluginOptionError(PluginError, ValueError):
    """A plugin option with an unknown key, a wrong type or a value out of range."""


class PluginLoadError(PluginError):
    """A plugin failed to import or register (raised only in strict mode)."""


class PluginBuildError(PluginError):
    """A plugin's factory raised, returned the wrong thing, or the result failed its probe."""


class PluginWarning(RuntimeWarning):
    """A plugin was skipped, partly rejected, or is slow to load (listing still works)."""


class CapabilityError(InfovaeError, ValueError):
    """Plugins that cannot work together (e.g. a binary decoder on 8-bit data)."""


class DataError(InfovaeError, ValueError):
    """Missing or malformed data files."""


class RunError(InfovaeError):
    """A run directory that is missing, incomplete, corrupt, or would be overwritten."""


class TrainingError(InfovaeError):
    """Training had to stop (e.g. a non-finite loss); the last good state is kept."""


class StorageError(RunError):
    """A write failed (disk full, file too large, read-only file system, a symlink or a file in the way).

    The message names the path and the reason; files written before are intact (every write is atomic).
    """
