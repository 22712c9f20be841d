"""One RAM budget across Ollama, llama-swap (`heavy`) and the embedded model: a local model is loaded only when
it fits beside what is resident, so the 24 GB laptop never swaps.

Ollama's own scheduler cannot keep that promise: it loads the first model with no memory check, lets a model
that does not fit wait behind a busy one until the caller times out, and a load cut by that timeout starts
again (the thrash the seed describes). Before every attempt on a local model that is not resident, this
plugin (`async_pre_call_deployment_hook`, per attempt, so each fallback hop is judged on its own):
- fits beside what is resident → go, its timeout stretched by the load time (Ollama sends nothing until the
  model is loaded);
- does not fit, and what is in the way is idle → unloads it (Ollama `keep_alive: 0`, llama-swap `/unload`),
  waits until `/api/ps` (`/running`) no longer lists it, then goes; a request for a model being unloaded
  waits too, so nothing renews it;
- what is in the way is busy → waits in one FIFO queue (one switch at a time) until it drains, up to
  `switch_wait_s` (shorter than the tier's timeout), then refuses the attempt: the router demotes along the
  chain and the reason is in the headers and the demotion log, e.g.
  `coder-30b: would not fit (19.5 GB needed, 7.2 GB held by fast-9b, busy)`;
- would not fit even alone → refused at once, never loaded into swap.
A remote Ollama (not loopback) is another machine's RAM and is not counted. The budget and the policy:
`ram_budget:` in litellm-config.yaml, `RAM_BUDGET_GB` (wins), `RAM_BUDGET=off` (Ollama's scheduling only).
The state is left in `contract.budget.state_file()` for `ask models` and `ask`'s waiting line.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
from litellm.integrations.custom_logger import CustomLogger

from contract import budget as budget_state
from contract import memory
from contract.tiers import Deployment
from plugins import provenance
from plugins.log import logger
from plugins.provenance import REMEMBERED_CALLS, BoundedMap, Refused

OFF_ENV = "RAM_BUDGET"  # "off": the plugin admits everything (Ollama's own scheduling only)
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
WARM = "warm"  # body `metadata.ram_budget`: `ask warm` never waits for, or pushes out, a busy model
log = logger("ram_budget")
PROBE_TTL_S = 1.0  # a warm request trusts what `/api/ps` said this recently
# Ollama answers /api/ps from its scheduler's state (server/sched.go loadedModels), at once even while it
# generates; only briefly late while a load reads the model's metadata and spawns its runner under the same lock
# (sched.go load). Silence this long is a hung backend (SIGSTOP, a wedged server): its tiers are passed over at
# once, the whole chain in about this long, instead of each hop waiting out its own 15-90 s timeout.
PROBE_TIMEOUT_S = 5.0
LOADING_MARGIN_S = 5.0  # added to a cold attempt's timeout beyond the load time itself
MIN_HOP_S = 1.0  # less than this left of a request's deadline: the next hop is not worth starting


class Policy(NamedTuple):
    """`ram_budget:` in the yaml (see litellm-config.yaml for each key's meaning)."""

    enabled: bool = True
    budget_gb: Any = None  # the yaml's value; RAM_BUDGET_GB wins (memory.explicit_budget)
    switch_wait_s: float = 20.0
    load_gb_per_s: float = 1.5
    unload_wait_s: float = 30.0
    poll_s: float = 0.1
    chain_deadline_s: float | None = None  # None: the asked tier's own timeout

    @classmethod
    def of(cls, block: Mapping[str, Any] | None) -> Policy:
        block = dict(block or {})
        enabled = block.get("enabled", True) is not False and os.environ.get(OFF_ENV, "").lower() != "off"
        keys = ("switch_wait_s", "load_gb_per_s", "unload_wait_s", "poll_s", "chain_deadline_s")
        numbers = {key: float(block[key]) for key in keys if block.get(key) is not None}
        return cls(enabled=enabled, budget_gb=block.get("budget_gb"), **numbers)


def _policy_of_config() -> Policy:
    """The running proxy's yaml `ram_budget:` block (the file LiteLLM was started with)."""
    try:
        from litellm.proxy import proxy_server

        path = getattr(proxy_server, "user_config_file_path", None)
        if path:
            import yaml

            with open(path, encoding="utf-8") as fh:
                return Policy.of((yaml.safe_load(fh) or {}).get("ram_budget"))
    except (ImportError, OSError, ValueError) as exc:
        log.warning("ram budget: cannot read the config's ram_budget block (%s); its defaults apply", exc)
    return Policy.of(None)


class Runner(NamedTuple):
    """One loaded model on this machine: fast-9b and think-9b are one Ollama runner."""

    runtime: str  # ollama, llama.cpp, embedded
    base: str  # the backend's root URL (no /v1)
    model: str  # Ollama tag or llama-swap model name, normalised

    @classmethod
    def of(cls, deployment: Deployment) -> Runner | None:
        """The runner a deployment loads, None when it is not a local model this budget counts."""
        if deployment.runtime not in ("ollama", "llama.cpp", "embedded") or not deployment.api_base:
            return None
        if (urlsplit(deployment.api_base).hostname or "") not in LOOPBACK:
            return None  # another machine's RAM
        base = deployment.api_base.rstrip("/").removesuffix("/v1")
        return cls(deployment.runtime, base, _tag(deployment.model))


def _tag(name: str) -> str:
    """Ollama's name matching: case-insensitive, a missing tag is `:latest`."""
    name = name.strip().lower()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class Attempt(NamedTuple):
    runner: Runner
    tier: str
    started: float
    expires: float  # a leak guard: an attempt LiteLLM never reported the end of counts as over after this


class Resident(NamedTuple):
    gb: float
    tier: str | None  # the tier that loaded it (None: a model no tier of ours asked for)
    keep_alive_left: float = float("inf")


class Budget:
    """The decisions and what they rest on. Attempts are counted under a thread lock: LiteLLM reports an
    attempt's end from its logging callbacks, some of which run on other threads. (Plain classes and
    NamedTuples here: LiteLLM loads this file outside `sys.modules`, where dataclasses cannot resolve their
    annotations.)"""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.attempts: dict[str, Attempt] = {}  # call id → its running attempt
        self.deadlines: BoundedMap[str, float] = BoundedMap(REMEMBERED_CALLS)  # call id → when it stops waiting
        self.chains: BoundedMap[str, tuple[float, float]] = BoundedMap(REMEMBERED_CALLS)  # call id → (ends, s)
        self.loading: dict[Runner, tuple[str, float, float]] = {}  # runner → (tier, GB, since)
        self.unloading: dict[Runner, tuple[str, float]] = {}  # runner → (tier, since)
        self.queued: list[dict[str, Any]] = []
        self.sizes: dict[Runner, float] = {}  # runner → model_info.resident_gb (the yaml's)
        self.tiers: dict[Runner, str] = {}  # runner → the first tier that uses it
        self.lock = threading.Lock()
        self._rows: dict[str, dict[Runner, Resident]] = {}  # backend base → what it said is loaded
        self._probed: dict[str, float] = {}  # backend base → when it was asked
        self._switch: asyncio.Lock | None = None
        self._client: httpx.AsyncClient | None = None
        self._said_bad_budget = False
        self._figures: tuple[float | None, str | None] = (None, None)  # the last decision's budget and source
        self.hung: dict[str, float] = {}  # backend base → when its probe last timed out

    def learn(self, deployments: list[Deployment]) -> None:
        """Every local runner the tiers name, with its yaml size and the first tier that uses it: what is
        resident is then known by tier even when this proxy did not load it (embedded included)."""
        for deployment in deployments:
            runner = Runner.of(deployment)
            if runner is not None:
                self.sizes.setdefault(runner, float(deployment.resident_gb or 0.0))
                self.tiers.setdefault(runner, deployment.tier)

    def bases(self) -> set[tuple[str, str]]:
        return {(r.runtime, r.base) for r in self.sizes}

    # -- counting attempts -------------------------------------------------------------------------------
    def begin(self, call_id: str, runner: Runner, tier: str, timeout_s: float) -> None:
        now = time.monotonic()
        with self.lock:
            self.attempts[call_id] = Attempt(runner, tier, now, now + timeout_s + 60)

    def end(self, call_id: str | None) -> None:
        if call_id:
            with self.lock:
                self.attempts.pop(call_id, None)

    def busy(self, runner: Runner) -> int:
        now = time.monotonic()
        with self.lock:
            for call_id in [c for c, a in self.attempts.items() if a.expires < now]:
                del self.attempts[call_id]
            return sum(1 for a in self.attempts.values() if a.runner == runner)

    # -- what is resident ---------------------------------------------------------------------------------
    def http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(PROBE_TIMEOUT_S, connect=1.0))
        return self._client

    async def resident(self, bases: set[tuple[str, str]], fresh: bool) -> dict[Runner, Resident]:
        """Every model loaded on the local backends in `bases` ((runtime, base)), from Ollama's `/api/ps` or
        llama-swap's `/running`; the embedded model while its server answers `/health`. A backend that does not
        answer holds nothing. Asked at once, not one after the other; unless `fresh`, a backend asked less than
        `PROBE_TTL_S` ago is not asked again (a warm request asks only its own)."""
        now = time.monotonic()
        stale = sorted(b for b in bases if fresh or now - self._probed.get(b[1], 0.0) >= PROBE_TTL_S)
        for (_runtime, base), rows in zip(stale, await asyncio.gather(*(self._loaded(*b) for b in stale)), strict=True):
            self._rows[base], self._probed[base] = rows, time.monotonic()
        found = {r: row for runtime, base in bases for r, row in self._rows.get(base, {}).items()}
        asked = {base for _runtime, base in stale}
        for runner in [r for r in self.loading if r.base in asked and (r in found or not self.busy(r))]:
            del self.loading[runner]  # loaded, or its load was given up
        return found

    def known(self) -> dict[Runner, Resident]:
        """What the last probes found, every backend."""
        return {r: row for rows in self._rows.values() for r, row in rows.items()}

    async def _loaded(self, runtime: str, base: str) -> dict[Runner, Resident]:
        found: dict[Runner, Resident] = {}
        try:
            if runtime == "embedded":  # ask serve starts it; it holds its memory while it runs
                (await self.http().get(f"{base}/health")).raise_for_status()
                for runner, gb in self.sizes.items():
                    if runner.runtime == "embedded" and runner.base == base:
                        found[runner] = Resident(gb, self.tiers.get(runner))
            elif runtime == "ollama":
                for row in (await self.http().get(f"{base}/api/ps")).json().get("models") or []:
                    runner = Runner(runtime, base, _tag(str(row.get("name") or row.get("model") or "")))
                    left = _left(row.get("expires_at"))
                    found[runner] = Resident(float(row.get("size") or 0) / 1e9, self.tiers.get(runner), left)
            else:  # llama-swap: GET /running → {"running": [{"model": ..., "state": "ready"}]}
                for row in (await self.http().get(f"{base}/running")).json().get("running") or []:
                    runner = Runner(runtime, base, _tag(str(row.get("model") or "")))
                    found[runner] = Resident(self.sizes.get(runner, 0.0), self.tiers.get(runner))
        except httpx.TimeoutException:
            self.hung[base] = time.monotonic()
            return found
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            log.debug("ram budget: %s %s did not say what is loaded (%s)", runtime, base, exc)
        self.hung.pop(base, None)
        return found

    async def unload(self, runner: Runner) -> None:
        if runner.runtime == "ollama":
            await self.http().post(f"{runner.base}/api/generate", json={"model": runner.model, "keep_alive": 0})
        elif runner.runtime == "llama.cpp":
            await self.http().get(f"{runner.base}/unload")

    # -- deciding -----------------------------------------------------------------------------------------
    async def admit(self, kwargs: dict[str, Any], deployment: Deployment, runner: Runner) -> None:
        """Return when `runner` may be used for this attempt; raise Refused when it may not."""
        call_id = str(kwargs.get("litellm_call_id") or id(kwargs))
        tier = deployment.tier
        self.end(call_id)  # an earlier hop of this call is over
        if not self.sizes:
            self.learn(provenance.served_tiers().deployments())
        self.learn([deployment])
        timeout_s = self.within_chain(kwargs, call_id, tier, runner, float(kwargs.get("timeout") or 60))
        resident = await self.resident({(runner.runtime, runner.base)}, fresh=False)
        self.alive(tier, runner)
        if runner not in self.unloading:
            if runner in resident:
                self.begin(call_id, runner, tier, timeout_s)
                return
            if runner in self.loading and self.busy(runner):  # an earlier request is loading it: Ollama queues
                self.begin(call_id, runner, tier, timeout_s)
                kwargs["timeout"] = self.cold_timeout(kwargs, timeout_s, self.sizes[runner])
                return
        warm = ((kwargs.get("metadata") or {}).get("ram_budget")) == WARM or _body_metadata(kwargs) == WARM
        wait_s = 0.0 if warm else min(self.policy.switch_wait_s, timeout_s / 2)
        # One wait per request, not per hop: a demoted request's next hops do not wait all over again.
        deadline = self.deadlines.entry(call_id, lambda: time.monotonic() + wait_s)
        needed = self.sizes[runner]
        entry = {"tier": tier, "gb": needed, "waiting_for": [], "since": time.time()}
        self.queued.append(entry)
        self.publish()
        try:
            if self._switch is None:
                self._switch = asyncio.Lock()  # FIFO: asyncio wakes waiters in the order they came
            try:
                await asyncio.wait_for(self._switch.acquire(), max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                raise refusal(tier, needed, "still behind another switch") from None
            try:
                await self.switch(call_id, tier, runner, needed, deadline, entry, timeout_s)
            finally:
                self._switch.release()
        finally:
            self.queued.remove(entry)
            self.publish()
        kwargs["timeout"] = self.cold_timeout(kwargs, timeout_s, needed)

    def within_chain(self, kwargs: dict[str, Any], call_id: str, tier: str, runner: Runner, timeout_s: float) -> float:
        """A demoted request shares one deadline, not a fresh timeout per hop: three hung tiers cost the asked
        tier's timeout (`chain_deadline_s`), not their sum. Each hop gets what is left (a cold load's time is
        added after); a hop that starts after it is refused. The embedded model, the last resort, keeps its own
        timeout, and a timeout the client set is its own."""
        if runner.runtime == "embedded" or _client_timeout(kwargs):
            return timeout_s
        budget_s = self.policy.chain_deadline_s or timeout_s
        ends, budget_s = self.chains.entry(call_id, lambda: (time.monotonic() + budget_s, budget_s))
        left = ends - time.monotonic()
        if left < MIN_HOP_S:
            raise Refused(tier, f"the request's {budget_s:g} s deadline ran out before this tier was tried")
        if left < timeout_s:
            kwargs["timeout"] = timeout_s = left
        return timeout_s

    def alive(self, tier: str, runner: Runner) -> None:
        """Refuse an attempt on a backend whose last probe timed out: it would hang until the hop's timeout."""
        if runner.base in self.hung:
            why = f"{runner.runtime} at {runner.base} did not answer within {PROBE_TIMEOUT_S:g} s (hung?)"
            raise Refused(tier, why)

    def cold_timeout(self, kwargs: Mapping[str, Any], timeout_s: float, gb: float) -> float:
        """Ollama sends nothing until the model is loaded: that time is not the warm model's timeout to spend.
        A timeout the client set itself is its own: kept as it is."""
        if _client_timeout(kwargs):
            return timeout_s
        return timeout_s + gb / max(self.policy.load_gb_per_s, 0.1) + LOADING_MARGIN_S

    async def switch(
        self,
        call_id: str,
        tier: str,
        runner: Runner,
        needed: float,
        deadline: float,
        entry: dict[str, Any],
        timeout_s: float,
    ) -> None:
        """Holding the switch: make room for `runner` and return, or raise Refused."""
        while True:
            resident = await self.resident(self.bases(), fresh=True)
            self.alive(tier, runner)
            if runner in resident or (runner in self.loading and self.busy(runner)):  # an earlier request did
                self.begin(call_id, runner, tier, timeout_s)
                return
            held = {r: row for r, row in resident.items()}
            for loading, (loading_tier, gb, _since) in self.loading.items():
                if loading not in held and self.busy(loading):
                    held[loading] = Resident(gb, loading_tier)
            explicit, label = self.explicit()
            total, source = memory.budget(explicit, sum(row.gb for row in held.values()), explicit_source=label)
            if total is None:
                log.warning("ram budget: %s; %s admitted unchecked", source, tier)
                self.begin(call_id, runner, tier, timeout_s)
                return
            if needed > total:
                raise refusal(tier, needed, f"budget {total:.1f} GB: {source}", alone=True)
            over = needed + sum(row.gb for row in held.values()) - total
            if over <= 0:
                self.begin(call_id, runner, tier, timeout_s)
                self.loading[runner] = (tier, needed, time.time())
                self.publish(total, source, held)
                return
            # Unloadable: ours (a tier's), idle, and not the embedded model (ask serve's child, never unloaded)
            idle = [r for r, row in held.items() if row.tier and r.runtime != "embedded" and not self.busy(r)]
            idle.sort(key=lambda r: held[r].keep_alive_left)  # as Ollama picks: the shortest keep_alive first
            victims, freed = [], 0.0
            for candidate in idle:
                if freed >= over:
                    break
                victims.append(candidate)
                freed += held[candidate].gb
            if freed >= over:
                await self.make_room(tier, victims, held, total, source)
                continue
            blockers = [r for r in held if r not in idle and r.runtime != "embedded"]
            entry["waiting_for"] = [held[r].tier or r.model for r in blockers]
            self.publish(total, source, held)
            if time.monotonic() >= deadline:
                what = ", ".join(
                    f"{held[r].tier or r.model}{'' if held[r].tier else ' (not a tier)'}" for r in blockers
                )
                kept = sum(held[r].gb for r in blockers)
                raise refusal(tier, needed, f"{kept:.1f} GB held by {what}, busy")
            await asyncio.sleep(self.policy.poll_s)

    async def make_room(
        self, tier: str, victims: list[Runner], held: dict[Runner, Resident], total: float, source: str
    ) -> None:
        """Unload idle `victims` and wait until their backends no longer list them."""
        now = time.time()
        for runner in victims:
            self.unloading[runner] = (held[runner].tier or runner.model, now)
            self.loading.pop(runner, None)
        self.publish(total, source, held)
        try:
            for runner in victims:
                log.warning("ram budget: unloading idle %s (%.1f GB) to make room", held[runner].tier, held[runner].gb)
                try:
                    await self.unload(runner)
                except httpx.HTTPError as exc:
                    log.warning("ram budget: unloading %s failed (%s)", runner.model, exc)
            give_up = time.monotonic() + self.policy.unload_wait_s
            bases = {(r.runtime, r.base) for r in victims}
            while set(victims) & set(await self.resident(bases, fresh=True)):
                if time.monotonic() >= give_up:
                    stuck = ", ".join(held[r].tier or r.model for r in victims)
                    raise Refused(tier, f"{stuck} still loaded {self.policy.unload_wait_s:g} s after its unload")
                await asyncio.sleep(self.policy.poll_s)
        finally:
            for runner in victims:
                self.unloading.pop(runner, None)
            self._probed.clear()

    def explicit(self) -> tuple[float | None, str]:
        """The budget given by hand, if any; a value that is not a number of GB is said once and ignored (`ask
        serve` refuses to start with one)."""
        try:
            return memory.explicit_budget(self.policy.budget_gb)
        except ValueError as exc:
            if not self._said_bad_budget:
                log.error("ram budget: %s; using what the OS says is available", exc)
                self._said_bad_budget = True
            return None, ""

    # -- the state `ask` reads ------------------------------------------------------------------------------
    def publish(
        self, total: float | None = None, source: str | None = None, held: dict[Runner, Resident] | None = None
    ) -> None:
        if total is not None:
            self._figures = (total, source)
        rows = held if held is not None else self.known()
        state = {
            "pid": os.getpid(),
            "updated": time.time(),
            "budget_gb": self._figures[0],
            "source": self._figures[1],
            "resident": [
                {"tier": row.tier, "model": r.model, "runtime": r.runtime, "gb": round(row.gb, 2), "busy": self.busy(r)}
                for r, row in rows.items()
            ],
            "loading": [
                {"tier": tier, "model": r.model, "gb": gb, "since": since}
                for r, (tier, gb, since) in self.loading.items()
                if r not in rows
            ],
            "unloading": [
                {"tier": tier, "model": r.model, "since": since} for r, (tier, since) in self.unloading.items()
            ],
            "queued": [dict(entry) for entry in self.queued],
        }
        try:
            budget_state.write_state(state)
        except OSError as exc:
            log.debug("ram budget: state not written (%s)", exc)


def refusal(tier: str, needed: float, why: str, alone: bool = False) -> Refused:
    """`coder-30b: would not fit (19.5 GB needed, 7.2 GB held by fast-9b, busy)`."""
    return Refused(tier, f"would not fit{' even alone' if alone else ''} ({needed:.1f} GB needed, {why})")


def _client_timeout(kwargs: Mapping[str, Any]) -> bool:
    body = (kwargs.get("proxy_server_request") or {}).get("body") or {}
    return isinstance(body, dict) and ("timeout" in body or "stream_timeout" in body)


def _left(expires_at: Any) -> float:
    """Seconds until an Ollama `expires_at` (RFC 3339); infinity when it cannot be read."""
    from datetime import datetime

    try:
        return (datetime.fromisoformat(str(expires_at)) - datetime.now().astimezone()).total_seconds()
    except ValueError:
        return float("inf")


def _body_metadata(kwargs: Mapping[str, Any]) -> Any:
    body = (kwargs.get("proxy_server_request") or {}).get("body") or {}
    metadata = body.get("metadata") if isinstance(body, dict) else None
    return metadata.get("ram_budget") if isinstance(metadata, dict) else None


class RamBudget(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self._budget: Budget | None = None

    @property
    def budget(self) -> Budget:
        if self._budget is None:
            self._budget = Budget(_policy_of_config())
        return self._budget

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict[str, Any]:
        budget = self.budget
        if not budget.policy.enabled:
            return kwargs
        deployment = provenance.attempt_deployment(kwargs)
        runner = Runner.of(deployment)
        if runner is None:
            return kwargs
        try:
            await budget.admit(kwargs, deployment, runner)
        except Refused as exc:
            provenance.note_failure(kwargs.get("litellm_call_id"), exc.tier, exc.reason)
            log.warning("ram budget: %s", exc)
            raise
        return kwargs

    async def async_post_call_failure_deployment_hook(
        self, request_data: Any, exception: Exception, call_type: Any, fallback_depth: int | None = None
    ) -> None:
        if self._budget is not None:
            self._budget.end(request_data.get("litellm_call_id"))

    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        if self._budget is not None:
            self._budget.end(kwargs.get("litellm_call_id"))

    async def async_log_failure_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        if self._budget is not None:
            self._budget.end(kwargs.get("litellm_call_id"))


handler = RamBudget()
