"""Connecting to a Ray cluster: the one place that imports ray and turns its failures into clear errors.

`address` is what `ray.init` takes: "auto" (the RAY_ADDRESS environment variable, else the cluster started
on this machine), "HOST:PORT" of a head node, or "ray://HOST:PORT" of a Ray client server. A process that is
already connected (a notebook that called `ray.init` itself) keeps its connection; otherwise `ClusterSession`
connects on entry and disconnects on exit.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Iterator
from typing import Any

from .errors import InvalidArgumentError

# Tasks in flight per CPU of the cluster: every worker stays busy while the driver takes in a result.
TASKS_PER_CPU = 2
CONNECT_TIMEOUT_S = 10.0  # ray.init waits minutes on an address where nothing answers: a plain socket says at once


def import_ray() -> Any:
    """The ray module, or InvalidArgumentError saying how to install it."""
    try:
        import ray
    except ImportError as error:
        raise InvalidArgumentError(
            "using a Ray cluster needs the ray package: install lookalike[ray]", "ray_address"
        ) from error
    return ray


def check_reachable(address: str) -> None:
    """Raise when nothing accepts a connection at a head node's HOST:PORT (other address forms are left to Ray)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise InvalidArgumentError(
            f"no Ray cluster answers at {address}: {error.strerror or error}", "ray_address"
        ) from error


class ClusterSession:
    """`with ClusterSession(address) as ray:` the ray module, connected to the cluster at `address`."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._connected = False  # whether this session connected the process (and so disconnects it)

    def __enter__(self) -> Any:
        ray = import_ray()
        if ray.is_initialized():
            return ray
        check_reachable(os.environ.get("RAY_ADDRESS", "auto") if self.address == "auto" else self.address)
        try:
            ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise InvalidArgumentError(
                f"cannot reach the Ray cluster at {self.address}: {error}", "ray_address"
            ) from error
        self._connected = True
        return ray

    def __exit__(self, *exc: object) -> None:
        if self._connected:
            import_ray().shutdown()
            self._connected = False


def results_as_finished(ray: Any, submissions: Iterable[Any]) -> Iterator[Any]:
    """The results of tasks as they finish, in any order, TASKS_PER_CPU per CPU of the cluster in flight.

    `submissions` is consumed lazily (e.g. `(task.remote(job) for job in jobs)`), so a task is only sent once a
    slot is free; tasks still pending when the caller stops are cancelled.
    """
    limit = max(2, TASKS_PER_CPU * int(ray.cluster_resources().get("CPU", 1)))
    pending: list[Any] = []
    try:
        for ref in submissions:
            pending.append(ref)
            if len(pending) >= limit:
                ready, pending = ray.wait(pending, num_returns=1)
                yield ray.get(ready[0])
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])
    finally:
        for ref in pending:
            ray.cancel(ref)
