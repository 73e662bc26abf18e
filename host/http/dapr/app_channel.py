"""An HTTP application as an `AppChannel` (host/api/delivery.py), as Dapr's HTTP app channel
talks to it: `GET /dapr/subscribe` lists the subscriptions (`[{"pubsubname", "topic", "route" or
"routes": {"rules", "default"}, "deadLetterTopic", "metadata"}]`; a 404 means none), and each event
is POSTed to its route as the stored CloudEvent with `Content-Type: application/cloudevents+json`.
A 2xx answer's body `{"status": "SUCCESS" | "RETRY" | "DROP"}` decides (no body or no status:
SUCCESS); 404 drops the event; any other answer is retried. Routing rules are not evaluated: the
default route is used (and the first rule's path when there is no default, with a warning).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp

from host.api.delivery import AppSubscription, NotImplementedByApp
from host.api.topics import Outcome, TopicEvent
from host.components.pubsub.cloudevents import CLOUDEVENTS_CONTENT_TYPE, envelope

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 30.0
_STATUSES = {"": Outcome.SUCCESS, "SUCCESS": Outcome.SUCCESS, "RETRY": Outcome.RETRY, "DROP": Outcome.DROP}


def _route(entry: dict[str, Any]) -> str:
    routes: dict[str, Any] = entry["routes"] if isinstance(entry.get("routes"), dict) else {}
    route = routes.get("default") or entry.get("route") or ""
    rules = routes.get("rules") or []
    if rules:
        if not route and isinstance(rules[0], dict):
            route = rules[0].get("path") or ""
        log.warning("app subscription %s/%s has routing rules: they are not evaluated here; events go to %r",
                    entry.get("pubsubname"), entry.get("topic"), route)
    return route or entry.get("topic", "")


def _subscription(entry: Any) -> AppSubscription | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("pubsubname"), str) \
            or not isinstance(entry.get("topic"), str):
        log.warning("app subscription %r ignored: it needs string 'pubsubname' and 'topic'", entry)
        return None
    metadata: dict[str, Any] = entry["metadata"] if isinstance(entry.get("metadata"), dict) else {}
    return AppSubscription(entry["pubsubname"], entry["topic"], _route(entry), str(entry.get("deadLetterTopic") or ""),
                           {str(k): str(v) for k, v in metadata.items()})


class HttpAppChannel:
    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")
        self.name = f"HTTP {self.base}"
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S))
        return self._session

    async def subscriptions(self) -> list[AppSubscription]:
        async with self._client().get(f"{self.base}/dapr/subscribe") as response:
            if response.status == 404:
                return []
            response.raise_for_status()
            listed = await response.json(content_type=None)
        if not isinstance(listed, list):
            raise ValueError(f"GET /dapr/subscribe answered {type(listed).__name__}, not a JSON array")
        return [found for entry in listed if (found := _subscription(entry)) is not None]

    async def deliver(self, subscription: AppSubscription, event: TopicEvent) -> Outcome:
        body = event.raw if event.source else envelope(  # a raw publish goes out as a CloudEvent
            event.data, event.data_content_type, topic=event.topic, pubsub_name=event.pubsub_name,
            source=event.pubsub_name, event_id=event.id)
        headers = {"Content-Type": CLOUDEVENTS_CONTENT_TYPE}
        for name in ("traceparent", "tracestate"):
            if isinstance(event.extensions.get(name), str):
                headers[name] = event.extensions[name]
        url = f"{self.base}/{subscription.path.lstrip('/')}"
        async with self._client().post(url, data=body, headers=headers) as response:
            if response.status == 404:
                raise NotImplementedByApp(f"POST {url} answered 404")
            if not 200 <= response.status < 300:
                raise RuntimeError(f"POST {url} answered {response.status}")
            raw = await response.read()
        try:
            answer = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return Outcome.SUCCESS  # a 2xx without a JSON body is a success, as in Dapr
        status = str(answer.get("status", "") if isinstance(answer, dict) else "").upper()
        return _STATUSES.get(status, Outcome.RETRY)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
