"""Redis state in Dapr's layout, so a Dapr (or Layotto) sidecar on the same Redis reads what this
store writes and the reverse.

Each key is a hash: `data` (the value), `version` (a counter, the ETag) and `first-write` (present
once written with first-write concurrency). Writes and deletes are Lua scripts applying Dapr's ETag
rules on the server, with the TTL set in the same script, so a get or a set is one round trip.
A key holding a plain string (written by something else, e.g. `redis-cli set book1 100` in
Layotto's demo) reads with ETag "" and is replaced by the next write, as in Dapr.
Transactions are MULTI/EXEC of the same scripts, as Dapr runs them: Redis has no rollback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from host.components._redis import Arg, RedisClient, RedisSettings, Script, settings_from_layotto
from host.components.base import ComponentContext, key_prefix_from_layotto
from host.components.errors import ComponentError
from host.components.state._checks import check_key, checked, expected_version, mismatch, raise_collected
from host.components.state.base import BulkValue, DeleteItem, Operation, StateConfig, StateItem, StateValue
from host.lazy import lazy_module

if TYPE_CHECKING:
    import redis
else:
    redis = lazy_module("redis")  # redis-py is imported when a Redis component is first used (start-up time)

_MISMATCH = "ETAG_MISMATCH"

# KEYS[1] the key. ARGV[1] the expected version ("0": none), ARGV[2] the value, ARGV[3] "1" to flag
# the key first-write, ARGV[4] the TTL in seconds ("" keeps the current expiry, <= 0 removes it).
# Written when the key is absent, has no version, matches, or has no ETag and no first-write flag.
_PLAIN_STRINGS_REMEMBERED = 4096

_SET = Script("""
local key = KEYS[1]
local version = redis.pcall("HGET", key, "version")
if type(version) == "table" then
  redis.call("DEL", key)
  version = false
end
if version and version ~= "" and version ~= ARGV[1]
    and (ARGV[1] ~= "0" or redis.call("HEXISTS", key, "first-write") == 1) then
  return redis.error_reply("ETAG_MISMATCH")
end
if ARGV[3] == "1" then
  redis.call("HSET", key, "data", ARGV[2], "first-write", 0)
else
  redis.call("HSET", key, "data", ARGV[2])
end
local new = redis.call("HINCRBY", key, "version", 1)
if ARGV[4] ~= "" then
  if tonumber(ARGV[4]) > 0 then
    redis.call("EXPIRE", key, ARGV[4])
  else
    redis.call("PERSIST", key)
  end
