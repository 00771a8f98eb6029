"""Logging: readable lines for people, or one JSON object per line for log collectors.

Logs go to stderr (stdout carries the status display and command output). Choose with
``journey --log-format json`` or ``JOURNEY_LOG_FORMAT=json``; the level with ``--log-level``.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(level: str, fmt: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict; also given to Faust's worker so it keeps ours."""
    formatter: dict[str, Any] = {"()": JsonFormatter} if fmt == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"journey": formatter},
        # aiokafka repeats each connection error thousands of times a second while the broker is
        # away: one line per message per 30 s, with a count of the ones held back.
        "filters": {"quiet_kafka": {"()": "streams.runtime.health.QuietKafkaLogs"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "journey",
                "filters": ["quiet_kafka"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        # aiokafka logs every request at DEBUG: building those records costs time per event.
        "loggers": {
            "aiokafka": {"level": max(logging.INFO, logging.getLevelName(level.upper()))},
            # "Timer ... is overlapping" whenever a busy worker runs a timer late: under load that
            # is every few seconds and says nothing the timer lateness metric does not.
            "mode.timers": {"level": max(logging.ERROR, logging.getLevelName(level.upper()))},
        },
    }


def setup_logging(level: str, fmt: str) -> None:
    logging.config.dictConfig(logging_config(level, fmt))
