"""Logging: structlog to stderr, for people (console) or machines (JSON lines).

Conventions for every log call in this package: the event is a dotted noun
(``flush.batch``, ``server.started``, ``scrape.rejected``) and everything
variable -- counts, ids, durations, URLs -- goes in fields, never in the event
text::

    log = get_logger("availability.flusher")
    log.info("flush.batch", shard=3, records=120, rows=118, seconds=0.042)

Library code only logs; it never configures logging (the CLI calls
:func:`configure_logging` at start-up, an embedding application configures
structlog or ``logging`` itself). Every module of the package takes its
logger from :func:`get_logger`, never ``structlog.get_logger``: until
structlog is configured, its events go to the standard ``logging`` module,
which stays silent below WARNING and writes to stderr, instead of structlog's
unconfigured default of printing every event to stdout
(``tests/test_library_output.py`` checks it in a fresh process).

Passwords never reach a log line: :func:`configure_logging` installs
:func:`redact_processor`, which masks the password of every URL-looking
string value (``redis://user:***@host``) and of ``password=...`` pairs, in
structlog events and in records of the standard ``logging`` module (Alembic,
SQLAlchemy, ...) alike. Call :func:`redact_url` yourself when building a
message outside logging (an exception text, a CLI line).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["REDACTED", "configure_logging", "get_logger", "redact_processor", "redact_text", "redact_url"]

REDACTED = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")

# "scheme://user:password@" inside any text. The authority ends at the first
# "/", "?", "#" or whitespace; the password runs to the *last* "@" before that,
# so a password holding a raw "@" is masked whole.
_URL_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*):(?P<password>[^\s/?#]*)@"
)
# "user:password@host" with no scheme (a bare DSN fragment). The user part must
# not follow a word character, "/", ":" or "@", so the scheme form above and
# things like "12:30" are left alone.
_BARE_USERINFO = re.compile(
    r"(?<![\w/:@.\-])(?P<head>[A-Za-z0-9._~%!$&'()*+,;=\-]*):(?P<password>[^\s/?#@]+)@(?=[\w\[])"
)
# password=... in a query string or a libpq "key=value" DSN (quoted or not).
_PASSWORD_PAIR = re.compile(
    r"(?i)(?P<head>\b(?:password|passwd|pwd|pass)\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'|[^\s&;,]+)"
)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``; the user name is kept.

    Works for any scheme (``redis://:pw@h``, ``rediss://user:pw@h``,
    ``postgresql://user:pw@h/db``, ``postgresql+psycopg://...``), for a bare
    ``user:pw@host`` without a scheme, and for a ``password=`` query
    parameter. A URL without a password is returned unchanged; so is anything
    that does not look like a URL (it is never raised on).

    >>> redact_url("rediss://app:s3cret@cache:6380/0")
    'rediss://app:***@cache:6380/0'
    """
    if not isinstance(url, str):
        url = str(url)
    scheme, sep, _ = url.partition("://")
    start = len(scheme) + len(sep) if sep and _SCHEME.fullmatch(scheme) else 0
    end = len(url)
    for delimiter in "/?#":
        found = url.find(delimiter, start)
        if found != -1:
            end = min(end, found)
    authority = url[start:end]
    at = authority.rfind("@")
    if at != -1:
        user, colon, password = authority[:at].partition(":")
        if colon and password:
            url = f"{url[:start]}{user}:{REDACTED}{url[start + at :]}"
    return _PASSWORD_PAIR.sub(lambda m: m["head"] + REDACTED, url)


