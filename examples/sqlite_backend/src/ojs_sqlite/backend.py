"""An OJS backend on the standard library's ``sqlite3``: small, durable and atomic.

How it meets the :class:`~ojs_core.backend.Backend` contract:

* **One thread, one connection.** Every operation runs, whole, on a private single-thread
  executor that owns the connection, so the event loop never blocks on disk and operations of
  one backend never interleave.
* **Atomicity.** Every write is one ``BEGIN IMMEDIATE`` transaction: it takes SQLite's write lock
  before reading, so its read-modify-write cannot interleave with another writer - another
  connection, or another process on the same file. That is the compare-and-swap: the function
  passed in is applied to the current version exactly once; if it raises, the transaction rolls
  back and nothing is written.
* **Indexes, no scans.** The ready index is ``(queue, state, rank, ready_seq)`` with
  ``rank = -priority`` and ``ready_seq`` taken from a counter when a job becomes available (so a
  retried job queues behind those already waiting); the timer index is ``due_at`` - the job's
  :func:`~ojs_core.lifecycle.timer_deadline` in epoch milliseconds, ``NULL`` when none; the
  dead-letter listing has ``dead_seq``; unique keys map to their holder in ``unique_keys``; per
  queue and state counts are kept in ``queue_counts`` by the same transactions.
* **Durability.** WAL journal, ``synchronous=FULL`` by default (``NORMAL`` survives a process
  crash but may lose the last transactions on power loss).

Jobs are stored as the core's wire form (:func:`ojs_core.codec.job_to_wire`), so a job read back
equals the job written; the indexed columns are derived from it on every write.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from ojs_core.backend import (
    ActivateFn,
    BackendHealth,
    ConflictFn,
    EventFilter,
    JobFilter,
    JobFn,
    Page,
    UniqueConflict,
)
from ojs_core.codec import converter, job_from_dict, job_to_wire
from ojs_core.errors import BackendUnavailableError, DuplicateJobError, NotFoundError
from ojs_core.lifecycle import timer_deadline
from ojs_core.model import CronJob, Event, Job, QueueInfo, QueueStats, WorkerInfo, Workflow
from ojs_core.states import JobState
from ojs_core.timeutil import format_ts, parse_ts

__all__ = ["DUE_SQL", "READY_SQL", "SCHEMA", "SYNCHRONOUS", "SqliteBackend"]

S = JobState
T = TypeVar("T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
#: How many candidates ``activate`` may decline in one queue before a claim moves on.
_MAX_SKIPS = 256
#: The durability levels of ``PRAGMA synchronous`` a backend accepts.
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: Most ``?`` parameters in one statement (SQLite's default limit is 999 on old builds).
_CHUNK = 500

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id        TEXT PRIMARY KEY,
    queue     TEXT NOT NULL,
    state     TEXT NOT NULL,
    rank      INTEGER NOT NULL,     -- -priority, so the ready index is ascending
    ready_seq INTEGER NOT NULL,     -- when it last became available (FIFO within a rank)
    due_at    INTEGER,              -- timer_deadline in epoch ms; NULL: no timer
    dead_seq  INTEGER,              -- set while dead-lettered (listing order)
    seq       INTEGER NOT NULL,     -- insertion order (admin listing)
    body      TEXT NOT NULL         -- the job, as ojs_core.codec.job_to_wire
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, state, rank, ready_seq);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_dead ON jobs (dead_seq) WHERE dead_seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS unique_keys (key TEXT PRIMARY KEY, job_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY, paused INTEGER NOT NULL DEFAULT 0, created_at TEXT
);
CREATE TABLE IF NOT EXISTS queue_counts (
    queue TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (queue, state)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workflows (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS crons (name TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL, queue TEXT, job_id TEXT, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq) WHERE job_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('seq', 0);
"""

#: The next candidates of one queue after position ``(rank, ready_seq)``: an index range.
READY_SQL = (
    "SELECT body, rank, ready_seq, dead_seq FROM jobs "
    "WHERE queue = ? AND state = 'available' AND (rank, ready_seq) > (?, ?) "
    "ORDER BY rank, ready_seq LIMIT ?"
)
#: Jobs whose timer deadline has passed, earliest first: an index range.
DUE_SQL = "SELECT id FROM jobs WHERE due_at <= ? ORDER BY due_at LIMIT ?"

_TABLES = ("jobs", "unique_keys", "queues", "queue_counts", "workflows", "crons", "workers")