end
return new
""")

# KEYS[1] the key, ARGV[1] the expected version ("0": any). Deleted when absent, not a hash,
# without a version, or matching.
_DELETE = Script("""
local version = redis.pcall("HGET", KEYS[1], "version")
if type(version) == "table" or not version or version == "" or ARGV[1] == "0" or version == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return redis.error_reply("ETAG_MISMATCH")
""")


class Config(RedisSettings, StateConfig):
    type: Literal["redis"]


def from_layotto(metadata: dict[str, str]) -> dict[str, Any]:
    return {**settings_from_layotto(metadata), **key_prefix_from_layotto(metadata)}


def _set_args(item: StateItem, expected: int) -> tuple[Arg, ...]:
    return (expected, item.value, "1" if item.concurrency == "first-write" else "0",
            "" if item.ttl_s is None else item.ttl_s)


def _set_command(item: StateItem, expected: int) -> tuple[Arg, ...]:
    return ("EVALSHA", _SET.sha, 1, item.key, *_set_args(item, expected))


def _delete_command(item: DeleteItem, expected: int) -> tuple[Arg, ...]:
    return ("EVALSHA", _DELETE.sha, 1, item.key, expected)


class Backend:
    """StateStore on Redis in Dapr's layout; every call one round trip (bulk calls one MULTI/EXEC)."""

    def __init__(self, config: Config, context: ComponentContext):
        self._client = RedisClient(config)
        self.address = config.address
        # Keys last seen as plain strings (read with one GET; a WRONGTYPE or a miss forgets them).
        self._plain_strings: set[str] = set()

    def _failure(self, item: StateItem | DeleteItem, error: Exception) -> ComponentError:
        if str(error).startswith(_MISMATCH):
            return mismatch(item.key, item.etag)
        return ComponentError(f"redis {self.address}: {error}")

    def _read_string(self, key: str) -> StateValue | None:
        """A key that is not a hash: a plain string someone else wrote has no version. Such keys
        are remembered (a bounded set), so reading them again costs one round trip, not two."""
        try:
            value = self._client.command_raw("GET", key)
        except redis.ResponseError as error:
            raise ComponentError(f"redis {self.address}: {key!r}: {error}") from None
        if value is None:
            return None
        if len(self._plain_strings) >= _PLAIN_STRINGS_REMEMBERED:
            self._plain_strings.clear()
        self._plain_strings.add(key)
        return StateValue(value, "")

    def _read_reply(self, key: str, reply: Any) -> StateValue | None:
        if isinstance(reply, redis.ResponseError):
            if not str(reply).startswith("WRONGTYPE"):
                raise ComponentError(f"redis {self.address}: {key!r}: {reply}")
            return self._read_string(key)
        data, version = reply
        if data is None and version is None:
            return None
        return StateValue(data or b"", version.decode() if version else "")

    def get(self, key: str) -> StateValue | None:
        check_key(key)
        if key in self._plain_strings:  # written by something else as a plain string: one GET
            try:
                value = self._client.command_raw("GET", key)
            except redis.ResponseError:  # no longer a string (we or a Dapr sidecar wrote it since)
                self._plain_strings.discard(key)
            else:
                if value is not None:
                    return StateValue(value, "")
                self._plain_strings.discard(key)
                return None
        # HMGET of the two fields a read needs: the same answer as Dapr's HGETALL, less to parse.
        try:
            reply = self._client.command_raw("HMGET", key, "data", "version")
        except redis.ResponseError as error:
            reply = error
        return self._read_reply(key, reply)

    def bulk_get(self, keys: Sequence[str]) -> list[BulkValue]:
        for key in keys:
            check_key(key)
        if not keys:
            return []
        # One round trip: MULTI/EXEC answers each HMGET in place (a WRONGTYPE among them too).
        replies = self._client.transaction([("HMGET", key, "data", "version") for key in keys])
        results: list[BulkValue] = []
        for key, reply in zip(keys, replies, strict=True):
            try:
                found = self._read_reply(key, reply)
            except ComponentError as error:
                results.append(BulkValue(key, None, None, str(error)))
                continue
            results.append(BulkValue(key, found.value, found.etag) if found else BulkValue(key, None, None))
        return results

    def set(self, item: StateItem) -> str:
        check_key(item.key)
        args = _set_args(item, expected_version(item.etag))
        try:
            return str(self._client.run_script(_SET, (item.key,), args))
        except redis.ResponseError as error:
            raise self._failure(item, error) from None

    def delete(self, item: DeleteItem) -> None:
        check_key(item.key)
        try:
            self._client.run_script(_DELETE, (item.key,), (expected_version(item.etag),))
        except redis.ResponseError as error:
            raise self._failure(item, error) from None

    def _run_scripts(self, items: Sequence[StateItem | DeleteItem], commands: list[tuple[Arg, ...]],
                     action: str) -> None:
        """The scripts in one MULTI/EXEC, loaded first inside it (EVALSHA cannot fall back to the
        source there: an unknown script fails in place while the others run)."""
        if not commands:
            return
        replies = self._client.transaction([("SCRIPT", "LOAD", _SET.source), ("SCRIPT", "LOAD", _DELETE.source),
                                            *commands])
        failures = [self._failure(item, reply) for item, reply in zip(items, replies[2:], strict=True)
                    if isinstance(reply, redis.ResponseError)]
        raise_collected(action, failures)

    def bulk_set(self, items: Sequence[StateItem]) -> None:
        work = checked(items)
        self._run_scripts(items, [_set_command(item, expected) for item, expected in work], "bulk set")

    def bulk_delete(self, items: Sequence[DeleteItem]) -> None:
        work = checked(items)
        self._run_scripts(items, [_delete_command(item, expected) for item, expected in work], "bulk delete")

    def transact(self, operations: Sequence[Operation]) -> None:
        work = checked([operation.item for operation in operations])
        commands = [_set_command(item, expected) if isinstance(item, StateItem) else _delete_command(item, expected)
                    for item, expected in work]
        self._run_scripts([item for item, _ in work], commands,
                          "transaction (Redis has no rollback: the other operations were applied)")

    def health(self) -> tuple[bool, str]:
        return self._client.health()

    def close(self) -> None:
        self._client.close()

