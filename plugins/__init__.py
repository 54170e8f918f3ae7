"""Built-in plugins of infovae, one registration module per kind.

Each kind's ``__init__`` is torch-free: it registers factories by import string,
so listing plugins never imports torch. The implementations live beside it and
use only the public API of ``infovae``, like any third-party plugin.
"""
