"""Configuration in Redis with Dapr's layout (components-contrib `configuration/redis`), so items
written by Dapr, by `redis-cli SET key "value||1"` or by this host are the same items.

Each item is a plain Redis string `<key_prefix><name>` holding `value||version`, where the name is
the key for the default group and label and `group||label||key` otherwise (`_identity.py`). As in
Dapr, the value is what precedes the first "||" and the version the part after it, so a saved value
may not contain "||". Saves run one script that reads each current version and writes the next
integer (1 for a new item or a version that is not a number) with the value, so concurrent savers
never hand out the same version. Tags and item metadata have no place in this layout and are
not kept. Get without keys lists the prefix with SCAN (never KEYS); with an empty prefix that is
the whole database, so give each store its own prefix.

Subscriptions use keyspace notifications: one daemon thread holds a dedicated connection with
`PSUBSCRIBE __keyspace@<db>__:<prefix>*`, reads the changed key's value for a write and reports a
deletion, expiry, eviction or rename away as deleted. It reconnects with back-off when the server
goes away; changes made while it was away are not reported. Redis publishes these notifications
only with `notify-keyspace-events` holding K plus the string, generic, expired and evicted classes
(`K$gxe`, or `KA`): with `enable_keyspace_events` the store adds whichever of those flags are
missing (never removing any) when it starts and whenever the listener reconnects.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from host.components._redis import RedisClient, RedisSettings, Script, settings_from_layotto
from host.components.base import ComponentContext, key_prefix_from_layotto
from host.components.configuration._identity import SEPARATOR, check_text, identity_of, parse_name, storage_name
from host.components.configuration._watch import WatchHub
from host.components.configuration.base import ConfigItem, ConfigWatch, deleted_item
from host.components.errors import ComponentError, InvalidRequest
from host.lazy import lazy_module

if TYPE_CHECKING:
    import redis
else:
    redis = lazy_module("redis")  # redis-py is imported when a Redis component is first used (start-up time)

# Returns the new versions, in KEYS order. Versions are integers below 2^53 (exact in Lua's doubles).
_SAVE = Script("""
local versions = {}
for i, key in ipairs(KEYS) do
  local version = 0
  local current = redis.call('GET', key)
  if current then
    local at = string.find(current, '||', 1, true)
    if at then
      local rest = string.sub(current, at + 2)
      local stop = string.find(rest, '||', 1, true)
      if stop then rest = string.sub(rest, 1, stop - 1) end
      version = tonumber(rest) or 0
      if version ~= version or version < 0 or version >= 9007199254740991 then version = 0 end
      version = math.floor(version)
    end
  end
  version = version + 1
  redis.call('SET', key, ARGV[i] .. '||' .. string.format('%d', version))
  versions[i] = string.format('%d', version)
end
return versions
""")

_NEEDED_FLAGS = "K$gxe"  # keyspace channel; string, generic, expired, evicted events
_DELETED_EVENTS = frozenset({b"del", b"expired", b"evicted", b"rename_from", b"move_from"})
_WRITTEN_EVENTS = frozenset({b"set", b"setrange", b"append", b"incrby", b"incrbyfloat", b"restore",
                             b"rename_to", b"move_to", b"copy_to"})
_BATCH = 500  # keys per SCAN page and per MGET
_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.1, 5.0
_POLL_S = 0.2  # how often the listener looks up from its socket to notice close()


class Config(RedisSettings):
    type: Literal["redis"]
    key_prefix: str = ""
    enable_keyspace_events: bool = True  # add missing notify-keyspace-events flags (CONFIG SET)


def from_layotto(metadata: dict[str, str]) -> dict[str, Any]:
    """`settings_from_layotto`'s keys plus `keyPrefix` (taken literally)."""
    return {**settings_from_layotto(metadata), **key_prefix_from_layotto(metadata)}


def missing_flags(current: str) -> str:
    """The notify-keyspace-events flags a subscription needs that `current` lacks."""
    return "".join(flag for flag in _NEEDED_FLAGS
                   if flag not in current and not (flag != "K" and "A" in current))


def _glob_escape(text: str) -> str:
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def _split(stored: bytes) -> tuple[str, str]:
    """(value, version) of a stored string, read as Dapr reads it."""
    value, _, rest = stored.decode("utf-8", "replace").partition(SEPARATOR)
    return value, rest.split(SEPARATOR, 1)[0]


