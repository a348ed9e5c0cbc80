"""Which codec decodes and encodes: the library codec (the bitshuffle package's public
functions) or the compiled one (codec/compiled.py), chosen once per process on first use
by HKLFLOW_CODEC:

* ``auto`` (the default): the compiled codec where it loads and passes its self-test
  against the library codec, else the library codec, with one log line that says why;
* ``compiled``: the compiled codec, or an error that says why it cannot be used;
* ``library``: the library codec; the compiled module is never loaded."""
from __future__ import annotations

import functools
import importlib
import logging
import os
import threading

from ..base.errors import HklflowError
from .library import LibraryCodec

CODEC_ENV = "HKLFLOW_CODEC"
CHOICES = ("auto", "compiled", "library")

log = logging.getLogger("hklflow.codec")
_choosing = threading.Lock()


class CodecUnavailable(HklflowError, RuntimeError):
    """HKLFLOW_CODEC=compiled where the compiled codec cannot be used, or a value of
    HKLFLOW_CODEC that is none of CHOICES (a step reports it in one line, as any
    HklflowError)."""


def setting() -> str:
    """HKLFLOW_CODEC, checked ('auto' when unset or empty)."""
    value = os.environ.get(CODEC_ENV, "").strip().lower() or "auto"
    if value not in CHOICES:
        raise CodecUnavailable(f"{CODEC_ENV}={value!r}: expected one of {', '.join(CHOICES)}")
    return value


@functools.cache
def library_codec() -> LibraryCodec:
    return LibraryCodec()


def _load_compiled():
    """The compiled codec once it passed its self-test; raises with the reason otherwise."""
    # (binds the private symbols, compiles: on first use only)
    compiled = importlib.import_module(f"{__package__}.compiled")

    failure = compiled.self_test(library_codec())
    if failure is not None:
        raise CodecUnavailable(f"its self-test failed: {failure}")
    return compiled.CompiledCodec()


@functools.cache
def _chosen(value: str):
    if value == "library":
        return library_codec()
    try:
        return _load_compiled()
    except Exception as exc:  # noqa: BLE001 - any failure to load falls back (auto)
        why = f"{type(exc).__name__}: {exc}"
        if value == "compiled":
            raise CodecUnavailable(f"{CODEC_ENV}=compiled, but the compiled bitshuffle-LZ4 "
                                   f"codec cannot be used ({why})") from exc
        log.warning("bitshuffle-LZ4: the compiled codec is not used (%s); the bitshuffle "
                    "package's functions decode instead (%s=library to silence this)",
                    why, CODEC_ENV)
        return library_codec()


def active_codec():
    """The codec HKLFLOW_CODEC chooses (its name: .name, 'library' or 'compiled')."""
    value = setting()
    with _choosing:  # (threads of a step may ask at once: one self-test)
        return _chosen(value)
