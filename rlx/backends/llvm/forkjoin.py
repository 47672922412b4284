"""Native fork-join for llvm kernels: hand a task range to a waiting worker in ~1 us.

Waking a sleeping pool thread (``ThreadPoolExecutor``: a futex wake, then the
scheduler, then the GIL) costs about 100 us on these machines, as much as a
whole small kernel: SAM's prompt graph makes ~50 parallel kernel calls per
click, so the hand-offs alone were ~5 ms of a ~16 ms click.

Here each worker thread, between kernels, waits *in native code* (a ctypes
call, so without the GIL) by spinning on its slot for a short while
(`SPIN_US`); the caller posts a task by writing the kernel's address, task
range and argument array into the slot and bumping its sequence number, runs
its own share, then spins (natively, GIL released) until the worker marks
the slot done. A worker that spun out of budget goes to sleep on a Python
event; posting sees the slot's ``sleeping`` flag and sets the event, so the
slow path is the old one, never a lost wake-up (both sides use sequentially
consistent atomics: the worker sets ``sleeping`` and re-checks the sequence,
the poster bumps the sequence and then reads ``sleeping``).

The calls run the kernels' own entry points, ``f(lo, hi, p0, ..., pn-1)``,
through one trampoline per argument count (up to `MAX_ARGS` pointers). One
caller at a time owns the workers; a concurrent caller (another Python thread
running another plan) falls back to the thread pool in
`rlx.backends.common.threads`.

A share is *claimed* by the worker before it runs it; when the caller has
finished its own share and the worker has not yet claimed its one (it is asleep
and not woken yet, or another process has its core), the caller takes that share
back and runs it itself instead of waiting for the scheduler. A worker is kept
off the core its caller runs on (`ForkJoin._keep_off`), and a caller whose
worker is late yields its core between checks. On 2 cores with one busy process
beside a 2-thread plan these took it from 1.8x to ~1.05x the single-threaded
time (`benchmarks/bench_contention.py`).

Slot layout (i64 fields): seq, done, fn, nargs, lo, hi, args, sleeping, park, claim.
Between plan calls the workers are parked (`park`): they stop spinning at once,
so a caller's own threads (host post-processing) get the cores.
"""

from __future__ import annotations

import ctypes
import os
import threading

import numpy as np
from llvmlite import ir

from rlx.backends.llvm import irutil as U

#: how long a worker keeps spinning for the next task before it sleeps (microseconds):
#: longer than the Python gap between two kernels of a plan, short enough that an idle
#: process stops burning a core almost at once
SPIN_US = 1000
#: how long a caller spins for a worker to finish its share before it yields its core
#: between checks (microseconds): shares end within a few microseconds of each other
#: unless the worker lost its core to another process
JOIN_SPIN_US = 50
#: most pointer arguments a kernel may take and still use the native hand-off
MAX_ARGS = 24
#: pointer arrays kept for reuse (a plan's kernels; cleared when full)
ARGS_KEPT = 4096
#: park the workers when a plan call ends (see `park`)
PARK_AFTER_PLAN = True
SEQ, DONE, FN, NARGS, LO, HI, ARGS, SLEEPING, PARK, CLAIM = range(10)
#: i64 fields per slot (two cache lines: a worker's slot shares no line with another's)
SLOT = 16
OP_WAIT, OP_JOIN, OP_POST, OP_RECLAIM = 0, 1, 2, 3


