"""Counters in Redis with Layotto's standalone layout: each key is a plain integer string that INCR
advances (GetNextId) and INCRBY advances by a whole segment (GetSegment), so ids stay unique across
every process sharing the server. `bigger_than` seeds are applied once at construction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from host.components._redis import RedisClient, RedisSettings, Script, settings_from_layotto
from host.components.base import ComponentContext
from host.components.errors import ComponentError
from host.components.sequencer.base import SequencerConfig, check_segment_size, sequencer_key
from host.components.sequencer.layotto import sequencer_fields_from_layotto
from host.lazy import lazy_module

if TYPE_CHECKING:
    import redis
else:
    redis = lazy_module("redis")  # redis-py is imported when a Redis component is first used (start-up time)

# Keep a current value >= the floor, else set the floor; atomic, so two hosts seeding at once cannot
# move a counter backwards. Returns the value the key holds afterwards.
_SEED = Script("""
local current = redis.call('GET', KEYS[1])
if current then
  if not string.match(current, '^%-?%d+$') then
    return redis.error_reply('ERR the stored value is not an integer: ' .. current)
  end
  if tonumber(current) >= tonumber(ARGV[1]) then return current end
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
""")


class Config(RedisSettings, SequencerConfig):
    type: Literal["redis"]


def from_layotto(metadata: dict[str, Any]) -> dict[str, Any]:
    return {**settings_from_layotto(metadata), **sequencer_fields_from_layotto(metadata)}


class Backend:
    def __init__(self, config: Config, context: ComponentContext):
        self.config = config
        self.context = context
        self._client = RedisClient(config)
        try:
            for key, floor in config.bigger_than.items():
                self._seed(key, floor)
        except BaseException:
            self._client.close()
            raise

    def _key(self, key: str) -> str:
        return sequencer_key(self.config.key_prefix, self.context, key)

    def _seed(self, key: str, floor: int) -> None:
        try:
            self._client.run_script(_SEED, [self._key(key)], [floor])
        except redis.ResponseError as error:
            raise ComponentError(f"sequencer {self.context.name}: cannot seed {key!r} "
                                 f"(bigger_than {floor}): {error}") from None

    def next_id(self, key: str) -> int:
        return int(self._client.command("INCR", self._key(key)))

    def segment(self, key: str, size: int) -> tuple[int, int]:
        check_segment_size(size)
        last = int(self._client.command("INCRBY", self._key(key), size))
        return last - size + 1, last

    def health(self) -> tuple[bool, str]:
        return self._client.health()

    def close(self) -> None:
        self._client.close()
