"""The local engine: N worker processes on this machine, each holding one model.

Why processes and not threads: the per-item work (image decoding, host-side
pre/post-processing, the Python between kernels) holds the GIL, and one
model per process keeps workers from contending for it. Workers are
*spawned*, not forked: the parent may already run native thread pools
(BLAS, the compiled kernels' fork-join), which a fork would copy half-alive.

Protocol over one pipe per worker: the worker builds its function from the
factory and answers ``("ready",)`` or ``("fatal", message, is_input_error)``;
then for each item sent it answers ``("done", outcome)``. One item is in
flight per worker: items take from tens of milliseconds to seconds, so the
pipe's latency is noise, and a worker that dies takes only one item with it.

A worker that dies (killed, out of memory, a crash in native code) costs
the item it held: it is reported as that item's error, the worker is
replaced and the run goes on; after `MAX_DEATHS` deaths the run stops (the
cause is then not one bad item). Ctrl-C stops the workers (they ignore
SIGINT themselves, so the parent decides) and propagates.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from multiprocessing.connection import wait
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

from rlx.errors import RlxError

from ..outcome import Item, item_outcome

__all__ = ["run", "WorkerError", "MAX_DEATHS"]

MAX_DEATHS = 3


class WorkerError(RlxError):
    """A worker could not start (its factory failed) or workers keep dying."""


def _worker_main(conn, factory, threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process = factory(threads)
    except RlxError as e:
        conn.send(("fatal", str(e), True))
        return
    except BaseException as e:  # a bug: show its type, the parent re-raises
        import traceback

        conn.send(("fatal", f"{type(e).__name__}: {e}\n{traceback.format_exc()}", False))
        return
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        item = Item.from_dict(msg)
        try:
            outcome = item_outcome(process, item)
        except BaseException as e:
            import traceback

            conn.send(("fatal", f"{type(e).__name__} on {item.key}: {e}\n"
                                f"{traceback.format_exc()}", False))
            return
        conn.send(("done", outcome))


class _Worker:
    def __init__(self, ctx, factory, threads):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, factory, threads),
                                   daemon=True)
        self.process.start()
        child.close()
        self.item: Optional[Item] = None
        self.ready = False

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        self.conn.close()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(5.0)
        self.conn.close()


def _death_message(worker: _Worker) -> str:
    code = worker.process.exitcode
    if code is not None and code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    return f"the worker process {how} while processing this image"


def run(items: Iterable[Item], factory: Callable[[int], Callable[[Item], Dict[str, Any]]],
        workers: int = 1, threads: int = 1, **_options) -> Iterator[Dict[str, Any]]:
    """Yield one outcome per item, processed by ``workers`` spawned processes."""
    queue: List[Item] = list(items)
    queue.reverse()  # pop() from the end keeps the input order
    if not queue:
        return
    ctx = mp.get_context("spawn")
    pool = [_Worker(ctx, factory, threads) for _ in range(min(workers, len(queue)))]
    deaths = 0
    try:
        while queue or any(w.item is not None for w in pool):
            for w in pool:  # hand out work to idle, ready workers
                if w.ready and w.item is None and queue:
                    w.item = queue.pop()
                    try:
                        w.conn.send(w.item.to_dict())
                    except OSError:
                        pass  # it died: its sentinel fires below and charges the item
            waitables = {}
            for w in pool:
                waitables[w.conn] = w
                waitables[w.process.sentinel] = w
            for ready in wait(list(waitables)):
                w = waitables[ready]
                if w not in pool:
                    continue  # already replaced in this round
                msg = None
                if w.conn.poll():
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        msg = None
                if msg is not None and msg[0] == "ready":
                    w.ready = True
                elif msg is not None and msg[0] == "done":
                    w.item = None
                    yield msg[1]
                elif msg is not None and msg[0] == "fatal":
                    if msg[2]:
                        raise WorkerError(msg[1])
                    raise RuntimeError(f"worker failed: {msg[1]}")
                elif not w.process.is_alive():
                    # Died without a word: charge its item, replace it, go on.
                    item, text = w.item, _death_message(w)
                    w.kill()
                    deaths += 1
                    if not w.ready:
                        raise WorkerError(f"a worker process died while loading the model "
                                          f"({text.split(' while ')[0]})")
                    if deaths > MAX_DEATHS:
                        raise WorkerError(f"worker processes keep dying (last: {text}); "
                                          f"finished images are kept, rerun to resume")
                    pool[pool.index(w)] = _Worker(ctx, factory, threads)
                    if item is not None:
                        yield {"key": item.key, "digest": item.digest, "ok": False,
                               "error": text, "seconds": 0.0}
    except BaseException:
        for w in pool:
            w.kill()
        raise
    for w in pool:
        w.stop()
