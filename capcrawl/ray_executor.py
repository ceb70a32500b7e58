"""The Ray executor: ``capcrawl download`` and ``capcrawl filter`` spread over a Ray cluster.

- **download**: the URL list is cut into input shards (:mod:`capcrawl.input_shards`), and each
  shard that has no completion marker becomes one Ray task. A task runs the crawl stage in a
  fresh process on its shard, publishes the shard's parts and writes its marker; a task that
  fails is retried (:data:`TASK_RETRIES`), and resumes from the parts its failed attempt left.
  The driver then writes WORK/crawl/stats.json over every part, as a local download does.
- **filter**: a pool of Ray actors, each loading the model once (``--gpus-per-worker G``: one
  actor per G GPUs; 0: CPU actors), scores the parts the driver hands out one at a time. Each
  actor writes a part's outputs atomically with the filter stage's own code, so a part is done
  exactly as in a local run; the driver writes stats.json and ``_SUCCESS`` at the end.

With no ``--ray-address`` a local Ray is started for the command (bound to loopback, no
dashboard) and stopped after it. Every node needs capcrawl installed and WORK at the same path
(a shared file system). This module is imported only when ``--executor ray`` is given.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from common.errors import ConfigError
from common.fileio import atomic_write_json, locked_dir
from common.layout import STATS_FILE
from crawler.config import CrawlConfig
from filter.config import FilterConfig

from . import input_shards

log = logging.getLogger(__name__)

#: Retries of a download task that failed (its process crashed or exited non-zero) or whose
#: worker or node died.
TASK_RETRIES = 3
#: Restarts of a filter actor whose process died; its part is then scored again.
ACTOR_RESTARTS = 2
#: Memory for Ray's object store in a local Ray: tasks pass configs and counts, not data.
LOCAL_OBJECT_STORE_BYTES = 128 * 1024 * 1024
#: Environment for a local Ray, set before Ray is imported (it reads them then): loopback only
#: (no probing of a public address for the node's IP) and no usage reports.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
_WAIT_S = 1.0


# --- the cluster ------------------------------------------------------------------------------


def import_ray(local: bool) -> Any:
    """The ``ray`` module; for a local Ray, imported with :data:`LOCAL_RAY_ENV` in the environment."""
    if local and "ray" not in sys.modules:
        for key, value in LOCAL_RAY_ENV.items():
            os.environ.setdefault(key, value)
    import ray

    return ray


def _on_loopback(address: str) -> bool:
    """``127.0.0.1:6379`` or ``localhost:6379`` (not ``auto`` and not a Ray Client ``ray://`` address)."""
    if "://" in address:
        return False
    host = address.rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host.startswith("127.") or host == "::1"


@contextmanager
def ray_cluster(address: str | None, log_level: str = "WARNING", num_cpus: int | None = None) -> Iterator[Any]:
    """Connect to the Ray cluster at ``address`` or start a local one; yields ``ray``; disconnects
    (and stops a local one) after. A process already connected (``ray.init`` called by the caller)
    keeps its connection.
    """
    loopback = not address or _on_loopback(address)
    ray = import_ray(local=loopback)
    if ray.is_initialized():
        yield ray
        return
    level = logging.getLevelName(log_level)
    if level > logging.INFO:  # Ray's notice that token authentication is on, at every start
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    kwargs: dict[str, Any] = {"logging_level": max(level, logging.WARNING), "log_to_driver": level <= logging.INFO}
    try:
        if address:
            log.info("connecting to the Ray cluster at %s", address)
            if loopback:  # a cluster on this machine's loopback: this driver joins it there
                kwargs["_node_ip_address"] = "127.0.0.1"
            ray.init(address=address, **kwargs)
        else:
            started = time.monotonic()
            # "local": a new Ray even where `ray start` left a cluster (or a stale address in
            # /tmp/ray/ray_current_cluster), which a bare ray.init() would try to join.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, **kwargs)
            log.info("started a local Ray in %.1f s", time.monotonic() - started)
    except ConnectionError as e:
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({e}); start it with `ray start --head` "
                          "or pass its address.") from e
    try:
        yield ray
    finally:
        ray.shutdown()


# --- download ---------------------------------------------------------------------------------