def redact_text(text: str) -> str:
    """``text`` with the password of every URL (and ``password=`` pair) in it masked."""
    if "@" in text:
        text = _URL_USERINFO.sub(lambda m: f"{m['head']}:{REDACTED}@", text)
        text = _BARE_USERINFO.sub(lambda m: f"{m['head']}:{REDACTED}@", text)
    if "=" in text:
        text = _PASSWORD_PAIR.sub(lambda m: m["head"] + REDACTED, text)
    return text


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if depth >= 4:
        return value
    if isinstance(value, Mapping):
        return {key: _redact_value(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(_redact_value(item, depth + 1) for item in value)
    return value


def redact_processor(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask passwords in every string value (nested ones too).

    Put it after ``format_exc_info`` so exception texts are covered, and before
    the renderer.
    """
    for key, value in event_dict.items():
        if key == "exc_info":
            continue
        event_dict[key] = _redact_value(value)
    return event_dict


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.strip().upper())
    if not isinstance(number, int):
        raise ValueError(f"log level: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}")
    return number


class _StderrLoggerFactory:
    """A ``PrintLogger`` on whatever ``sys.stderr`` is when the logger is made
    (so a test's capture of stderr sees the lines)."""

    def __call__(self, *args: Any) -> structlog.PrintLogger:
        return structlog.PrintLogger(sys.stderr)


_HANDLER_NAME = "availability.logs"

# Loggers of other libraries that are noisy at INFO: alembic announces each of its
# plugins ("setup plugin alembic.autogenerate.schemas") on every command.
_CHATTY = ("alembic.runtime.plugins",)


def configure_logging(level: str | int = "INFO", json: bool = False, *, stream: TextIO | None = None) -> None:
    """Configure structlog and the standard ``logging`` module; call once at start-up.

    Lines go to stderr (or ``stream``): with ``json=False`` a console line for
    people (colours only on a terminal), with ``json=True`` one JSON object per
    line with ``timestamp`` (UTC, ISO 8601), ``level`` and ``event``. Records
    of other libraries that use ``logging`` get the same format. Passwords in
    URLs are masked everywhere (see :func:`redact_processor`). Calling it again
    replaces the previous configuration.

    Raises:
        ValueError: an unknown level name.
    """
    number = _level_number(level)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        # Plain-text tracebacks (rich ones would print local variables, passwords included).
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    out = stream if stream is not None else sys.stderr
    renderer: Processor
    if json:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(stream) if stream is not None else _StderrLoggerFactory(),
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact_processor, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    for name in _CHATTY:  # their INFO lines say nothing an operator needs; DEBUG shows them again
        logging.getLogger(name).setLevel(logging.NOTSET if number <= logging.DEBUG else max(number, logging.WARNING))


class LibraryLogger:
    """A logger for library code that never writes to stdout on its own.

    Once structlog is configured (:func:`configure_logging`,
    ``structlog.configure`` of an embedding application, or a test's
    ``structlog.testing.capture_logs``), every call goes to
    ``structlog.get_logger(name)`` unchanged. Before that, it goes to
    ``logging.getLogger(name)`` as ``"<event> key=value ..."``: dropped below
    WARNING and written to stderr otherwise, as ``logging`` does unconfigured.
    """

    _LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
               "error": logging.ERROR, "critical": logging.CRITICAL, "exception": logging.ERROR}

    def __init__(self, name: str, context: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self._context = dict(context or {})
        self._structlog = structlog.get_logger(name)
        self._stdlib = logging.getLogger(name)

    def bind(self, **fields: Any) -> LibraryLogger:
        """A logger adding ``fields`` to every call (as structlog's ``bind``)."""
        return LibraryLogger(self.name, {**self._context, **fields})

    def _log(self, method: str, event: str, fields: dict[str, Any]) -> None:
        if self._context:
            fields = {**self._context, **fields}
        if structlog.is_configured():
            getattr(self._structlog, method)(event, **fields)
            return
        level = self._LEVELS[method]
        if self._stdlib.isEnabledFor(level):
            text = " ".join([event, *(f"{key}={value!r}" for key, value in fields.items())])
            self._stdlib.log(level, "%s", redact_text(text), exc_info=method == "exception")

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._log("critical", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._log("exception", event, fields)


def get_logger(name: str) -> LibraryLogger:
    """The logger library modules use: see :class:`LibraryLogger`."""
    return LibraryLogger(name)
