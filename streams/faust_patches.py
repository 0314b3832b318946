"""Every change tokenmeter makes to Faust's (and aiokafka's) behaviour, in one place, for the exact versions it was
written against. `apply(app)` refuses to run (`FaustPatchError`, a clear message, the worker does not start) when
faust-streaming, mode-streaming or aiokafka is not the pinned version, or when an attribute a patch replaces or
reads is missing: a silently inactive patch would mean silently lost records.

Why each patch exists (the record losses were reproduced with two workers joining one group, and once with one
worker restarting; tests/streams/test_worker_rewind.py):

1. Fetch wait. Faust hard-codes `fetch_max_wait_ms=1500` in `AIOKafkaConsumerThread._create_worker_consumer`. The
   embedded broker answers a waiting fetch only when that wait ends, not when data arrives (~380 ms per hop at
   1500, ~15 ms at 100), and a budget alert crosses three consumer hops. The patch sets the app's
   `Settings.fetch_max_wait_ms` (100 ms by default; `patch_app`) on the consumer Faust builds, before it starts.
2. Rewind of never-committed partitions. When flow stops (rebalance, recovery) Faust drops what it had fetched
   and seeks every partition back to its committed offset; aiokafka's `seek_to_committed` skips partitions whose
   committed offset is None or 0, so the first records of a partition the group never committed were lost (a
   new team's first events, a budget's first spend). The patch rewinds such stream partitions (acks enabled; not
   table changelogs) to their beginning, which is what auto_offset_reset=earliest means.
3. Seek back on flow resume. Recovery seeks the stream partitions, then `flow_control.resume()` clears every
   agent queue: records delivered in between were dropped while Faust's read offset had moved past them, and
   later committed past as a gap. The patch notes the lowest queued offset of each still-assigned stream
   partition before the queues are cleared and seeks back there afterwards.
4. Leave the group on stop in generation 0 too. The embedded broker (tansu) numbers a group's first generation 0
   (Kafka starts at 1), and aiokafka's `_maybe_leave_group` sends LeaveGroup only above 0: the first worker of a
   group stayed in it as a ghost for a session timeout after it had exited, the next worker's join waited for it
   (10 s session: ready after 20.6 s instead of ~8 s), and the ghost's expiry could revoke the partitions of a
   worker that was just ready (tests/streams/test_worker_leaves_group.py). Unchanged on Kafka (no generation 0).
5. No fixed second before the consumer subscribes. Faust's TableManager sleeps 1 s at start (for tables declared
   while agents start); the worker declares none, so without tables it does not wait: every start of a worker
   (every test that starts one, every restart by `tokenmeter up`) was 1 s longer. mode's 1 s after every service
   has stopped (`Worker._sentinel_task`) stays: a worker that exited 0.1 s after its LeaveGroup, while the group
   rebalanced for another member's leave, left the embedded broker's group stuck (the next worker joined and
   re-joined every ~6 s, never assigned; /tmp/suite4/twostop1.py, docs/rounds/testing.md suite4).
6. Idle connections to the worker API are closed after IDLE_TIMEOUT_S. Faust's web driver builds its aiohttp
   AppRunner with the keep-alive default, 3630 s, which is also how long aiohttp waits for a request head: a
   client sending half a head, or nothing, held the connection for an hour (hostile24). `patch_app` replaces the
   runner (not yet set up) with one whose keepalive_timeout is IDLE_TIMEOUT_S.
7. No venusian markers. Every `app.agent`, `app.task`, `app.page`, `app.timer` and `app.service` decorator calls
   `faust.utils.venusian.attach`, which reads its caller's frame with `inspect`; the first call walks every loaded
   module's file path (~1,100 `realpath`s): ~0.04 CPU-s of every worker start (docs/rounds/testing.md suite26).
   The markers are read only by autodiscovery's scan, whose callback (`faust.utils.venusian._on_found`) does
   nothing, and the worker disables autodiscovery: `attach` becomes a no-op (checked: the module and its `attach`
   exist).

Upstream: faust-streaming issue #596 "A race condition in recovery causes unrecoverable gaps in acked offsets and
consequently blocks committing" (open; the clearing of queues on resume, patch 3); #216 "Recovery without tables
resumes from kafka before seeking to committed offsets" with its fix #217, and #221 "Prefetched events cause out
of order issue after rebalance" (fix #223): the older rebalance races of the same family. streams/gaps.py is the
safety net behind all three: any offset jump in what an agent receives is re-read from the broker.

No private Faust stream API is used any more: the live table `spend_by_scope_hour`, written through
`Stream._set_current_event`, was read by nothing and is gone (the warehouse serves per-scope spend).

To upgrade one of the three packages: re-read the patched code (the names in `PATCHED_ATTRIBUTES`), re-run
tests/streams/test_worker_rewind.py and the two-worker budget test, then update `WRITTEN_FOR` and the pins in
pyproject.toml together.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from streams.gaps import SEEK_POSITIONS
from tokenmeter.settings import Settings, SettingsError, fetch_wait

log = logging.getLogger("tokenmeter.worker")

FETCH_WAIT_ATTRIBUTE = "_tokenmeter_fetch_max_wait_ms"  # set on the Faust app by patch_app, read by patch 1
WRITTEN_FOR = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}

# (module, class, attribute) each patch replaces or reads; checked before anything is patched. The ones a patch
# replaces must be defined by that very class (not inherited: patching an abstract base method would be void).
REPLACED_ATTRIBUTES = [
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_create_worker_consumer"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "seek_to_committed"),
    ("mode.utils.queues", "FlowControlEvent", "resume"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator", "_maybe_leave_group"),
    ("faust.tables.manager", "TableManager", "on_start"),
]
PATCHED_ATTRIBUTES = REPLACED_ATTRIBUTES + [
    ("faust.web.drivers.aiohttp", "Web", "_runner"),  # patch 6: an instance attribute, replaced per app
    ("faust.web.drivers.aiohttp", "Web", "web_app"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_ensure_consumer"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "call_thread"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "seek"),
    ("faust.transport.consumer", "Consumer", "_read_offset"),
    ("mode.utils.queues", "FlowControlEvent", "_queues"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer", "seek_to_beginning"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer", "position"),
    # read by request_rejoin_if_topics_exist (below) to leave and re-join a group whose assignment gave it no
    # source partition (streams/assignment_guard.py decides when)
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer", "_client"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer", "_coordinator"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator", "_send_req"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator", "reset_generation"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator", "member_id"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator", "generation"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator", "_group_instance_id"),
    ("faust.tables.manager", "TableManager", "_update_channels"),
    ("faust.tables.manager", "TableManager", "recovery"),
    # read by streams/batch_take.take_batches, which follows Stream.take_events with the same internals
    ("faust.streams", "Stream", "take_events"),
    ("faust.streams", "Stream", "add_processor"),
    ("faust.streams", "Stream", "_enable_passive"),
    ("faust.streams", "Stream", "_processors"),
    ("faust.streams", "Stream", "current_event"),
    ("faust.streams", "Stream", "enable_acks"),
]


# (module, attribute) at module level a patch replaces (patch 7).
REPLACED_MODULE_ATTRIBUTES = [("faust.utils.venusian", "attach"), ("faust.app.base", "venusian")]


class FaustPatchError(SettingsError):
    """The installed Faust stack is not the one the worker's patches were written for."""