def download(config: CrawlConfig, log_level: str = "WARNING") -> dict[str, Any]:
    """Download a URL list as one Ray task per input shard; returns WORK/crawl/stats.json.

    Shards already marked complete are skipped without starting a task. ``stats["failed_shards"]``
    lists the shards whose task failed on every try (a rerun tries them again).
    """
    with locked_dir(config.crawl_dir, "WORK"):  # one command writes WORK/crawl at a time
        return _download(config, log_level)


def _download(config: CrawlConfig, log_level: str) -> dict[str, Any]:
    started_at = datetime.now(timezone.utc)
    cut = input_shards.cut_url_list(config)
    todo = [s for s in cut.shards if input_shards.read_marker(config, s) is None]
    log.info("%d input shards, %d to download", len(cut.shards), len(todo))
    finished: list[dict[str, Any]] = []
    failed: dict[int, str] = {}
    finish_reason = "finished"
    complete = len(cut.shards) - len(todo)
    if todo:
        deadline_at = time.time() + config.deadline if config.deadline else None
        with ray_cluster(config.ray_address, log_level) as ray:
            task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES, retry_exceptions=True)(input_shards.run_shard)
            refs = {task.remote(config, s, log_level, deadline_at): s for s in todo}
            try:
                for shard, result, error in _as_completed(ray, refs):
                    if error is not None:
                        failed[shard] = error
                        log.error("shard %d failed after %d retries: %s", shard, TASK_RETRIES, error)
                    elif result["state"] == "done":
                        complete += 1
                        if result.get("ran"):
                            finished.append(result["marker"])
                            log.info("shard %d: %d rows in %.1f s", shard, result["marker"]["rows"],
                                     result["marker"]["seconds"])
                        _report(config, complete, len(cut.shards))
                    else:
                        finish_reason = result.get("finish_reason") or "incomplete"
            except KeyboardInterrupt:
                finish_reason = "shutdown"
                for ref in refs:
                    ray.cancel(ref)
                _wait_cancelled(ray, list(refs))
    if failed and finish_reason == "finished":
        finish_reason = "shard_failed"
    stats = input_shards.download_stats(config, cut, finished, finish_reason, started_at)
    input_shards.remove_finished_task_dirs(config, cut)
    if failed:
        stats["failed_shards"] = sorted(failed)
        atomic_write_json(stats, config.crawl_dir / STATS_FILE)
    return stats


def _as_completed(ray: Any, refs: dict[Any, int]) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """``(shard, result, error)`` for each task as it ends."""
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=_WAIT_S)
        for ref in ready:
            try:
                yield refs[ref], ray.get(ref), None
            except ray.exceptions.RayError as e:
                yield refs[ref], None, _error_text(e)


def _error_text(e: BaseException) -> str:
    cause = getattr(e, "cause", None)
    return str(cause) if cause is not None else str(e).strip().splitlines()[-1]


def _wait_cancelled(ray: Any, refs: list[Any], timeout: float = input_shards.STOP_GRACE_S + 5) -> None:
    """Let cancelled tasks stop their processes (they keep what they finished)."""
    try:
        ray.wait(refs, num_returns=len(refs), timeout=timeout)
    except KeyboardInterrupt:
        pass


def _report(config: CrawlConfig, done: int, total: int) -> None:
    if config.progress and sys.stderr.isatty():
        print(f"\rshards {done}/{total} complete", end="" if done < total else "\n", file=sys.stderr, flush=True)


# --- filter -----------------------------------------------------------------------------------