def runtime_ir(triple: str) -> str:
    """IR of the one exported function ``i64 rlx_kernel(op, slot, a, b, c, d, e)``:

    * OP_WAIT (worker): wait for a sequence number other than `a` (spin for `b` cycles,
      then set ``sleeping`` and check once more); claim the task (``claim``: its sequence
      number -> its negation), run it, mark it done and wait again for the next one, each
      wait with a fresh spin budget; a task the caller took back is skipped. Returns the
      last sequence number seen when none came in time or the slot is parked (it is then
      ``sleeping``);
    * OP_JOIN (caller): spin until the slot's ``done`` equals `a` (return 1) or for at most
      `b` cycles (return 0: the caller yields its core and asks again);
    * OP_POST (caller): store fn=`a`, nargs=`b`, lo=`c`, hi=`d`, args=`e`, open the task
      for claiming (``claim`` = the new sequence number) and bump the sequence number;
      return the new one, negated if the worker was sleeping;
    * OP_RECLAIM (caller): take task `a` back if the worker has not claimed it
      (``claim``: `a` -> 0); 1 if taken back (the caller runs it), 0 if the worker has it.
    """
    m = U.new_module("rlx_forkjoin")
    m.triple = triple
    x86 = triple.startswith(("x86_64", "amd64", "i686"))
    fn = ir.Function(m, ir.FunctionType(U.I64, [U.I64, U.PTR] + [U.I64] * 5), U.ENTRY)
    fn.attributes.add("nounwind")
    op, slot, a, bb, c, d, e = fn.args
    cycles = U.intrinsic(m, "llvm.readcyclecounter", U.I64, [])
    pause = U.intrinsic(m, "llvm.x86.sse2.pause", U.VOID, []) if x86 else None

    def field(b, i):
        return b.gep(slot, [U.i64(i)], inbounds=True, source_etype=U.I64)

    def aload(b, i, order="acquire"):
        return b.load_atomic(field(b, i), order, 8, typ=U.I64)

    def astore(b, v, i, order="release"):
        # an atomic exchange: llvmlite's store_atomic needs typed pointers
        b.atomic_rmw("xchg", field(b, i), v, order)

    def relax(b):
        if pause is not None:
            b.call(pause, [])

    tramp = _trampoline(m)
    entry = fn.append_basic_block("entry")
    b = ir.IRBuilder(entry)
    wait_bb, join_bb, post_bb, reclaim_bb, bad_bb = (
        fn.append_basic_block(n) for n in ("wait", "join", "post", "reclaim", "bad"))
    sw = b.switch(op, bad_bb)
    sw.add_case(U.i64(OP_WAIT), wait_bb)
    sw.add_case(U.i64(OP_JOIN), join_bb)
    sw.add_case(U.i64(OP_POST), post_bb)
    sw.add_case(U.i64(OP_RECLAIM), reclaim_bb)
    b.position_at_end(bad_bb)
    b.ret(U.i64(-1))

    # ---- worker: spin, then announce sleep and re-check, run; repeat ------------------
    # After a task the worker goes straight back to spinning *here*: returning to its
    # Python loop would need the GIL, which the caller holds between kernels, so every
    # hand-off would wait for a GIL switch (tens of microseconds).
    loop = fn.append_basic_block("wait.loop")
    spin = fn.append_basic_block("wait.spin")
    spin_more = fn.append_basic_block("wait.more")
    give_up = fn.append_basic_block("wait.sleep")
    run = fn.append_basic_block("wait.run")
    work = fn.append_basic_block("wait.work")
    idle = fn.append_basic_block("wait.idle")
    b.position_at_end(wait_bb)
    b.branch(loop)
    b.position_at_end(loop)
    last = b.phi(U.I64)
    last.add_incoming(a, wait_bb)
    astore(b, U.i64(0), SLEEPING, "seq_cst")
    t0 = b.call(cycles, [])
    b.branch(spin)
    b.position_at_end(spin)
    s1 = aload(b, SEQ)
    b.cbranch(b.icmp_signed("!=", s1, last), run, spin_more)
    b.position_at_end(spin_more)
    relax(b)
    spent = b.sub(b.call(cycles, []), t0)
    parked = b.icmp_signed("!=", aload(b, PARK, "monotonic"), U.i64(0))
    b.cbranch(b.or_(b.icmp_unsigned(">", spent, bb), parked), give_up, spin)
    b.position_at_end(give_up)
    astore(b, U.i64(1), SLEEPING, "seq_cst")
    s2 = aload(b, SEQ, "seq_cst")
    b.cbranch(b.icmp_signed("!=", s2, last), run, idle)
    b.position_at_end(idle)
    b.ret(last)
    b.position_at_end(run)
    seq = b.phi(U.I64)
    seq.add_incoming(s1, spin)
    seq.add_incoming(s2, give_up)
    astore(b, U.i64(0), SLEEPING, "seq_cst")
    # claim it, unless the caller has taken it back (then it is the caller's to run and to
    # wait for: nothing to do here); a claim for an older sequence number fails too
    got = b.cmpxchg(field(b, CLAIM), seq, b.neg(seq), "seq_cst", "seq_cst")
    b.cbranch(b.extract_value(got, 1), work, loop)
    last.add_incoming(seq, run)
    b.position_at_end(work)
    b.call(tramp, [b.load(field(b, FN), typ=U.I64), b.load(field(b, NARGS), typ=U.I64),
                   b.load(field(b, LO), typ=U.I64), b.load(field(b, HI), typ=U.I64),
                   b.load(field(b, ARGS), typ=U.I64)])
    astore(b, seq, DONE)
    last.add_incoming(seq, work)
    b.branch(loop)

    # ---- caller: wait until done ---------------------------------------------------------
    b.position_at_end(join_bb)
    jspin = fn.append_basic_block("join.spin")
    jmore = fn.append_basic_block("join.more")
    jdone = fn.append_basic_block("join.done")
    jlate = fn.append_basic_block("join.late")
    j0 = b.call(cycles, [])
    b.branch(jspin)
    b.position_at_end(jspin)
    b.cbranch(b.icmp_signed("==", aload(b, DONE), a), jdone, jmore)
    b.position_at_end(jmore)
    relax(b)
    b.cbranch(b.icmp_unsigned(">", b.sub(b.call(cycles, []), j0), bb), jlate, jspin)
    b.position_at_end(jlate)
    b.ret(U.i64(0))
    b.position_at_end(jdone)
    b.ret(U.i64(1))

    # ---- caller: post a task -------------------------------------------------------------
    b.position_at_end(post_bb)
    for i, v in ((FN, a), (NARGS, bb), (LO, c), (HI, d), (ARGS, e)):
        b.store(v, field(b, i))
    new = b.add(b.load(field(b, SEQ), typ=U.I64), U.i64(1))
    astore(b, new, CLAIM, "seq_cst")
    astore(b, new, SEQ, "seq_cst")
    asleep = aload(b, SLEEPING, "seq_cst")
    b.ret(b.select(b.icmp_signed("!=", asleep, U.i64(0)), b.neg(new), new))

    # ---- caller: take a task back that no worker has started ------------------------------
    b.position_at_end(reclaim_bb)
    back = b.cmpxchg(field(b, CLAIM), a, U.i64(0), "seq_cst", "seq_cst")
    b.ret(b.zext(b.extract_value(back, 1), U.I64))
    return str(m)


