"""--workers-file: the file's workers join and leave as the file changes; others stay."""

import os

from trellis_jax.router.health import HealthChecker
from trellis_jax.router.prefix_index import PrefixIndex
from trellis_jax.router.workers import WorkerPool

A, B, C = "http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9003"


def write(path, text, mtime):
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def checker(path, static=()):
    pool = WorkerPool(list(static))
    return pool, HealthChecker(pool, PrefixIndex(4, 100), workers_file=str(path))


def test_the_files_workers_join(tmp_path):
    path = tmp_path / "workers"
    write(path, f"{A}\n# a comment\n\n{B}  # trailing\n", 1)
    pool, health = checker(path)
    health.sync_file()
    assert {w.url for w in pool.all} == {A, B}


def test_a_worker_gone_from_the_file_leaves_but_a_worker_given_otherwise_stays(tmp_path):
    path = tmp_path / "workers"
    write(path, f"{A}\n{B}\n", 1)
    pool, health = checker(path, static=[C])
    health.sync_file()
    write(path, f"{B}\n{C}\n", 2)
    health.sync_file()
    write(path, "", 3)
    health.sync_file()
    assert [w.url for w in pool.all] == [C]


def test_a_bad_line_is_skipped_and_the_rest_applies(tmp_path):
    path = tmp_path / "workers"
    write(path, f"not a url\n{A}\n", 1)
    pool, health = checker(path)
    health.sync_file()
    assert [w.url for w in pool.all] == [A]