class PartScorer:
    """A Ray actor: the filter stage with its model loaded once, scoring a share of the parts per call.

    A CPU actor runs torch on as many threads as it holds CPUs (``threads``); a local filter on
    that many threads writes the same bytes.
    """

    def __init__(self, config: FilterConfig, threads: int | None = None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        from filter.stage import FilterStage

        self.stage = FilterStage(config)

    def score(self, parts: list[str]) -> int:
        """Score ``parts`` through one DataLoader (its workers decode the next part while this one
        is scored) and write each part's outputs atomically; the rows written. Parts already done
        are skipped, so a task retried on a restarted actor redoes only the unfinished ones."""
        from filter.stage import part_done

        todo = [Path(p) for p in parts if not part_done(self.stage.config, Path(p))]
        return self.stage.score_and_write(todo)

    def counters(self) -> tuple[int, int]:
        """(texts encoded, DataLoaders built) by this actor."""
        return self.stage.texts.encoded, self.stage.loaders


def actor_config(config: FilterConfig) -> FilterConfig:
    """The config an actor runs: CPU actors on the CPU, GPU actors as given (on the GPUs Ray gives them)."""
    if config.gpus_per_worker:
        return config  # its device is resolved on the actor's machine, not here
    return dataclasses.replace(config, device="cpu")


def pool_size(config: FilterConfig, resources: dict[str, float], parts: int) -> int:
    """Actors to start: one per ``--gpus-per-worker`` GPUs, else one per max(1, --workers) CPUs; at most one a part."""
    if config.gpus_per_worker:
        n = int(resources.get("GPU", 0) // config.gpus_per_worker)
        if n == 0:
            raise ConfigError(f"--gpus-per-worker {config.gpus_per_worker} but the Ray cluster has "
                              f"{resources.get('GPU', 0):g} GPUs; pass --gpus-per-worker 0 for CPU actors.")
    else:
        n = int(resources.get("CPU", 1) // max(1, config.workers))
    return max(1, min(n, parts))


def filter_parts(config: FilterConfig) -> dict[str, Any]:
    """Score WORK/crawl's unfinished parts on a pool of Ray actors; returns WORK/scored/stats.json."""
    from filter.stage import locked_share

    with locked_share(config):
        return _filter_parts(config)


def _filter_parts(config: FilterConfig) -> dict[str, Any]:
    from filter.stage import check_scoring_options, collect_stats, record_scoring_options, unfinished_parts, write_done_marker

    config.check_inputs()
    check_scoring_options(config)
    started = time.monotonic()
    parts, todo = unfinished_parts(config)
    rows = texts = actors = loaders = 0
    if todo:
        record_scoring_options(config)
        with ray_cluster(config.ray_address) as ray:
            actors = pool_size(config, ray.cluster_resources(), len(todo))
            cpus = 1 if config.gpus_per_worker else max(1, config.workers)
            cls = ray.remote(PartScorer).options(num_cpus=cpus, num_gpus=config.gpus_per_worker,
                                                 max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
            threads = None if config.gpus_per_worker else cpus
            pool = [cls.remote(actor_config(config), threads) for _ in range(actors)]
            log.info("scoring %d parts on %d Ray actors", len(todo), actors)
            rows = _score_on(ray, pool, todo)
            texts, loaders = (sum(c) for c in zip(*ray.get([a.counters.remote() for a in pool])))
    stats = collect_stats(config)
    stats["this_run"] = {
        "parts_selected": len(parts),
        "parts_scored": len(todo),
        "parts_skipped": len(parts) - len(todo),
        "rows_scored": rows,
        "seconds": round(time.monotonic() - started, 3),
        "texts_encoded": texts,
        "loaders": loaders,
        "executor": "ray",
        "actors": actors,
    }
    atomic_write_json(stats, config.scored_dir / STATS_FILE, sort_keys=True)
    write_done_marker(config, parts)
    return stats


def shares(parts: list[Path], actors: int) -> list[list[Path]]:
    """``parts`` cut into one contiguous share per actor, sizes differing by at most one.

    One share per actor means one DataLoader per actor for the whole run, so an actor's model
    never waits for a new loader's workers to start between parts. Parts hold the same number
    of rows (``--shard-rows``), so equal shares are balanced on like actors.
    """
    size, extra = divmod(len(parts), actors)
    out, start = [], 0
    for k in range(actors):
        stop = start + size + (1 if k < extra else 0)
        if stop > start:
            out.append(parts[start:stop])
        start = stop
    return out


def _score_on(ray: Any, pool: list[Any], parts: list[Path]) -> int:
    """Score each actor's share of ``parts``; the rows scored. An error stops the run, as it does locally."""
    running = {actor.score.remote([str(p) for p in share]): share for actor, share in zip(pool, shares(parts, len(pool)))}
    rows = 0
    while running:
        ready, _ = ray.wait(list(running), num_returns=1, timeout=_WAIT_S)
        for ref in ready:
            share = running.pop(ref)
            n = ray.get(ref)
            rows += n
            log.info("scored %s..%s (%d parts): %d rows", share[0].name, share[-1].name, len(share), n)
    return rows