def _installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _has_attribute(module_name: str, class_name: str, attribute: str, own: bool = False) -> bool:
    import importlib

    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return False
    if own:
        return attribute in vars(cls)
    if hasattr(cls, attribute):
        return True
    # instance attributes (set in __init__ or declared as annotations) count too
    annotations: dict[str, Any] = {}
    for klass in inspect.getmro(cls):
        annotations.update(getattr(klass, "__annotations__", {}))
    if attribute in annotations:
        return True
    try:
        return f"self.{attribute} " in inspect.getsource(cls.__init__) or \
            f"self.{attribute}:" in inspect.getsource(cls.__init__)
    except (OSError, TypeError):
        return False


def _has_module_attribute(module_name: str, attribute: str) -> bool:
    import importlib

    try:
        return hasattr(importlib.import_module(module_name), attribute)
    except ImportError:
        return False


def check() -> None:
    """Raise FaustPatchError naming every mismatch (versions first, then missing attributes)."""
    problems = []
    for package, wanted in WRITTEN_FOR.items():
        found = _installed(package)
        if found != wanted:
            problems.append(f"{package} is {found or 'not installed'}, the patches were written for {wanted}")
    if not problems:
        for module_name, class_name, attribute in PATCHED_ATTRIBUTES:
            own = (module_name, class_name, attribute) in REPLACED_ATTRIBUTES
            if not _has_attribute(module_name, class_name, attribute, own):
                problems.append(f"{module_name}.{class_name}.{attribute} is missing (a patch replaces or reads it)")
        for module_name, attribute in REPLACED_MODULE_ATTRIBUTES:
            if not _has_module_attribute(module_name, attribute):
                problems.append(f"{module_name}.{attribute} is missing (a patch replaces it)")
    if problems:
        raise FaustPatchError(
            "the worker's Faust patches (streams/faust_patches.py) cannot be applied safely:\n  "
            + "\n  ".join(problems)
            + "\nInstall the pinned versions (pip install -e .), or re-check the patches against the new versions "
              "and update WRITTEN_FOR (see the module docstring).")