def _ms(dt: datetime | None, *, ceil: bool = False) -> int | None:
    """Epoch milliseconds of ``dt``, rounded down (or up, for deadlines)."""
    if dt is None:
        return None
    if ceil:
        return -((_EPOCH - dt) // _MS)
    return (dt - _EPOCH) // _MS


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _encode(job: Job) -> str:
    return _dumps(job_to_wire(job))


def _decode(body: str) -> Job:
    return job_from_dict(json.loads(body))


def _dead(job: Job) -> bool:
    return job.dead_letter and job.state is S.DISCARDED


def _chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _like(pattern: str) -> str:
    """``job.*`` as a LIKE pattern (``\\`` escapes SQL wildcards in the prefix)."""
    prefix = pattern[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return prefix + "%"


class SqliteBackend:
    """OJS storage in one SQLite database file (or ``:memory:``).

    The functions the core passes in (``fn``, ``activate``, ``is_conflict``) run inside the
    transaction, on the backend's thread; they are pure, so that is safe.
    """

    name = "sqlite"

    def __init__(
        self,
        path: str = ":memory:",
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 10_000,
        max_events: int = 100_000,
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}")
        self.path = path
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = busy_timeout_ms
        self.max_events = max_events
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    # -- plumbing -------------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the connection's thread."""
        if self._executor is None:
            raise BackendUnavailableError("SQLite backend is not open")
        conn = self._conn

        def call() -> T:
            if conn is None:
                raise BackendUnavailableError("SQLite backend is not open")
            try:
                return fn(conn)
            except sqlite3.OperationalError as exc:  # locked past the timeout, disk errors
                raise BackendUnavailableError(f"SQLite: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction; roll back if it raises."""

        def transaction(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._run(transaction)

    @staticmethod
    def _next_seq(conn: sqlite3.Connection, n: int = 1) -> int:
        """Reserve ``n`` sequence numbers (inside a write transaction); returns the first."""
        (value,) = conn.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()
        conn.execute("UPDATE counters SET value = ? WHERE name = 'seq'", (value + n,))
        return int(value) + 1

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the database (creating the file and schema if needed); idempotent."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ojs-sqlite")

        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.executescript(SCHEMA)
            return conn

        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        """Close the connection and its thread; idempotent. The file keeps the data."""
        executor, conn = self._executor, self._conn
        if executor is None:
            return
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        self._executor = None
        self._conn = None
        executor.shutdown(wait=True)

    async def health(self) -> BackendHealth:
        """A trivial query's round trip."""
        started = time.perf_counter()
        try:
            await self._run(lambda c: c.execute("SELECT 1").fetchone())
        except BackendUnavailableError as exc:
            return BackendHealth(ok=False, name=self.name, error=str(exc))
        return BackendHealth(
            ok=True,
            name=self.name,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            details={"path": self.path},
        )

    async def reset(self) -> None:
        """Delete every row of every table."""

        def wipe(conn: sqlite3.Connection) -> None:
            for table in (*_TABLES, "events"):
                conn.execute(f"DELETE FROM {table}")  # fixed names, not input
            conn.execute("DELETE FROM sqlite_sequence WHERE name = 'events'")
            conn.execute("UPDATE counters SET value = 0")

        await self._tx(wipe)

    # -- the one write path for jobs ------------------------------------------------------

    def _count(self, conn: sqlite3.Connection, queue: str, state: JobState, delta: int) -> None:
        conn.execute(
            "INSERT INTO queue_counts (queue, state, n) VALUES (?, ?, ?) "
            "ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n",
            (queue, state.value, delta),
        )

    def _store(
        self,
        conn: sqlite3.Connection,
        old: Job | None,
        new: Job,
        *,
        ready_seq: int = 0,
        dead_seq: int | None = None,
    ) -> None:
        """Insert or update ``new``, deriving its index columns; ``old`` is the stored version.

        ``ready_seq``/``dead_seq`` are the stored values, kept while the job stays available
        (or dead) and renewed when it becomes so.
        """
        if new.state is S.AVAILABLE and (old is None or old.state is not S.AVAILABLE):
            ready_seq = self._next_seq(conn)
        if not _dead(new):
            dead_seq = None
        elif old is None or not _dead(old):
            dead_seq = self._next_seq(conn)
        values = (
            new.queue,
            new.state.value,
            -new.priority,
            ready_seq,
            _ms(timer_deadline(new), ceil=True),
            dead_seq,
            _encode(new),
        )
        if old is None:
            conn.execute(
                "INSERT INTO jobs (queue, state, rank, ready_seq, due_at, dead_seq, body, id, seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*values, new.id, self._next_seq(conn)),
            )
        else:
            conn.execute(
                "UPDATE jobs SET queue = ?, state = ?, rank = ?, ready_seq = ?, due_at = ?, "
                "dead_seq = ?, body = ? WHERE id = ?",
                (*values, new.id),
            )
        if old is None or old.queue != new.queue or old.state is not new.state:
            if old is not None:
                self._count(conn, old.queue, old.state, -1)
            self._count(conn, new.queue, new.state, +1)
            if old is None or old.queue != new.queue:
                conn.execute(
                    "INSERT OR IGNORE INTO queues (name, paused, created_at) VALUES (?, 0, ?)",
                    (new.queue, format_ts(new.created_at) if new.created_at else None),
                )

    @staticmethod
    def _load(conn: sqlite3.Connection, job_id: str) -> tuple[Job, int, int | None] | None:
        row = conn.execute(
            "SELECT body, ready_seq, dead_seq FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            return None
        return _decode(row[0]), row[1], row[2]

    @staticmethod
    def _existing_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> list[str]:
        found: list[str] = []
        for chunk in _chunks(ids):
            rows = conn.execute(f"SELECT id FROM jobs WHERE id IN ({_marks(len(chunk))})", chunk)
            found.extend(r[0] for r in rows)
        return found

    # -- jobs -----------------------------------------------------------------------------

    async def insert_jobs(
        self, jobs: Sequence[Job], is_conflict: ConflictFn | None = None
    ) -> list[UniqueConflict]:
        """All or nothing in one transaction; see :meth:`ojs_core.backend.Backend.insert_jobs`."""
        ids = [j.id for j in jobs]
        if len(set(ids)) != len(ids):
            raise DuplicateJobError("a job id appears twice in the batch")

        def insert(conn: sqlite3.Connection) -> list[UniqueConflict]:
            taken = self._existing_ids(conn, ids)
            if taken:
                raise DuplicateJobError(
                    f"A job with id '{taken[0]}' already exists", details={"job_id": taken[0]}
                )
            conflicts: list[UniqueConflict] = []
            holders: dict[str, Job] = {}
            for i, job in enumerate(jobs):
                key = job.unique_key
                if key is None:
                    continue
                holder = holders.get(key)
                if holder is None:
                    row = conn.execute(
                        "SELECT j.body FROM unique_keys u JOIN jobs j ON j.id = u.job_id "
                        "WHERE u.key = ?",
                        (key,),
                    ).fetchone()
                    holder = _decode(row[0]) if row else None
                if holder is not None and is_conflict is not None and is_conflict(job, holder):
                    conflicts.append(UniqueConflict(index=i, existing=holder))
                holders[key] = job
            if conflicts:
                return conflicts
            for job in jobs:
                self._store(conn, None, job)
            conn.executemany(
                "INSERT OR REPLACE INTO unique_keys (key, job_id) VALUES (?, ?)",
                [(key, job.id) for key, job in holders.items()],
            )
            return []

        return await self._tx(insert)

    async def get_job(self, job_id: str) -> Job | None:
        """The current version, or ``None``."""
        rec = await self._run(lambda c: self._load(c, job_id))
        return rec[0] if rec else None

    async def get_jobs(self, job_ids: Sequence[str]) -> list[Job | None]:
        """Several jobs (one query per 500 ids), in the order asked."""
        wanted = list(dict.fromkeys(job_ids))

        def read(conn: sqlite3.Connection) -> dict[str, Job]:
            found: dict[str, Job] = {}
            for chunk in _chunks(wanted):
                rows = conn.execute(
                    f"SELECT id, body FROM jobs WHERE id IN ({_marks(len(chunk))})", chunk
                )
                found.update((r[0], _decode(r[1])) for r in rows)
            return found

        found = await self._run(read) if wanted else {}
        return [found.get(j) for j in job_ids]

    async def update_job(self, job_id: str, fn: JobFn) -> tuple[Job, Job]:
        """Apply ``fn`` to the current version inside one write transaction."""

        def update(conn: sqlite3.Connection) -> tuple[Job, Job]:
            rec = self._load(conn, job_id)
            if rec is None:
                raise NotFoundError("job", job_id)
            old, ready_seq, dead_seq = rec
            new = fn(old)
            if new is not old:
                self._store(conn, old, new, ready_seq=ready_seq, dead_seq=dead_seq)
            return old, new

        return await self._tx(update)

    async def claim_jobs(
        self, queues: Sequence[str], count: int, activate: ActivateFn
    ) -> list[Job]:
        """Walk each queue's ready index in order, in one transaction; see the protocol."""

        def claim(conn: sqlite3.Connection) -> list[Job]:
            out: list[Job] = []
            claimed = 0
            for queue in dict.fromkeys(queues):
                if claimed >= count:
                    break
                paused = conn.execute("SELECT paused FROM queues WHERE name = ?", (queue,))
                row = paused.fetchone()
                if row is not None and row[0]:
                    continue
                after: tuple[int, int] = (-(2**62), -1)
                skipped = 0
                while claimed < count and skipped < _MAX_SKIPS:
                    rows = conn.execute(READY_SQL, (queue, *after, count - claimed + 8)).fetchall()
                    if not rows:
                        break
                    for body, rank, ready_seq, dead_seq in rows:
                        after = (rank, ready_seq)
                        job = _decode(body)
                        new = activate(job)
                        if new is None:
                            skipped += 1
                            if skipped >= _MAX_SKIPS:
                                break
                            continue
                        self._store(conn, job, new, ready_seq=ready_seq, dead_seq=dead_seq)
                        out.append(new)
                        if new.state is S.ACTIVE:
                            claimed += 1
                            if claimed >= count:
                                break
            return out

        return await self._tx(claim)

    async def due_jobs(self, now: datetime, limit: int) -> list[str]:
        """Ids whose ``due_at`` has passed, earliest first (an index range, never a scan)."""
        now_ms = _ms(now)
        rows = await self._run(lambda c: c.execute(DUE_SQL, (now_ms, limit)).fetchall())
        return [r[0] for r in rows]

    async def list_jobs(self, flt: JobFilter) -> Page:
        """Dead-letter listing by its index (newest first); other listings filter by column."""
        where: list[str] = []
        args: list[Any] = []
        if flt.dead_letter is True:
            where.append("dead_seq IS NOT NULL")
            order = "dead_seq DESC"
        else:
            if flt.dead_letter is False:
                where.append("dead_seq IS NULL")
            order = "seq DESC"
        if flt.state is not None:
            where.append("state = ?")
            args.append(flt.state)
        if flt.queue is not None:
            where.append("queue = ?")
            args.append(flt.queue)
        if flt.type is not None:
            where.append("json_extract(body, '$.type') = ?")  # an example: not indexed
            args.append(flt.type)
        clause = f"WHERE {' AND '.join(where)}" if where else ""

        def listing(conn: sqlite3.Connection) -> Page:
            (total,) = conn.execute(f"SELECT count(*) FROM jobs {clause}", args).fetchone()
            rows = conn.execute(
                f"SELECT body FROM jobs {clause} ORDER BY {order} LIMIT ? OFFSET ?",
                (*args, flt.limit, flt.offset),
            ).fetchall()
            return Page(items=[_decode(r[0]) for r in rows], total=int(total))

        return await self._run(listing)

    async def delete_job(
        self, job_id: str, *, only_if: Callable[[Job], bool] | None = None
    ) -> bool:
        """Remove a job, its unique-key holding and its count (in the transaction that
        checks ``only_if``)."""

        def delete(conn: sqlite3.Connection) -> bool:
            rec = self._load(conn, job_id)
            if rec is None:
                return False
            job = rec[0]
            if only_if is not None and not only_if(job):
                return False
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            if job.unique_key is not None:
                conn.execute(
                    "DELETE FROM unique_keys WHERE key = ? AND job_id = ?",
                    (job.unique_key, job_id),
                )
            self._count(conn, job.queue, job.state, -1)
            return True

        return await self._tx(delete)

    # -- queues ---------------------------------------------------------------------------

    async def list_queues(self) -> list[QueueInfo]:
        """Queues in name order, ``default`` always among them."""
        rows = await self._run(
            lambda c: c.execute("SELECT name, paused, created_at FROM queues").fetchall()
        )
        out = {"default": QueueInfo(name="default")}
        for name, paused, created_at in rows:
            out[name] = QueueInfo(
                name=name,
                paused=bool(paused),
                created_at=parse_ts(created_at) if created_at else None,
            )
        return [out[k] for k in sorted(out)]

    async def set_queue_paused(self, queue: str, paused: bool) -> QueueInfo:
        """Upsert the queue's flag."""

        def flip(conn: sqlite3.Connection) -> QueueInfo:
            conn.execute(
                "INSERT INTO queues (name, paused) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
                (queue, int(paused)),
            )
            (created_at,) = conn.execute(
                "SELECT created_at FROM queues WHERE name = ?", (queue,)
            ).fetchone()
            return QueueInfo(
                name=queue,
                paused=paused,
                created_at=parse_ts(created_at) if created_at else None,
            )

        return await self._tx(flip)

    async def queue_stats(self, queue: str) -> QueueStats:
        """Counts kept by the write transactions: one primary-key range read."""

        def stats(conn: sqlite3.Connection) -> QueueStats:
            counts = dict.fromkeys(S, 0)
            for state, n in conn.execute(
                "SELECT state, n FROM queue_counts WHERE queue = ?", (queue,)
            ):
                counts[S(state)] = max(int(n), 0)
            row = conn.execute("SELECT paused FROM queues WHERE name = ?", (queue,)).fetchone()
            return QueueStats(name=queue, paused=bool(row and row[0]), counts=counts)

        return await self._run(stats)

    # -- workflows ------------------------------------------------------------------------

    async def insert_workflow(self, workflow: Workflow, jobs: Sequence[Job]) -> None:
        """The record and every job in one transaction."""

        def insert(conn: sqlite3.Connection) -> None:
            taken = self._existing_ids(conn, [j.id for j in jobs])
            if taken:
                raise DuplicateJobError(f"A job with id '{taken[0]}' already exists")
            try:
                conn.execute(
                    "INSERT INTO workflows (id, body) VALUES (?, ?)",
                    (workflow.id, _dumps(converter.unstructure(workflow))),
                )
            except sqlite3.IntegrityError:
                raise DuplicateJobError(f"workflow '{workflow.id}' exists") from None
            for job in jobs:
                self._store(conn, None, job)

        await self._tx(insert)

    async def delete_workflow(self, workflow_id: str) -> bool:
        """Forget a workflow record."""
        return await self._tx(
            lambda c: c.execute("DELETE FROM workflows WHERE id = ?", (workflow_id,)).rowcount > 0
        )

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        """The record, or ``None``."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT body FROM workflows WHERE id = ?", (workflow_id,)
            ).fetchone()
        )
        return converter.structure(json.loads(row[0]), Workflow) if row else None

    async def update_workflow(
        self, workflow_id: str, fn: Callable[[Workflow], Workflow]
    ) -> tuple[Workflow, Workflow]:
        """Apply ``fn`` inside one write transaction."""

        def update(conn: sqlite3.Connection) -> tuple[Workflow, Workflow]:
            row = conn.execute("SELECT body FROM workflows WHERE id = ?", (workflow_id,))
            got = row.fetchone()
            if got is None:
                raise NotFoundError("workflow", workflow_id)
            old = converter.structure(json.loads(got[0]), Workflow)
            new = fn(old)
            if new is not old:
                conn.execute(
                    "UPDATE workflows SET body = ? WHERE id = ?",
                    (_dumps(converter.unstructure(new)), workflow_id),
                )
            return old, new

        return await self._tx(update)

    # -- cron -----------------------------------------------------------------------------

    @staticmethod
    def _cron(body: str) -> CronJob:
        return converter.structure(json.loads(body), CronJob)

    async def put_cron(self, cron: CronJob) -> bool:
        """Upsert; ``True`` if the name was new."""

        def put(conn: sqlite3.Connection) -> bool:
            existed = conn.execute("SELECT 1 FROM crons WHERE name = ?", (cron.name,)).fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO crons (name, body) VALUES (?, ?)",
                (cron.name, _dumps(converter.unstructure(cron))),
            )
            return existed is None

        return await self._tx(put)

    async def get_cron(self, name: str) -> CronJob | None:
        """The entry, or ``None``."""
        row = await self._run(
            lambda c: c.execute("SELECT body FROM crons WHERE name = ?", (name,)).fetchone()
        )
        return self._cron(row[0]) if row else None

    async def list_crons(self) -> list[CronJob]:
        """Every entry, by name."""
        rows = await self._run(
            lambda c: c.execute("SELECT body FROM crons ORDER BY name").fetchall()
        )
        return [self._cron(r[0]) for r in rows]

    async def delete_cron(self, name: str) -> CronJob | None:
        """Remove and return an entry."""

        def delete(conn: sqlite3.Connection) -> CronJob | None:
            row = conn.execute("SELECT body FROM crons WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM crons WHERE name = ?", (name,))
            return self._cron(row[0])

        return await self._tx(delete)

    async def update_cron(
        self, name: str, fn: Callable[[CronJob], CronJob]
    ) -> tuple[CronJob, CronJob]:
        """Apply ``fn`` inside one write transaction: concurrent ticks serialise here."""

        def update(conn: sqlite3.Connection) -> tuple[CronJob, CronJob]:
            row = conn.execute("SELECT body FROM crons WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFoundError("cron job", name)
            old = self._cron(row[0])
            new = fn(old)
            if new is not old:
                conn.execute(
                    "UPDATE crons SET body = ? WHERE name = ?",
                    (_dumps(converter.unstructure(new)), name),
                )
            return old, new

        return await self._tx(update)

    # -- workers and events ---------------------------------------------------------------

    @staticmethod
    def _worker(body: str) -> WorkerInfo:
        return converter.structure(json.loads(body), WorkerInfo)

    async def upsert_worker(self, fn: Callable[[WorkerInfo | None], WorkerInfo]) -> WorkerInfo:
        """Create the record from ``fn(None)`` or update it from ``fn(current)``."""
        probe = fn(None)

        def upsert(conn: sqlite3.Connection) -> WorkerInfo:
            row = conn.execute(
                "SELECT body FROM workers WHERE id = ?", (probe.worker_id,)
            ).fetchone()
            info = probe if row is None else fn(self._worker(row[0]))
            conn.execute(
                "INSERT OR REPLACE INTO workers (id, body) VALUES (?, ?)",
                (info.worker_id, _dumps(converter.unstructure(info))),
            )
            return info

        return await self._tx(upsert)

    async def get_worker(self, worker_id: str) -> WorkerInfo | None:
        """The record, or ``None``."""
        row = await self._run(
            lambda c: c.execute("SELECT body FROM workers WHERE id = ?", (worker_id,)).fetchone()
        )
        return self._worker(row[0]) if row else None

    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker seen."""
        rows = await self._run(lambda c: c.execute("SELECT body FROM workers").fetchall())
        return [self._worker(r[0]) for r in rows]

    async def delete_worker(self, worker_id: str) -> bool:
        """Forget a worker record."""
        return await self._tx(
            lambda c: c.execute("DELETE FROM workers WHERE id = ?", (worker_id,)).rowcount > 0
        )

    async def publish_events(self, events: Sequence[Event]) -> None:
        """Append in one transaction; the log keeps the newest ``max_events``."""
        if not events:
            return
        rows = [
            (
                e.type,
                e.data.get("queue") if isinstance(e.data.get("queue"), str) else None,
                e.data.get("job_id") if isinstance(e.data.get("job_id"), str) else None,
                _dumps(
                    {
                        "id": e.id,
                        "type": e.type,
                        "time": format_ts(e.time),
                        "subject": e.subject,
                        "source": e.source,
                        "data": e.data,
                    }
                ),
            )
            for e in events
        ]

        def append(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO events (type, queue, job_id, body) VALUES (?, ?, ?, ?)", rows
            )
            (last,) = conn.execute("SELECT max(seq) FROM events").fetchone()
            conn.execute("DELETE FROM events WHERE seq <= ?", (last - self.max_events,))

        await self._tx(append)

    async def read_events(self, flt: EventFilter) -> list[Event]:
        """Events after ``flt.after`` matching the filter, oldest first."""
        where = ["seq > ?"]
        args: list[Any] = [flt.after]
        if flt.types:
            alternatives = []
            for pattern in flt.types:
                if pattern.endswith("*"):
                    alternatives.append("type LIKE ? ESCAPE '\\'")
                    args.append(_like(pattern))
                else:
                    alternatives.append("type = ?")
                    args.append(pattern)
            where.append(f"({' OR '.join(alternatives)})")
        if flt.queues:
            where.append(f"queue IN ({_marks(len(flt.queues))})")
            args.extend(flt.queues)
        if flt.job_id is not None:
            where.append("job_id = ?")
            args.append(flt.job_id)
        sql = f"SELECT seq, body FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        rows = await self._run(lambda c: c.execute(sql, (*args, flt.limit)).fetchall())
        out: list[Event] = []
        for seq, body in rows:
            raw = json.loads(body)
            out.append(
                Event(
                    id=raw["id"],
                    type=raw["type"],
                    time=parse_ts(raw["time"]),
                    subject=raw.get("subject"),
                    data=raw.get("data") or {},
                    source=raw.get("source", "ojs://ojs-python"),
                    seq=int(seq),
                )
            )
        return out
