"""The plan link of runner/multihost.py on its own (threads and sockets, no jax.distributed): signed
messages, refusals of the unsigned, replayed or foreign, and a lost follower or leader named clearly."""

from __future__ import annotations

import socket
import threading

import pytest

from trellis_jax.runner import multihost

SECRET = b"sixteen or more bytes"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def linked(follower_secret=SECRET):
    """(leader link, follower link) over a fresh port."""
    port, box = free_port(), {}
    thread = threading.Thread(target=lambda: box.update(leader=multihost.PlanLink.listen(port, 1, secret=SECRET)))
    thread.start()
    follower = multihost.PlanLink.connect("127.0.0.1", port, secret=follower_secret, timeout=10)
    thread.join(10)
    return box["leader"], follower


def test_follower_receives_what_the_leader_sends_then_none_after_goodbye():
    leader, follower = linked()
    leader.send({"plan": [1, 2, 3]})
    leader.close()
    assert follower.receive() == {"plan": [1, 2, 3]}
    assert follower.receive() is None


def test_leader_that_dies_without_goodbye_is_leader_lost():
    leader, follower = linked()
    for peer in leader._peers:
        peer.sock.close()  # what a killed process leaves: EOF, no goodbye
    with pytest.raises(multihost.LeaderLost, match="without its goodbye"):
        follower.receive()


def test_message_signed_with_another_secret_is_refused_before_unpickling():
    leader, follower = linked()
    leader._peers[0].key = b"x" * 32  # the leader now signs with a key the follower does not share
    leader.send("anything")
    with pytest.raises(multihost.BadMessage, match="not signed"):
        follower.receive()


def test_replayed_message_is_refused():
    leader, follower = linked()
    leader.send("first")
    assert follower.receive() == "first"
    leader._peers[0].sent -= 1  # the same bytes again: signed for sequence number 0, expected 1
    leader.send("first")
    with pytest.raises(multihost.BadMessage):
        follower.receive()


def test_follower_with_the_wrong_secret_does_not_take_a_slot():
    port, box = free_port(), {}

    def listen():
        try:
            multihost.PlanLink.listen(port, 1, secret=SECRET, timeout=3)
        except TimeoutError as error:
            box["error"] = error

    thread = threading.Thread(target=listen)
    thread.start()
    multihost.PlanLink.connect("127.0.0.1", port, secret=b"another secret of 16+", timeout=10)
    thread.join(10)
    assert "only 0 of 1 followers" in str(box["error"])


def test_short_secret_is_refused():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        multihost.PlanLink.connect("127.0.0.1", free_port(), secret=b"short")


class _Runner:
    def __init__(self):
        self.dispatched = []

    def dispatch(self, plan):
        self.dispatched.append(plan)
        return plan


def test_leader_runner_fails_before_dispatch_once_a_follower_is_gone():
    leader, follower = linked()
    runner = _Runner()
    lead = multihost.LeaderRunner(runner, leader)
    lead.dispatch("step 1")
    follower._peers[0].sock.close()  # the follower process died
    for _ in range(2):  # and every later step fails the same way: the job cannot run without it
        with pytest.raises(multihost.FollowerLost, match="is gone"):
            lead.dispatch("step 2")
    assert runner.dispatched == ["step 1"]