def _shorten_fetch_wait() -> None:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(AIOKafkaConsumerThread, "_tokenmeter_patched", False):
        return
    original = AIOKafkaConsumerThread._create_worker_consumer

    def create(self, transport):  # noqa: ANN001
        consumer = original(self, transport)
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise FaustPatchError("aiokafka's consumer has no _fetch_max_wait_ms: the fetch-wait patch is void")
        wait_ms = getattr(self.app, FETCH_WAIT_ATTRIBUTE, None) or fetch_wait()["fetch_max_wait_ms"]
        consumer._fetch_max_wait_ms = wait_ms  # noqa: SLF001 - read by consumer.start()
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create
    AIOKafkaConsumerThread._tokenmeter_patched = True


def _rewind_uncommitted_partitions() -> None:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(AIOKafkaConsumerThread, "_tokenmeter_rewinds", False):
        return
    original = AIOKafkaConsumerThread.seek_to_committed

    async def seek_to_committed(self):  # noqa: ANN001, ANN202
        committed = await original(self)
        acking = self.app.topics.acks_enabled_for
        uncommitted = [tp for tp, offset in committed.items() if not offset and acking(tp.topic)]
        for tp, offset in committed.items():  # where each partition's records must resume (streams/gaps.py)
            if offset:
                SEEK_POSITIONS[(tp.topic, tp.partition)] = offset
            else:
                SEEK_POSITIONS.pop((tp.topic, tp.partition), None)
        if uncommitted:
            log.debug("rewinding partitions without a committed offset to their beginning: %s", uncommitted)
            consumer = self._ensure_consumer()
            await self.call_thread(consumer.seek_to_beginning, *uncommitted)
            for tp in uncommitted:
                SEEK_POSITIONS[(tp.topic, tp.partition)] = await self.call_thread(consumer.position, tp)
        return committed

    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed
    AIOKafkaConsumerThread._tokenmeter_rewinds = True


def _leave_in_generation_zero() -> None:
    """Patch 4: aiokafka's `_maybe_leave_group` with `generation >= 0` for its `> 0` (tansu's first generation is 0;
    -1 is aiokafka's "no generation", after which there is nothing to leave)."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator
    from aiokafka.errors import KafkaError
    from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest

    if getattr(GroupCoordinator, "_tokenmeter_leaves", False):
        return

    async def _maybe_leave_group(self):  # noqa: ANN001, ANN202 - aiokafka 0.14's body, but for the condition
        if (self.generation >= 0 and self.member_id != JoinGroupRequest.UNKNOWN_MEMBER_ID
                and self._group_instance_id is None):  # static members never leave (aiokafka's rule)
            try:
                await self._send_req(LeaveGroupRequest(self.group_id, self.member_id))
            except KafkaError as err:
                log.error("LeaveGroup request failed: %s", err)
            else:
                log.info("LeaveGroup request succeeded")
        self.reset_generation()

    GroupCoordinator._maybe_leave_group = _maybe_leave_group
    GroupCoordinator._tokenmeter_leaves = True


def _no_fixed_wait_at_start() -> None:
    """Patch 5: TableManager.on_start waits its 1 s only when the app has tables."""
    from faust.tables.manager import TableManager

    if getattr(TableManager, "_tokenmeter_no_wait", False):
        return
    original_on_start = TableManager.on_start

    async def on_start(self) -> None:  # noqa: ANN001
        if len(self):  # tables: Faust's own start (its 1 s for tables declared while agents start)
            await original_on_start(self)
            return
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()

    TableManager.on_start = on_start
    TableManager._tokenmeter_no_wait = True


def _no_marker(*args: Any, **kwargs: Any) -> None:
    """Patch 7: what `faust.utils.venusian.attach` does for an app without autodiscovery."""


def _no_venusian_markers() -> None:
    """Patch 7: Faust's decorators call `venusian.attach` through the module `faust.utils.venusian`, so replacing
    the module's function is enough."""
    import faust.utils.venusian

    faust.utils.venusian.attach = _no_marker


