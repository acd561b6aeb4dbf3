"""`[metrics] port`: Prometheus metrics at /metrics and a liveness check at /healthz, on the bot's event loop.

Served with aiohttp (discord.py's own HTTP library) on the same loop as the bot, so /healthz answering at
all shows the loop is alive. Each bot has its own CollectorRegistry: nothing goes to prometheus_client's
global one, so several bots (tests) can serve side by side.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.config import MetricsConfig
from jobs.metrics import JobMetrics, worker_label

if TYPE_CHECKING:
    from bot.app import ImagineBot

log = logging.getLogger(__name__)

GATEWAY_GRACE = 60.0  # seconds without a gateway connection before /healthz fails (reconnects take a few)
# The deliveries' plain int counters (results and trainings), read with defaults: 0 where one has none.
DELIVERY_COUNTERS = (
    ("imagine_delivery_retries", "retries_total", "Result deliveries tried again after Discord refused or failed"),
    ("imagine_delivery_failures", "failures_total", "Result deliveries that failed (each may be retried)"),
    ("imagine_delivery_undeliverable", "undeliverable_total", "Results given up on: their channel is gone"),
)


def gateway_connected(bot: ImagineBot) -> bool:
    """Whether the bot's gateway connection (every shard's, when sharded) is open now."""
    shards = getattr(bot, "shards", None)
    if isinstance(shards, dict) and shards:
        return all(not shard.is_closed() for shard in shards.values())
    ws = bot.ws
    return ws is not None and ws.open


class BotMetrics(Collector):
    """What only the Discord side knows: deliveries and the gateway connection."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    def collect(self) -> Iterator[Metric]:
        """The metric families, read now."""
        bot = self.bot
        followers = {"job": getattr(bot, "delivery", None), "training": getattr(bot, "training_delivery", None)}
        for name, attribute, documentation in DELIVERY_COUNTERS:
            family = CounterMetricFamily(name, documentation, labels=["kind"])
            for kind, follower in followers.items():
                family.add_metric([kind], int(getattr(follower, attribute, 0)))
            yield family
        connected = gateway_connected(self.bot)
        yield GaugeMetricFamily("imagine_discord_connected", "1 while the gateway connection is open", value=connected)
        latency = self.bot.latency
        if connected and math.isfinite(latency):
            yield GaugeMetricFamily("imagine_discord_latency_seconds", "Gateway heartbeat round trip", value=latency)


class MetricsServer:
    """The HTTP endpoint: `/metrics` for Prometheus, `/healthz` for whatever restarts the bot."""

    def __init__(
        self,
        settings: MetricsConfig,
        bot: ImagineBot,
        *,
        gateway_grace: float = GATEWAY_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        services = bot.services
        self.settings = settings
        self.bot = bot
        self.gateway_grace = gateway_grace
        self._clock = clock
        self._gateway_down_since: float | None = None
        self.registry = CollectorRegistry()
        self.jobs = JobMetrics(services.store, services.queue, services.workers)
        self.registry.register(self.jobs)
        self.registry.register(BotMetrics(bot))
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Where it serves, e.g. http://127.0.0.1:9108."""
        return f"http://{self.settings.host}:{self.settings.port}"

    async def start(self) -> None:
        """Follow the jobs and listen; OSError when the port cannot be had."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        runner = web.AppRunner(app, access_log=None)  # a scrape every 15 s would drown the log
        await runner.setup()
        try:
            await web.TCPSite(runner, self.settings.host, self.settings.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.jobs.start()
        log.info("metrics at %s/metrics, liveness at %s/healthz", self.url, self.url)

    async def stop(self) -> None:
        """Stop listening and following."""
        await self.jobs.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def problem(self) -> str | None:
        """Why the bot is not alive, in one line; None while it is."""
        workers = self.jobs.workers
        for index, worker in enumerate(workers):
            if worker.state in ("died", "stopped"):
                which = "the GPU worker" if len(workers) == 1 else f"GPU worker {worker_label(worker, index)}"
                return f"{which} has {'stopped' if worker.state == 'stopped' else 'died'}"
        if self.bot.is_closed():
            return "the Discord client is closed"
        if gateway_connected(self.bot):
            self._gateway_down_since = None
            return None
        now = self._clock()
        if self._gateway_down_since is None:
            self._gateway_down_since = now
        down = now - self._gateway_down_since
        if down >= self.gateway_grace:
            return f"no gateway connection to Discord for {down:.0f} s"
        return None  # connecting, or reconnecting: discord.py retries by itself

    async def _metrics(self, request: web.Request) -> web.Response:
        await self.jobs.refresh()
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        problem = self.problem()
        if problem is None:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=f"{problem}\n")