class _FunctionPointer(ir.CastInstr):
    """An `inttoptr` result that llvmlite may call: it carries the function type."""

    @property
    def function_type(self):
        return self.fnty


def _trampoline(m: ir.Module) -> ir.Function:
    """void call(i64 fn, i64 nargs, i64 lo, i64 hi, i64 args): fn(lo, hi, args[0..nargs))."""
    t = U.internal_function(m, "rlx_call", U.VOID, [U.I64] * 5)
    fn_addr, nargs, lo, hi, args_addr = t.args
    b = ir.IRBuilder(t.append_basic_block("entry"))
    args = b.inttoptr(args_addr, U.PTR)
    done = t.append_basic_block("done")
    sw = b.switch(nargs, done)
    for n in range(MAX_ARGS + 1):
        blk = t.append_basic_block(f"n{n}")
        sw.add_case(U.i64(n), blk)
        b.position_at_end(blk)
        ptrs = [b.inttoptr(b.load(b.gep(args, [U.i64(i)], source_etype=U.I64), typ=U.I64),
                           U.PTR) for i in range(n)]
        callee = b.inttoptr(fn_addr, U.PTR)
        # an indirect call through an opaque pointer: llvmlite reads the callee's type from
        # `function_type`, which a cast value lacks (the IR is a plain `call void %p(...)`)
        callee.__class__ = _FunctionPointer
        callee.fnty = ir.FunctionType(U.VOID, [U.I64, U.I64] + [U.PTR] * n)
        b.call(callee, [lo, hi] + ptrs)
        b.branch(done)
    b.position_at_end(done)
    b.ret_void()
    return t