def _seek_back_records_cleared_on_resume(app: Any) -> None:
    """(Records of revoked partitions are cleared by Faust's own `flow_control.clear()` at revocation, not here.)"""
    flow = app.flow_control
    original = flow.resume

    def resume() -> None:
        lowest: dict[Any, int] = {}
        try:
            consumer = app.consumer
            assigned = consumer.assignment()
            acking = app.topics.acks_enabled_for
            for queue in list(flow._queues):  # noqa: SLF001 - the queues resume() is about to clear
                for item in list(getattr(queue, "_queue", ())):
                    message = getattr(item, "message", None)
                    tp = getattr(message, "tp", None)
                    if tp is not None and tp in assigned and acking(tp.topic):
                        lowest[tp] = min(lowest.get(tp, message.offset), message.offset)
        except Exception as exc:  # noqa: BLE001 - never break Faust's recovery; the gap guard still applies
            log.warning("could not inspect queued records before flow resumed: %r", exc)
        original()
        for tp, offset in sorted(lowest.items()):
            log.warning("%s[%d]: records from offset %d were still queued when flow resumed; re-reading them",
                        tp.topic, tp.partition, offset)
            app.consumer._thread.seek(tp, offset)  # noqa: SLF001 - what Faust's own Consumer.seek does
            app.consumer._read_offset[tp] = offset or None  # noqa: SLF001
            SEEK_POSITIONS[(tp.topic, tp.partition)] = offset

    flow.resume = resume


def patch_classes() -> None:
    """The class- and module-level patches (1, 2, 4, 5 and 7); checked first. Idempotent."""
    check()
    _shorten_fetch_wait()
    _rewind_uncommitted_partitions()
    _leave_in_generation_zero()
    _no_fixed_wait_at_start()
    _no_venusian_markers()


def patch_app(app: Any, settings: Settings | None = None) -> None:
    """The per-app patches (3, 6), for an app built after `patch_classes()`; and the fetch wait of patch 1 from
    `settings` (without: the environment's settings)."""
    if settings is not None:
        setattr(app, FETCH_WAIT_ATTRIBUTE, settings.fetch_max_wait_ms)
    _seek_back_records_cleared_on_resume(app)
    _close_idle_connections(app)


# Patch 6: seconds a connection to the worker API may stay silent (no request head, or idle between requests).
# Faust's AppRunner keeps aiohttp's default, 3630 s: a client holding connections with half a head, or none, kept
# them for an hour (hostile24: 100 silent sockets, none closed after 20 s). `collect http` uses its body timeout.
IDLE_TIMEOUT_S = 30.0


def _close_idle_connections(app: Any) -> None:
    from aiohttp.web import AppRunner

    web = app.web  # the runner is only set up when the worker starts: replacing it here is in time
    web._runner = AppRunner(web.web_app, access_log=None, keepalive_timeout=IDLE_TIMEOUT_S)  # noqa: SLF001




# The re-join of streams/assignment_guard.py: aiokafka has no public API to leave and re-join a group, so it reads
# the consumer's private client and coordinator here, where every private attribute is named in PATCHED_ATTRIBUTES
# and checked against the pinned versions before the worker starts.
async def request_rejoin_if_topics_exist(consumer: Any, source_topics: Iterable[str]) -> bool:
    """Run in Faust's consumer thread (aiokafka's consumer lives on that loop): refresh the metadata; when a source
    topic has partitions, leave the group and join again as a new member. True when done."""
    client = consumer._client  # noqa: SLF001 - aiokafka's own client and coordinator, no public API for a rejoin
    await client.force_metadata_update()
    if not any(client.cluster.partitions_for_topic(t) for t in source_topics):
        return False
    # A plain re-join is no rebalance: a member re-joining a stable group with unchanged metadata gets the current
    # generation and assignment back (Kafka's rule; tansu does the same, measured). Leaving first makes it a new
    # member, which the coordinator must rebalance for. (Its acked offsets were committed on revocation.)
    # aiokafka's own `_maybe_leave_group` sends no LeaveGroup in generation 0, which is tansu's first generation: the
    # old member would linger in the group (and be assigned partitions) until its session timed out.
    from aiokafka.errors import KafkaError
    from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest

    coordinator = consumer._coordinator  # noqa: SLF001
    if coordinator.member_id != JoinGroupRequest.UNKNOWN_MEMBER_ID:
        try:
            await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))  # noqa: SLF001
        except KafkaError as exc:
            log.warning("LeaveGroup before re-joining failed (%r); joining as a new member anyway", exc)
    coordinator.reset_generation()  # a new member id, and the join is requested
    return True


__all__ = ["FaustPatchError", "WRITTEN_FOR", "check", "patch_app", "patch_classes",
           "request_rejoin_if_topics_exist"]
