"""A throwaway Faust app with the worker's consumer mixins installed, for unit tests of one
mixin on Faust's real consumer class (created, not started: no broker needed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust

from streams.runtime.commit_guard import install_commit_guard
from streams.runtime.fetching import install_fetch_control


def app_with(name: str, *install: Callable[[faust.App], Any]) -> faust.App:
    """The app, with the commit guard and the fetch control (as the worker installs them
    first), then ``install`` in order."""
    app = faust.App(name, broker="kafka://127.0.0.1:1", autodiscover=False)
    install_commit_guard(app)
    install_fetch_control(app)
    for each in install:
        each(app)
    return app
