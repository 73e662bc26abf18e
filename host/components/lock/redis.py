"""Locks in Redis with Layotto's standalone layout: the key holds the owner and expires with the
lease (`SET key owner NX PX ms`); unlocking is one script that deletes the key only for its owner,
so a lock taken by Layotto and one taken by this host on the same Redis exclude each other."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from host.components._redis import RedisClient, RedisSettings, Script, settings_from_layotto
from host.components.base import ComponentContext, key_prefix_from_layotto
from host.components.lock.base import LockConfig, UnlockStatus, check_lock_request, lock_key
from host.lazy import lazy_module

if TYPE_CHECKING:
    import redis
else:
    redis = lazy_module("redis")  # redis-py is imported when a Redis component is first used (start-up time)

# -1: no such lock; -2: someone else's; 1: deleted. Layotto's script returns the same codes.
_UNLOCK = Script("""
local owner = redis.call('GET', KEYS[1])
if not owner then return -1 end
if owner ~= ARGV[1] then return -2 end
redis.call('DEL', KEYS[1])
return 1
""")
_UNLOCK_STATUS = {-1: UnlockStatus.LOCK_DOES_NOT_EXIST, -2: UnlockStatus.LOCK_BELONGS_TO_OTHERS,
                  1: UnlockStatus.SUCCESS}


class Config(RedisSettings, LockConfig):
    type: Literal["redis"]


def from_layotto(metadata: dict[str, str]) -> dict[str, Any]:
    return {**settings_from_layotto(metadata), **key_prefix_from_layotto(metadata)}


class Backend:
    def __init__(self, config: Config, context: ComponentContext):
        self.config = config
        self.context = context
        self._client = RedisClient(config)

    def _key(self, resource: str) -> str:
        return lock_key(self.config.key_prefix, self.context, resource)

    def try_lock(self, resource: str, owner: str, expire_s: int) -> bool:
        check_lock_request(resource, owner, expire_s)
        return self._client.command("SET", self._key(resource), owner, "NX", "PX", expire_s * 1000) is not None

    def unlock(self, resource: str, owner: str) -> UnlockStatus:
        """A script the server could not run (the key holds a non-string, say) is INTERNAL_ERROR,
        as in Layotto; an unreachable server raises ComponentError."""
        check_lock_request(resource, owner)
        try:
            reply = self._client.run_script(_UNLOCK, [self._key(resource)], [owner])
        except redis.ResponseError as error:
            self.context.logger.warning("lock %s: unlock of %r failed: %s", self.context.name, resource, error)
            return UnlockStatus.INTERNAL_ERROR
        return _UNLOCK_STATUS.get(reply, UnlockStatus.INTERNAL_ERROR)

    def health(self) -> tuple[bool, str]:
        return self._client.health()

    def close(self) -> None:
        self._client.close()
