"""Structured logs: one JSON object per line, with the ids an operator greps for.

The API, the workers and the scan task all log through this formatter, so one index can be
followed from its POST to the worker that scanned it with ``grep '"index_id": 7'``. Fields travel in
``extra={"fields": {...}}``; ``fields(...)`` spells that.
"""

from __future__ import annotations

import json
import logging
import sys


class JsonFormatter(logging.Formatter):
    """The record's message plus every field passed as ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                "msg": record.getMessage(), **getattr(record, "fields", {})}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def fields(**values) -> dict:
    """``log.info("...", extra=fields(index_id=3, job_id="ab"))``"""
    return {"fields": values}


def use_json_logs(*names: str, level: int = logging.INFO) -> None:
    """Give the named loggers (the root logger when none are named) a JSON handler on stderr,
    unless the host application already gave them handlers."""
    for name in names or ("",):
        logger = logging.getLogger(name)
        if logger.handlers:
            continue
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = not name
