"""Tensor parallelism across processes: process 0 owns the scheduler and sends each step's plan to the others.

Contract:
  initialize(coordinator, num_processes, process_id)   jax.distributed.initialize (CPU: gloo collectives);
      call before anything touches jax's devices. jax.devices() then lists every process's devices.
  link = PlanLink.listen(port, num_followers, secret=) on process 0; PlanLink.connect(host, port, secret=,
      process_id=) on the others. `secret`: bytes every process shares (the CLIs read TRELLIS_PLAN_SECRET).
  LeaderRunner(runner, link)   the runner as process 0's engine sees it: `dispatch(plan)` (and `run`) send the
      plan to every follower first, then dispatch it here; everything else is the runner's. close() ends them.
      A follower gone (its socket closed, or a send fails) raises FollowerLost before any device work, then
      on every later step: the engine fails its requests instead of hanging in a collective.
  follow(runner, link)   a follower's loop: run each plan received until the leader says goodbye (returns the
      steps run); LeaderLost if the link ends without one (the leader died).
Every process builds the same Runner (same model, options and tensor_parallel_size, so the same compiled
programs); the SPMD step runs on all of them at once, its collectives across processes. The radix tree,
allocator and scheduler exist on process 0 only: the plan (page ids included) is all the others need.

Why an HMAC on every message: the link carries pickles, and unpickling runs code, so a follower must only
unpickle what the leader sent. Each follower opens with a signed hello carrying a fresh nonce; every leader
message is signed with a key derived from the secret and that nonce, over its sequence number, so a message
from anyone without the secret, a reordered or a replayed one (from this or an earlier job) is refused
before it is unpickled. The link is not encrypted: plans (token ids, page ids) cross it in clear, as do
jax.distributed's own collectives, so run it on a private network.
A follower that dies between steps is seen at the next step; one that dies inside a step leaves the leader's
collective waiting until jax.distributed's heartbeat gives up on the job (its own timeout).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import select
import socket
import struct
import time

import jax

_HEADER = struct.Struct("!Q")
_MAC_BYTES = hashlib.sha256().digest_size
_NONCE_BYTES = 16
_HELLO = struct.Struct(f"!{_NONCE_BYTES}sQ")  # the follower's nonce and process id
_GOODBYE = b"goodbye"  # the leader's last payload: the job ended on purpose
_MAX_MESSAGE = 1 << 30  # a length past this is not a plan: refuse it before allocating


class FollowerLost(RuntimeError):
    """A follower process is gone: the SPMD step cannot run without it."""


class LeaderLost(RuntimeError):
    """The leader's link ended without its goodbye: process 0 died or was killed."""


class BadMessage(RuntimeError):
    """A message whose signature does not check out (wrong secret, reordered, replayed, or not ours)."""


def initialize(coordinator: str, num_processes: int, process_id: int) -> None:
    """Join the job (jax.distributed); on CPU the cross-process collectives go through gloo."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


def _sign(key: bytes, direction: bytes, seq: int, payload: bytes) -> bytes:
    return hmac.new(key, direction + _HEADER.pack(seq) + payload, hashlib.sha256).digest()


def _session_key(secret: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, b"trellis-plan-link" + nonce, hashlib.sha256).digest()


class _Peer:
    """One signed connection: its socket, the session key, and the next sequence number each way."""

    def __init__(self, sock: socket.socket, key: bytes, name: str) -> None:
        self.sock, self.key, self.name = sock, key, name
        self.sent = self.received = 0

    def send(self, direction: bytes, payload: bytes) -> None:
        mac = _sign(self.key, direction, self.sent, payload)
        self.sock.sendall(_HEADER.pack(len(payload)) + mac + payload)
        self.sent += 1

    def receive(self, direction: bytes) -> bytes | None:
        """The next payload, checked; None if the peer closed the link at a message boundary."""
        header = self._read(_HEADER.size, eof_ok=True)
        if header is None:
            return None
        (size,) = _HEADER.unpack(header)
        if size > _MAX_MESSAGE:
            raise BadMessage(f"message from {self.name} claims {size} bytes: not a plan link message")
        mac = self._read(_MAC_BYTES)
        payload = self._read(size)
        if not hmac.compare_digest(mac, _sign(self.key, direction, self.received, payload)):
            raise BadMessage(
                f"message {self.received} from {self.name} is not signed with this job's secret "
                "(TRELLIS_PLAN_SECRET differs, or the message was replayed or altered): refused"
            )
        self.received += 1
        return payload

    def _read(self, size: int, eof_ok: bool = False) -> bytes | None:
        chunks, left = [], size
        while left:
            chunk = self.sock.recv(left)
            if not chunk:
                if eof_ok and left == size:
                    return None
                raise ConnectionError(f"{self.name} closed the link in the middle of a message")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def is_gone(self) -> bool:
        """A follower never writes after its hello: anything readable (EOF included) means it is gone."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)


