"""Header maps: get/set pairs, get/add/replace/remove one value, serialized size."""

from __future__ import annotations

from abi.codes import MapType, Status
from abi.imports._registry import ImportGroup
from abi.limits import charge_map, entry_cost, map_cost
from abi.maps import HeaderList, decode_map, encode_map

hostcall = ImportGroup(pure=True)

_MAX_MAP_TYPE = max(MapType)
_REQUEST_HEADERS = int(MapType.HTTP_REQUEST_HEADERS)


def _map(vm, map_type: int) -> HeaderList | int:
    stream = vm.stream
    # The request headers during a stream callback: by far the most read map, looked up first.
    if map_type == _REQUEST_HEADERS and stream is not None:
        return stream.request_headers
    if map_type > _MAX_MAP_TYPE:
        return Status.BAD_ARGUMENT
    if vm.call_maps:
        received = vm.call_maps.get(map_type)  # maps 4-7, in an http/gRPC call callback
        if received is not None:
            return received
    if stream is None:
        return Status.NOT_FOUND
    if map_type == MapType.HTTP_REQUEST_TRAILERS:
        return stream.request_trailers
    if map_type == MapType.HTTP_RESPONSE_HEADERS:
        return stream.response.headers
    if map_type == MapType.HTTP_RESPONSE_TRAILERS:
        return stream.response.trailers
    return Status.NOT_FOUND


@hostcall("iii")
def proxy_get_header_map_pairs(vm, map_type: int, ptr_ptr: int, size_ptr: int) -> int:
    pairs = _map(vm, map_type)
    if isinstance(pairs, int):
        return pairs
    vm.return_bytes(encode_map(pairs), ptr_ptr, size_ptr)
    return Status.OK


@hostcall("iii")
def proxy_set_header_map_pairs(vm, map_type: int, ptr: int, size: int) -> int:
    pairs = _map(vm, map_type)
    if isinstance(pairs, int):
        return pairs
    try:
        new_pairs = decode_map(vm.guest.read(ptr, size))
    except ValueError:
        return Status.BAD_ARGUMENT
    new_pairs = [(k.lower(), v) for k, v in new_pairs]
    charge_map(vm, pairs, map_cost(new_pairs) - map_cost(pairs), len(new_pairs) - len(pairs))
    pairs[:] = new_pairs
    return Status.OK


@hostcall("ii")
def proxy_get_header_map_size(vm, map_type: int, size_ptr: int) -> int:
    pairs = _map(vm, map_type)
    if isinstance(pairs, int):
        return pairs
    vm.guest.write_u32(size_ptr, len(encode_map(pairs)))
    return Status.OK


@hostcall("iiiii")
def proxy_get_header_map_value(vm, map_type: int, key_ptr: int, key_size: int, ptr_ptr: int, size_ptr: int) -> int:
    pairs = _map(vm, map_type)
    if isinstance(pairs, int):
        return pairs
    key = vm.guest.read(key_ptr, key_size).decode("utf-8", "surrogateescape").lower()
    values = [v for k, v in pairs if k == key]
    if not values:
        return Status.NOT_FOUND
    value = values[0] if len(values) == 1 else ",".join(values)
    vm.return_bytes(value.encode("utf-8", "surrogateescape"), ptr_ptr, size_ptr)
    return Status.OK


@hostcall("iiiii")
def proxy_add_header_map_value(vm, map_type: int, key_ptr: int, key_size: int, value_ptr: int, value_size: int) -> int:
    pairs = _map(vm, map_type)
    if isinstance(pairs, int):
        return pairs
    key, value = vm.read_str(key_ptr, key_size).lower(), vm.read_str(value_ptr, value_size)
    charge_map(vm, pairs, entry_cost(key, value), 1)
    pairs.append((key, value))
    return Status.OK


@hostcall("iiiii")
def proxy_replace_header_map_value(vm, map_type: int, key_ptr: int, key_size: int, value_ptr: int,
                                   value_size: int) -> int:
    pairs = _map(vm, map_type)
    if isinstance(pairs, int):
        return pairs
    key = vm.read_str(key_ptr, key_size).lower()
    value = vm.read_str(value_ptr, value_size)
    positions = [i for i, (k, _) in enumerate(pairs) if k == key]
    if not positions:
        charge_map(vm, pairs, entry_cost(key, value), 1)
        pairs.append((key, value))
        return Status.OK
    charge_map(vm, pairs, entry_cost(key, value) - sum(entry_cost(*pairs[i]) for i in positions), 1 - len(positions))
    pairs[positions[0]] = (key, value)  # keep the first occurrence's place, drop the others
    for i in reversed(positions[1:]):
        del pairs[i]
    return Status.OK


@hostcall("iii")
def proxy_remove_header_map_value(vm, map_type: int, key_ptr: int, key_size: int) -> int:
    pairs = _map(vm, map_type)
    if isinstance(pairs, int):
        return pairs
    key = vm.read_str(key_ptr, key_size).lower()
    kept = [(k, v) for k, v in pairs if k != key]
    if len(kept) != len(pairs):
        charge_map(vm, pairs, map_cost(kept) - map_cost(pairs), 0)
    pairs[:] = kept
    return Status.OK