class ForkJoin:
    """`workers` native-waiting threads; `run(...)` splits a task range over them and the
    calling thread. Not re-entrant: `try_run` returns False when another call owns it."""

    def __init__(self, workers: int):
        from rlx.backends.llvm import jit
        from rlx.backends.llvm.target import target_for

        target = target_for("cpu")
        self._loaded = jit.load(runtime_ir(target.triple), target, _store, {})
        proto = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                 *([ctypes.c_int64] * 5))
        self._call = proto(self._loaded.address)
        per_us = _cycles_per_us()
        self.spin_cycles = per_us * SPIN_US
        self.join_cycles = per_us * JOIN_SPIN_US
        self._slots = np.zeros((max(workers, 0), SLOT), dtype=np.int64)  # one row per worker
        self._seq = [0] * workers
        self._events = [threading.Event() for _ in range(workers)]
        #: the workers' kernel thread ids, the cores this process may use, and the core the
        #: workers were last kept off (`_keep_off`)
        self._tids: list = [None] * workers
        self._cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
        self._kept_off = None
        self._owner = threading.Lock()
        self.workers = workers
        self._slot_addr = [self._slot(k) for k in range(workers)]
        #: pointer tuple -> (its int64 array, kept alive here; the array's address)
        self._args: dict[tuple, tuple[np.ndarray, int]] = {}
        self._bounds: dict[tuple[int, int], list[int]] = {}
        for k in range(workers):
            t = threading.Thread(target=self._worker, args=(k,), daemon=True,
                                 name=f"rlx-forkjoin-{k}")
            t.start()

    def wake(self) -> None:
        """Workers may spin again; the sleeping ones are woken (away from this thread's
        core, see `_keep_off`)."""
        self._slots[:, PARK] = 0
        self._keep_off()
        for k, event in enumerate(self._events):
            if self._slots[k, SLEEPING]:
                event.set()

    def _keep_off(self) -> None:
        """Let the workers run anywhere but the calling thread's current core. Linux wakes
        a thread on its waker's core when it can: a worker woken there shares that core
        with the caller until the load balancer moves it (ms later), and a short plan
        call then takes ~2x as long (SAM 3 neck's 0.5x branch: 11-13 or 20-27 ms). A
        worker kept off stays off only while the caller stays put; a share it cannot
        start (its cores busy) is taken back by the caller."""
        cpu = _current_cpu()
        if cpu is None or cpu == self._kept_off or len(self._cpus) < 2:
            return
        others = self._cpus - {cpu}
        for tid in self._tids:
            if tid is None:  # not started yet: the next call tries again
                return
            try:
                os.sched_setaffinity(tid, others)
            except OSError:  # the thread is gone, or affinity is not ours to set
                return
        self._kept_off = cpu

    def park(self) -> None:
        """Workers stop spinning now and sleep (a plan call ended: the cores are for
        whatever the caller does next, e.g. host post-processing on the thread pool)."""
        self._slots[:, PARK] = 1

    def _slot(self, k: int) -> int:
        return self._slots.__array_interface__["data"][0] + 8 * SLOT * k

    def _worker(self, k: int) -> None:
        self._tids[k] = threading.get_native_id()
        last = 0
        slot, event, call = self._slot(k), self._events[k], self._call
        while True:
            # returns only when it has announced that it sleeps (tasks run inside)
            last = call(OP_WAIT, slot, last, self.spin_cycles, 0, 0, 0)
            event.wait()
            event.clear()

    def try_run(self, fn_address: int, fn, n_tasks: int, ptrs: tuple, parts: int) -> bool:
        """fn(lo, hi, *ptrs) over [0, n_tasks) in `parts` pieces; False (nothing run) if
        another thread is using the workers or the call does not fit a trampoline."""
        parts = min(parts, self.workers + 1, n_tasks)
        if parts < 2 or len(ptrs) > MAX_ARGS or not self._owner.acquire(blocking=False):
            return False
        try:
            # A plan calls its kernels on the same buffers every time: the pointer array
            # and the task bounds of a call are kept, not rebuilt (a few us per kernel).
            kept = self._args.get(ptrs)
            if kept is None:
                if len(self._args) >= ARGS_KEPT:
                    self._args.clear()
                args = np.array([p or 0 for p in ptrs] or [0], dtype=np.int64)
                kept = self._args[ptrs] = (args, args.__array_interface__["data"][0])
            args_addr = kept[1]
            bounds = self._bounds.get((n_tasks, parts))
            if bounds is None:
                bounds = self._bounds[(n_tasks, parts)] = [n_tasks * i // parts
                                                          for i in range(parts + 1)]
            call, slots, seqs = self._call, self._slot_addr, self._seq
            for k in range(parts - 1):
                new = call(OP_POST, slots[k], fn_address, len(ptrs), bounds[k + 1],
                           bounds[k + 2], args_addr)
                if new < 0:
                    new = -new
                    self._events[k].set()
                seqs[k] = new
            try:
                fn(bounds[0], bounds[1], *ptrs)
            finally:
                # a worker that has not started its share by now (asleep, or its core taken
                # by another process) is not waited for: its share is taken back and run here
                for k in range(parts - 1):
                    if call(OP_RECLAIM, slots[k], seqs[k], 0, 0, 0, 0):
                        fn(bounds[k + 1], bounds[k + 2], *ptrs)
                        continue
                    # the worker has it: spin briefly, then give the core away between
                    # checks (a worker that shares its core with another process runs
                    # sooner when this thread does not spin on the other one)
                    while not call(OP_JOIN, slots[k], seqs[k], self.join_cycles, 0, 0, 0):
                        os.sched_yield()
            return True
        finally:
            self._owner.release()


