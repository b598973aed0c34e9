"""Multi-process tensor parallelism from the command line: one job of N processes, process 0 leads.

Contract:
  add_multihost_flags(parser)   --coordinator HOST:PORT, --num-processes N, --process-id I, --plan-port P
      (trellis-serve and trellis-batch get them through add_engine_flags)
  multihost_problem(args, environ) -> str | None   what is inconsistent (parse_engine_args: a usage error)
  Job.from_args(args, environ) -> Job | None   None for a one-process run (the default)
  job.join(config)   jax.distributed.initialize, then tensor_parallel_size must equal the global device count
  job.is_leader; job.build_leader_engine(config) -> (Engine, tokenizer) over a LeaderRunner, once every
      follower joined the plan link; job.close() says goodbye to the followers
  job.run_follower(config) -> exit status: loads and warms up the same runner, then runs the leader's plans
      (runner/multihost.py follow); 0 once the leader says goodbye, 1 with a message if it dies.
Why process-level flags and not EngineConfig fields: they say which process of a job this one is, not how an
engine behaves, and the Python API takes a LeaderRunner directly (build_engine(config, runner=...)).
The shared secret of the plan link comes from TRELLIS_PLAN_SECRET, not a flag: argv is visible to every user
of the machine (ps), and the secret is what stops a stranger's pickles from running on a follower.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

SECRET_VARIABLE = "TRELLIS_PLAN_SECRET"
MIN_SECRET_BYTES = 16
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_multihost_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "multi-process tensor parallelism",
        f"N processes (one per machine) share one --tensor-parallel-size mesh over all their devices; process 0 "
        f"serves or runs the job, the others follow its plans. Every process gets the same flags but "
        f"--process-id, and the same {SECRET_VARIABLE} (at least {MIN_SECRET_BYTES} bytes) in its environment.",
    )
    group.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        default=None,
        help="process 0's address for jax.distributed (the same on every process); required with --num-processes > 1",
    )
    group.add_argument("--num-processes", type=int, default=1, metavar="N", help="processes in the job")
    group.add_argument("--process-id", type=int, default=None, metavar="I", help="this process: 0 (leader) .. N-1")
    group.add_argument(
        "--plan-port",
        type=int,
        default=None,
        metavar="P",
        help="port on process 0's host where followers receive each step's plan (default: the coordinator's + 1)",
    )


def _host_port(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def multihost_problem(args: argparse.Namespace, environ) -> str | None:
    """Why these flags cannot make a job (None: they can, or this is a one-process run)."""
    n = args.num_processes
    if n < 1:
        return f"--num-processes must be >= 1, got {n}"
    if n == 1:
        given = [flag for flag, value in _multihost_only(args) if value is not None]
        return f"{', '.join(given)} only apply with --num-processes > 1" if given else None
    if args.coordinator is None or _host_port(args.coordinator) is None:
        return f"--num-processes {n} needs --coordinator HOST:PORT (process 0's address), got {args.coordinator!r}"
    if args.process_id is None or not 0 <= args.process_id < n:
        return f"--process-id must be one of 0..{n - 1} with --num-processes {n}, got {args.process_id}"
    if args.tensor_parallel_size < n:
        return (
            f"--tensor-parallel-size {args.tensor_parallel_size} is less than --num-processes {n}: the mesh spans "
            "every process's devices (set it to the job's global device count)"
        )
    if getattr(args, "kv_host_bytes", None) is not None or getattr(args, "kv_cache_dir", None) is not None:
        return (
            f"--kv-host-bytes / --kv-cache-dir do not work with --num-processes {n} yet: their page copies run "
            "outside the plans the followers receive, so process 0 would wait on them alone"
        )
    port = _plan_port(args)
    if not 0 < port < 65536 or port == _host_port(args.coordinator)[1]:
        return f"--plan-port must be a free port other than the coordinator's, got {port}"
    if len(environ.get(SECRET_VARIABLE, "").encode()) < MIN_SECRET_BYTES:
        return (
            f"--num-processes {n} needs {SECRET_VARIABLE} set to a shared secret of at least {MIN_SECRET_BYTES} "
            "bytes, the same on every process (it signs the plans: e.g. `export "
            f"{SECRET_VARIABLE}=$(openssl rand -hex 16)` once, copied to each machine)"
        )
    return None


def _multihost_only(args):
    return [("--coordinator", args.coordinator), ("--process-id", args.process_id), ("--plan-port", args.plan_port)]


def _plan_port(args) -> int:
    return args.plan_port if args.plan_port is not None else _host_port(args.coordinator)[1] + 1


@dataclass
class Job:
    coordinator: str
    num_processes: int
    process_id: int
    plan_port: int
    secret: bytes
    leader_runner: object = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ) -> Job | None:
        if args.num_processes == 1:
            return None
        problem = multihost_problem(args, environ)
        if problem:
            raise ValueError(problem)
        secret = environ[SECRET_VARIABLE].encode()
        return cls(args.coordinator, args.num_processes, args.process_id, _plan_port(args), secret)

    @property
    def is_leader(self) -> bool:
        return self.process_id == 0

    @property
    def host(self) -> str:
        return _host_port(self.coordinator)[0]

    def join(self, config) -> None:
        """Join jax.distributed (before anything else touches jax), then check the mesh covers every device."""
        import jax

        from trellis_jax.runner import multihost

        self.log(f"joining the job at {self.coordinator}")
        multihost.initialize(self.coordinator, self.num_processes, self.process_id)
        if config.tensor_parallel_size != jax.device_count():
            raise ValueError(
                f"--tensor-parallel-size {config.tensor_parallel_size} must equal the job's global device count, "
                f"{jax.device_count()} ({jax.local_device_count()} on this process, {self.num_processes} processes)"
            )

    def build_leader_engine(self, config):
        from trellis_jax.engine.builder import build_engine, load_for, make_runner
        from trellis_jax.runner import multihost

        loaded = load_for(config)
        runner = make_runner(config, loaded)
        bind = "127.0.0.1" if self.host in _LOOPBACK else ""
        self.log(f"warmed up; waiting for {self.num_processes - 1} follower(s) on plan port {self.plan_port}")
        link = multihost.PlanLink.listen(self.plan_port, self.num_processes - 1, secret=self.secret, host=bind)
        self.leader_runner = multihost.LeaderRunner(runner, link)
        self.log("every follower joined")
        return build_engine(config, loaded=loaded, runner=self.leader_runner)

    def close(self) -> None:
        if self.leader_runner is not None:
            self.leader_runner.close()

    def run_follower(self, config) -> int:
        from trellis_jax.engine.builder import load_for, make_runner
        from trellis_jax.runner import multihost

        runner = make_runner(config, load_for(config))
        self.log(f"warmed up; following the leader's plans from {self.host}:{self.plan_port}")
        link = multihost.PlanLink.connect(self.host, self.plan_port, secret=self.secret, process_id=self.process_id)
        try:
            steps = multihost.follow(runner, link)
        except (multihost.LeaderLost, multihost.BadMessage) as error:
            self.log(f"stopping: {error}")
            return 1
        self.log(f"ran {steps} steps; the leader closed the job")
        return 0

    def log(self, message: str) -> None:
        print(f"process {self.process_id}/{self.num_processes}: {message}", file=sys.stderr, flush=True)