class PlanLink:
    """Signed, length-prefixed pickles over TCP: the leader sends to every follower, a follower receives."""

    def __init__(self, peers: list[_Peer], leader: bool) -> None:
        self._peers, self._leader = peers, leader

    @classmethod
    def listen(
        cls, port: int, num_followers: int, *, secret: bytes, host: str = "127.0.0.1", timeout: float = 600.0
    ) -> PlanLink:
        """Wait (up to `timeout` s in all) for `num_followers` followers with a valid hello; a connection
        whose hello is not signed with `secret` is dropped and the slot stays open."""
        _check_secret(secret)
        deadline = time.monotonic() + timeout
        peers: list[_Peer] = []
        with socket.create_server((host, port)) as server:
            while len(peers) < num_followers:
                server.settimeout(max(deadline - time.monotonic(), 0.001))
                try:
                    sock, address = server.accept()
                except TimeoutError:
                    raise TimeoutError(
                        f"only {len(peers)} of {num_followers} followers joined the plan link on port {port} "
                        f"within {timeout:.0f} s"
                    ) from None
                peer = _accept_hello(sock, address, secret, min(30.0, timeout))
                if peer is not None:
                    peers.append(peer)
        return cls(peers, leader=True)

    @classmethod
    def connect(cls, host: str, port: int, *, secret: bytes, process_id: int = 1, timeout: float = 600.0) -> PlanLink:
        """Connect to the leader, waiting up to `timeout` seconds for it to listen (it warms up first)."""
        _check_secret(secret)
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection((host, port), timeout=timeout)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        sock.settimeout(None)  # a step may be far apart from the next: block
        nonce = os.urandom(_NONCE_BYTES)
        _Peer(sock, secret, "the follower").send(b"hello", _HELLO.pack(nonce, process_id))
        return cls([_Peer(sock, _session_key(secret, nonce), f"the leader at {host}:{port}")], leader=False)

    def send(self, message) -> None:
        """To every follower; FollowerLost if one is gone (checked before anything is sent)."""
        self._send(pickle.dumps(message))

    def _send(self, payload: bytes) -> None:
        for peer in self._peers:
            if peer.is_gone():
                raise FollowerLost(f"{peer.name} is gone (its plan link closed)")
        for peer in self._peers:
            try:
                peer.send(b"plan", payload)
            except OSError as error:
                raise FollowerLost(f"{peer.name} is gone ({error})") from error

    def receive(self):
        """The next message; None once the leader said goodbye; LeaderLost if the link ended without it."""
        peer = self._peers[0]
        try:
            payload = peer.receive(b"plan")
        except ConnectionError as error:
            raise LeaderLost(f"{peer.name} dropped the link ({error})") from error
        if payload is None:
            raise LeaderLost(f"{peer.name} closed the link without its goodbye (did process 0 die?)")
        return None if payload == _GOODBYE else pickle.loads(payload)

    def close(self) -> None:
        """The leader says goodbye first (best effort: a follower already gone needs none)."""
        if self._leader:
            try:
                self._send(_GOODBYE)
            except FollowerLost:
                pass
        for peer in self._peers:
            peer.sock.close()


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes) or len(secret) < 16:
        raise ValueError("the plan link needs a shared secret of at least 16 bytes (TRELLIS_PLAN_SECRET)")


def _accept_hello(sock: socket.socket, address, secret: bytes, timeout: float) -> _Peer | None:
    """The follower's signed hello -> its peer, or None (logged by the caller's caller: dropped)."""
    sock.settimeout(timeout)
    try:
        payload = _Peer(sock, secret, f"a follower at {address[0]}:{address[1]}").receive(b"hello")
    except (OSError, ConnectionError, BadMessage):
        payload = None
    if payload is None or len(payload) != _HELLO.size:
        sock.close()
        return None
    sock.settimeout(None)
    nonce, process_id = _HELLO.unpack(payload)
    return _Peer(sock, _session_key(secret, nonce), f"follower process {process_id} at {address[0]}")


class LeaderRunner:
    """Process 0's runner: every step's plan goes to the followers before it is dispatched here. Once a
    follower is lost every step raises FollowerLost: the job cannot run without it."""

    def __init__(self, runner, link: PlanLink) -> None:
        self._runner, self._link = runner, link
        self._lost: FollowerLost | None = None

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def dispatch(self, plan):
        if self._lost is not None:
            raise FollowerLost(str(self._lost))
        try:
            self._link.send(plan)
        except FollowerLost as error:
            self._lost = error
            raise
        return self._runner.dispatch(plan)

    def run(self, plan):
        return self._runner.collect(self.dispatch(plan))

    def close(self) -> None:
        self._link.close()


def follow(runner, link: PlanLink) -> int:
    """Run every plan the leader sends (a plan the leader's runner refused is refused here too, before any
    device work); returns the number of steps run once the leader says goodbye."""
    steps = 0
    while (plan := link.receive()) is not None:
        try:
            runner.collect(runner.dispatch(plan))
        except ValueError:
            continue
        steps += 1
    return steps