def _current_cpu():
    """The core the calling thread runs on (glibc's sched_getcpu), or None."""
    global _getcpu
    if _getcpu is None:
        try:
            fn = ctypes.CDLL(None).sched_getcpu
            fn.restype = ctypes.c_int
            fn.argtypes = []
            _getcpu = fn
        except (OSError, AttributeError):
            _getcpu = False
    if not _getcpu:
        return None
    cpu = _getcpu()
    return cpu if cpu >= 0 else None


_getcpu = None


def _cycles_per_us() -> int:
    """Cycle-counter ticks per microsecond (x86: the constant-rate TSC), measured once."""
    import time

    from rlx.backends.llvm import jit
    from rlx.backends.llvm.target import target_for

    m = U.new_module("rlx_cycles")
    target = target_for("cpu")
    m.triple = target.triple
    f = ir.Function(m, ir.FunctionType(U.I64, []), U.ENTRY)
    b = ir.IRBuilder(f.append_basic_block("entry"))
    b.ret(b.call(U.intrinsic(m, "llvm.readcyclecounter", U.I64, []), []))
    read = ctypes.CFUNCTYPE(ctypes.c_int64)(jit.load(str(m), target, _store, {}).address)
    t0, c0 = time.perf_counter(), read()
    time.sleep(0.002)
    t1, c1 = time.perf_counter(), read()
    per_us = (c1 - c0) / max((t1 - t0) * 1e6, 1e-9)
    return int(per_us) if per_us >= 1 else 1000  # no cycle counter: assume ~1 GHz


_lock = threading.Lock()
_instance: ForkJoin | None = None
#: the kernel store of the first compile in this process (`use_store`): the fork-join
#: runtime's object is kept there like a kernel's, so a new process links it instead of
#: running LLVM's optimizer and code generator on it (~0.2 s) at its first parallel kernel
_store = None


def use_store(cache) -> None:
    """Compile the runtime through `cache` (the backend calls this; the first store wins)."""
    global _store
    if cache is not None and _store is None:
        _store = cache


def _forget_after_fork() -> None:
    """A forked child has the slots but none of the worker threads: start afresh there."""
    global _instance, _lock
    _instance = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def wake() -> None:
    """Wake the workers that went to sleep (a plan call is about to start)."""
    fj = _instance
    if fj is not None:
        fj.wake()


def park() -> None:
    """Send the spinning workers to sleep (a plan call has ended)."""
    fj = _instance
    if fj is not None and PARK_AFTER_PLAN:
        fj.park()


def get(threads: int) -> ForkJoin | None:
    """The process's fork-join with at least `threads - 1` workers (None for one thread)."""
    global _instance
    if threads < 2:
        return None
    with _lock:
        if _instance is None or _instance.workers < threads - 1:
            # an older, smaller instance's workers just sleep on their events for good
            _instance = ForkJoin(threads - 1)
        return _instance