def _config_value(reply: Any) -> str:
    """The value in a one-parameter CONFIG GET reply: a map in RESP3, a flat pair in RESP2."""
    raw = next(iter(reply.values())) if isinstance(reply, dict) else reply[1]
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class Backend:
    def __init__(self, config: Config, context: ComponentContext):
        self.config = config
        self.context = context
        self._client = RedisClient(config)
        self._prefix = config.key_prefix
        self._hub = WatchHub(context.name, context.logger)
        self._closed = threading.Event()
        self._connected = threading.Event()  # the listener is subscribed right now
        self._listener: threading.Thread | None = None
        self._listener_lock = threading.Lock()
        self._last_error = "not connected yet"
        # Named so operators (and tests) can tell the listener's connection apart in CLIENT LIST.
        self.listener_name = "wfaas-config-" + re.sub(r"[^A-Za-z0-9_.-]", "_", context.name)
        self._keyspace_problem: str | None = None
        self._check_keyspace_events()

    # -- keyspace notifications -------------------------------------------------------------

    def _check_keyspace_events(self) -> None:
        """Best effort: a server that is down now gets checked again when the listener connects."""
        try:
            current = _config_value(self._client.command("CONFIG", "GET", "notify-keyspace-events"))
            missing = missing_flags(current)
            if missing and self.config.enable_keyspace_events:
                self._client.command("CONFIG", "SET", "notify-keyspace-events", current + missing)
                self.context.logger.info("configuration %s: redis %s notify-keyspace-events %r -> %r, for "
                                         "subscriptions", self.context.name, self._client.address, current,
                                         current + missing)
                missing = ""
        except ComponentError as error:
            self.context.logger.warning("configuration %s: cannot check notify-keyspace-events: %s",
                                        self.context.name, error)
            return
        self._keyspace_problem = (f"notify-keyspace-events lacks {missing!r}: subscribers are not notified"
                                  if missing else None)
        if missing:
            self.context.logger.warning("configuration %s: redis %s %s", self.context.name, self._client.address,
                                        self._keyspace_problem)

    def _start_listener(self) -> None:
        with self._listener_lock:
            if self._listener is None and not self._closed.is_set():
                self._listener = threading.Thread(target=self._listen, name=f"config-redis-{self.context.name}",
                                                  daemon=True)
                self._listener.start()

    def _listen(self) -> None:
        pattern = f"__keyspace@{self.config.db}__:{_glob_escape(self._prefix)}*"
        channel_prefix = f"__keyspace@{self.config.db}__:".encode()
        backoff_s = _BACKOFF_FIRST_S
        while not self._closed.is_set():
            connection = self._client.dedicated_connection()
            try:
                connection.connect()
                connection.send_command("CLIENT", "SETNAME", self.listener_name)
                connection.read_response()
                self._check_keyspace_events()
                connection.send_command("PSUBSCRIBE", pattern)
                # push_request: in RESP3 (redis-py 8's default) pub/sub messages are pushes, which
                # read_response would otherwise swallow while waiting for a reply.
                connection.read_response(push_request=True)
                if self._last_error != "":
                    self.context.logger.info("configuration %s: listening to %s on redis %s", self.context.name,
                                             pattern, self._client.address)
                self._last_error = ""
                self._connected.set()
                backoff_s = _BACKOFF_FIRST_S
                while not self._closed.is_set():
                    if connection.can_read(timeout=_POLL_S):
                        message = connection.read_response(push_request=True)
                        try:
                            self._on_message(message, channel_prefix)
                        except Exception:  # one odd message must not end every subscription
                            self.context.logger.exception("configuration %s: handling %r failed",
                                                          self.context.name, message)
            except (redis.RedisError, OSError) as error:
                if not self._closed.is_set():
                    if self._last_error == "":  # once per outage; retries are quiet
                        self.context.logger.warning("configuration %s: redis %s subscription lost (%s); "
                                                    "reconnecting", self.context.name, self._client.address, error)
                    self._last_error = str(error) or type(error).__name__
            finally:
                self._connected.clear()
                connection.disconnect()
            self._closed.wait(backoff_s)
            backoff_s = min(backoff_s * 2, _BACKOFF_MAX_S)

    def _on_message(self, message: Any, channel_prefix: bytes) -> None:
        if not isinstance(message, list) or len(message) != 4 or message[0] != b"pmessage":
            return
        channel, event = message[2], message[3]
        if not self._hub.watching or not channel.startswith(channel_prefix):
            return
        redis_key = channel[len(channel_prefix):]
        key, group, label = parse_name(redis_key.decode("utf-8", "replace")[len(self._prefix):])
        if event in _DELETED_EVENTS:
            self._hub.publish([deleted_item(key, group, label)])
        elif event in _WRITTEN_EVENTS:
            try:
                stored = self._client.command("GET", redis_key)
            except ComponentError as error:  # a non-string under the prefix, or the server went away
                self.context.logger.warning("configuration %s: cannot read %r after %s: %s", self.context.name,
                                            redis_key, event, error)
                return
            if stored is None:  # deleted again since
                self._hub.publish([deleted_item(key, group, label)])
            else:
                value, version = _split(stored)
                self._hub.publish([ConfigItem(key=key, value=value, version=version, group=group, label=label)])

    # -- the interface ----------------------------------------------------------------------

    def _item(self, name: str, stored: bytes) -> ConfigItem:
        key, group, label = parse_name(name)
        value, version = _split(stored)
        return ConfigItem(key=key, value=value, version=version, group=group, label=label)

    def _scan(self) -> list[bytes]:
        keys: list[bytes] = []
        cursor: bytes | int = 0
        match = _glob_escape(self._prefix) + "*"
        while True:
            cursor, page = self._client.command("SCAN", cursor, "MATCH", match, "COUNT", _BATCH)
            keys.extend(page)
            if int(cursor) == 0:
                return list(dict.fromkeys(keys))  # SCAN may return a key twice

    def get(self, keys: Sequence[str], group: str = "", label: str = "") -> list[ConfigItem]:
        names = list(dict.fromkeys(storage_name(key, group, label) for key in keys))
        group, label = identity_of(group, label)
        if names:
            redis_keys: list[str | bytes] = [self._prefix + name for name in names]
        else:
            redis_keys = [key for key in self._scan()
                          if parse_name(key.decode("utf-8", "replace")[len(self._prefix):])[1:] == (group, label)]
        items = []
        for start in range(0, len(redis_keys), _BATCH):
            chunk = redis_keys[start:start + _BATCH]
            for redis_key, stored in zip(chunk, self._client.command("MGET", *chunk), strict=True):
                if stored is not None:  # missing, deleted since the scan, or not a string
                    text = redis_key if isinstance(redis_key, str) else redis_key.decode("utf-8", "replace")
                    items.append(self._item(text[len(self._prefix):], stored))
        return items

    def save(self, items: Sequence[ConfigItem]) -> None:
        names = []
        for item in items:
            names.append(storage_name(item.key, item.group, item.label))
            check_text("configuration value", item.value)
            if SEPARATOR in item.value:
                raise InvalidRequest(f"a configuration value in redis must not contain {SEPARATOR!r} "
                                     f"(it separates the value from its version): key {item.key!r}")
        if not names:
            return
        try:
            self._client.run_script(_SAVE, [self._prefix + name for name in names], [item.value for item in items])
        except redis.ResponseError as error:  # e.g. a non-string key under the prefix
            raise ComponentError(f"redis {self._client.address}: saving configuration failed: {error}") from None

    def delete(self, keys: Sequence[str], group: str = "", label: str = "") -> None:
        names = list(dict.fromkeys(storage_name(key, group, label) for key in keys))
        if names:
            self._client.command("DEL", *[self._prefix + name for name in names])

    def subscribe(self, keys: Sequence[str], on_change: Callable[[list[ConfigItem]], None]) -> ConfigWatch:
        for key in keys:
            storage_name(key)  # the same key rules as get and save
        self._start_listener()
        if not self._connected.wait(self.config.timeout_ms / 1000):
            raise ComponentError(f"redis {self._client.address}: cannot subscribe to keyspace notifications: "
                                 f"{self._last_error}")
        return self._hub.subscribe(keys, on_change)

    # -- lifecycle --------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        healthy, detail = self._client.health()
        if healthy and self._keyspace_problem:
            detail = f"{detail}; {self._keyspace_problem}"
        return healthy, detail

    def close(self) -> None:
        self._closed.set()
        with self._listener_lock:
            listener = self._listener
        if listener is not None:
            listener.join(_POLL_S * 5)
        self._hub.close()
        self._client.close()
