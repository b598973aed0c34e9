"""Tensor parallelism across processes: process 0 owns the scheduler and sends each step's plan to the others.

Contract:
  initialize(coordinator, num_processes, process_id)   jax.distributed.initialize (CPU: gloo collectives);
      call before anything touches jax's devices. jax.devices() then lists every process's devices.
  link = PlanLink.listen(port, num_followers) on process 0; PlanLink.connect(host, port) on the others
  LeaderRunner(runner, link)   the runner as process 0's engine sees it: `dispatch(plan)` (and `run`) send the
      plan to every follower first, then dispatch it here; everything else is the runner's. close() ends them.
  follow(runner, link)   a follower's loop: run each plan received, until the leader closes the link
Every process builds the same Runner (same model, options and tensor_parallel_size, so the same compiled
programs); the SPMD step runs on all of them at once, its collectives across processes. The radix tree,
allocator and scheduler exist on process 0 only: the plan (page ids included) is all the others need.
The link is a plain TCP socket carrying pickled plans: for processes of one trusted deployment only.
"""

from __future__ import annotations

import pickle
import socket
import struct
import time

import jax

_LENGTH = struct.Struct("!Q")


def initialize(coordinator: str, num_processes: int, process_id: int) -> None:
    """Join the job (jax.distributed); on CPU the cross-process collectives go through gloo."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


class PlanLink:
    """Length-prefixed pickles over TCP: the leader sends to every follower, a follower receives."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        self._sockets = sockets

    @classmethod
    def listen(cls, port: int, num_followers: int, host: str = "127.0.0.1") -> PlanLink:
        server = socket.create_server((host, port))
        with server:
            return cls([server.accept()[0] for _ in range(num_followers)])

    @classmethod
    def connect(cls, host: str, port: int, timeout: float = 300.0) -> PlanLink:
        """Connect to the leader, waiting up to `timeout` seconds for it to listen (it warms up first)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection((host, port), timeout=timeout)
                sock.settimeout(None)  # a step may be far apart from the next: block
                return cls([sock])
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def send(self, message) -> None:
        data = pickle.dumps(message)
        for sock in self._sockets:
            sock.sendall(_LENGTH.pack(len(data)) + data)

    def receive(self):
        """The next message, or None once the leader closed the link."""
        header = self._read(_LENGTH.size)
        return None if header is None else pickle.loads(self._read(_LENGTH.unpack(header)[0]))

    def _read(self, size: int) -> bytes | None:
        chunks, left = [], size
        while left:
            chunk = self._sockets[0].recv(left)
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


class LeaderRunner:
    """Process 0's runner: every step's plan goes to the followers before it is dispatched here."""

    def __init__(self, runner, link: PlanLink) -> None:
        self._runner, self._link = runner, link

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def dispatch(self, plan):
        self._link.send(plan)
        return self._runner.dispatch(plan)

    def run(self, plan):
        return self._runner.collect(self.dispatch(plan))

    def close(self) -> None:
        self._link.close()


def follow(runner, link: PlanLink) -> int:
    """Run every plan the leader sends (a plan the leader's runner refused is refused here too, before any
    device work); returns the number of steps run once the link closes."""
    steps = 0
    while (plan := link.receive()) is not None:
        try:
            runner.collect(runner.dispatch(plan))
        except ValueError:
            continue
        steps += 1
    return steps
