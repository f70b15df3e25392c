"""
The TOML configuration of a dispatcher service (read with the standard library's
C{tomllib}).

Example::

    [dispatcher]
    keywords = ["event_type", "user", "role"]
    phases = ["before", "during", "after"]     # optional; a phase may be a table:
    # { name = "check", sequential = true, veto = true, on_error = "abort" }
    max_in_flight = 8                          # optional, and so on below
    order_by = "user"
    max_queue = 10000
    on_overload = "fail"
    drain_timeout = 30
    skip_after_failure = false
    max_depth = 8                              # follow-up events' depth limit

    [pools.default]             # the local pool; more [pools.NAME] tables add pools
    size = 2
    default_timeout = 60
    max_batch = 64
    recycle_after = 0
    max_rss = 536870912
    kill_grace = 1.0
    child_env = { LANG = "C.UTF-8" }

    [pools.remote]              # handlers on worker hosts behind RabbitMQ
    amqp = "amqp://user:password@broker.example:5672/%2F"
    namespace = "myapp"         # optional: default_timeout, reply_grace,
    tls = { ca = "ca.pem", certificate = "me.pem", key = "me.key" }  # connect_timeout
    start_timeout = 30          # seconds to wait at start for the first connection

    [[handlers]]
    handler = "myapp.handlers:notify_admin"
    phase = "during"
    match = { role = "user" }
    timeout = 5                 # optional: max_calls, retries, pool, expires,
                                # owner, priority as well

    [listen]                    # the AMP endpoint for external processes
    endpoints = ["tcp:8750:interface=127.0.0.1"]

    [metrics]                   # Prometheus, over HTTP
    endpoint = "tcp:9464:interface=127.0.0.1"

Every mistake is reported as a L{ConfigError} naming the file, the key and what is
wrong, before anything starts.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from attrs import field, frozen

from actordispatch._core.errors import ActorDispatchError
from actordispatch._core.match import from_table
from actordispatch._core.options import (
    OptionError,
    check_expires,
    check_keyword_name,
    check_max_calls,
    check_max_depth,
    check_max_event_size,
    check_max_in_flight,
    check_max_queue,
    check_on_overload,
    check_order_by,
    check_retries,
    check_timeout,
)
from actordispatch._core.phase import Phase
from actordispatch._core.sandbox import SandboxProfile
from actordispatch._wire.commands import HANDLER_NAME


class ConfigError(ActorDispatchError, ValueError):
    """
    A configuration file is unreadable or wrong; the message names the file, the
    key and the problem.
    """


_DISPATCHER_KEYS: dict[str, type | tuple[type, ...]] = {
    "keywords": list,
    "phases": list,
    "max_in_flight": int,
    "order_by": str,
    "max_queue": int,
    "on_overload": str,
    "drain_timeout": (int, float),
    "skip_after_failure": bool,
    "trace": bool,
    "max_event_size": int,
    "max_depth": int,
}
_POOL_KEYS: dict[str, type | tuple[type, ...]] = {
    "size": int,
    "standby": int,
    "default_timeout": (int, float),
    "max_batch": int,
    "max_batch_bytes": int,
    "recycle_after": int,
    "max_rss": int,
    "max_result_size": int,
    "max_reply_size": int,
    "kill_grace": (int, float),
    "output_cap": int,
    "child_env": dict,
    "crash_limit": int,
    "crash_window": (int, float),
    "quarantine_base": (int, float),
    "quarantine_cap": (int, float),
    "sandbox": dict,
    "fork_server": bool,
}
_AMQP_POOL_KEYS: dict[str, type | tuple[type, ...]] = {
    "amqp": str,
    "namespace": str,
    "default_timeout": (int, float),
    "reply_grace": (int, float),
    "connect_timeout": (int, float),
    "start_timeout": (int, float),
    "max_reply_size": int,
    "tls": dict,
}
_AMQP_TLS_KEYS: dict[str, type | tuple[type, ...]] = {
    "ca": str,
    "certificate": str,
    "key": str,
    "hostname": str,
}
_HANDLER_KEYS: dict[str, type | tuple[type, ...]] = {
    "handler": str,
    "phase": str,
    "match": dict,
    "timeout": (int, float),
    "max_calls": int,
    "retries": int,
    "pool": str,
    "expires": (int, float),
    "owner": str,
    "priority": int,
}
_PHASE_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "sequential": bool,
    "veto": bool,
    "on_error": str,
}
_LISTEN_KEYS: dict[str, type | tuple[type, ...]] = {
    "endpoints": list,
    "insecure": bool,
    "max_in_flight_per_connection": int,
    "tls": dict,
}
_METRICS_KEYS: dict[str, type | tuple[type, ...]] = {"endpoint": str}

#: The dispatcher's rules for the C{[dispatcher]} keys that have one beyond
#: their type (C{order_by} also needs the keywords).
_DISPATCHER_RULES: dict[str, Callable[[Any], object]] = {
    "on_overload": check_on_overload,
    "max_in_flight": check_max_in_flight,
    "max_queue": check_max_queue,
    "max_event_size": check_max_event_size,
    "max_depth": check_max_depth,
}
#: The same for a C{[[handlers]]} entry.
_HANDLER_RULES: dict[str, Callable[[Any], object]] = {
    "max_calls": check_max_calls,
    "retries": check_retries,
    "timeout": check_timeout,
    "expires": check_expires,
}


@frozen
class HandlerConfig:
    """
    One C{[[handlers]]} entry.
    """

    handler: str
    phase: str
    match: dict[str, Any] = field(factory=dict)
    options: dict[str, Any] = field(factory=dict)


@frozen
class ServiceConfig:
    """
    A checked configuration.

    @ivar dispatcher: keyword arguments for C{EventDispatcher} (keywords and
        phases included).
    @ivar pools: pool name to keyword arguments for C{AmpoulePool}.
    @ivar handlers: the handlers to register at start, in order.
    @ivar listen: the C{[listen]} table (endpoints and options), or empty.
    @ivar metrics_endpoint: where to serve Prometheus metrics, if anywhere.
    @ivar source: the file it came from.
    """

    dispatcher: dict[str, Any]
    pools: dict[str, dict[str, Any]]
    handlers: tuple[HandlerConfig, ...]
    listen: dict[str, Any]
    metrics_endpoint: str | None
    source: str


def _check_table(
    where: str, table: Any, known: Mapping[str, type | tuple[type, ...]], fail: Any
) -> dict[str, Any]:
    if not isinstance(table, dict):
        fail(where, f"must be a table, not {type(table).__name__}")
    for key, value in table.items():
        if key not in known:
            fail(f"{where}.{key}", f"unknown key (known: {', '.join(sorted(known))})")
        expected = known[key]
        if isinstance(value, bool) and expected in (int, (int, float)):
            fail(f"{where}.{key}", f"must be a number, not {value!r}")
        if not isinstance(value, expected):
            names = (
                " or ".join(t.__name__ for t in expected)
                if isinstance(expected, tuple)
                else expected.__name__
            )
            fail(f"{where}.{key}", f"must be {names}, not {value!r}")
    return dict(table)


def pool_arguments(settings: Mapping[str, Any]) -> dict[str, Any]:
    """
    Keyword arguments for C{AmpoulePool} from a checked C{[pools.NAME]} (or
    C{[pool]}) table.
    """
    arguments = dict(settings)
    sandbox = arguments.pop("sandbox", None)
    if sandbox is not None:
        arguments["sandbox"] = SandboxProfile(**sandbox)
    return arguments


def _check_local_pool(where: str, pool: dict[str, Any], fail: Any) -> None:
    for key in ("size", "max_batch"):
        if key in pool and pool[key] < 1:
            fail(f"{where}.{key}", f"must be at least 1, not {pool[key]!r}")
    if pool.get("standby", 0) < 0:
        fail(f"{where}.standby", f"must be 0 or more, not {pool['standby']!r}")
    for key in ("default_timeout", "kill_grace"):
        if key in pool and pool[key] <= 0:
            fail(f"{where}.{key}", f"must be positive, not {pool[key]!r}")
    for key, value in pool.get("child_env", {}).items():
        if not isinstance(value, str):
            fail(f"{where}.child_env.{key}", f"must be a string, not {value!r}")
    if "sandbox" in pool:
        try:
            SandboxProfile(**pool["sandbox"])
        except (TypeError, ValueError) as e:
            fail(f"{where}.sandbox", str(e))


def _check_tls(where: str, url: str, table: Any, fail: Any) -> Any:
    # A client TLS table, checked down to reading its files.
    from actordispatch._amqp.link import BrokerAddress, ClientTLS

    tls = None
    if table is not None:
        tls = ClientTLS(**_check_table(f"{where}.tls", table, _AMQP_TLS_KEYS, fail))
    try:
        address = BrokerAddress.parse(url, tls)
    except ValueError as e:
        fail(f"{where}.amqp", str(e))
    if address.tls is not None:
        try:
            address.tls.options(address.host)
        except Exception as e:  # unreadable files, bad PEM, key not matching
            fail(f"{where}.tls", f"cannot use the TLS files: {e}")
    return tls


def _check_namespace(where: str, table: dict[str, Any], fail: Any) -> None:
    from actordispatch._amqp.wire import check_namespace

    try:
        check_namespace(table.get("namespace", "actordispatch"))
    except ValueError as e:
        fail(f"{where}.namespace", str(e))


def _check_amqp_pool(where: str, pool: dict[str, Any], fail: Any) -> None:
    # The same checks the pool makes, reported against the file and key.
    _check_tls(where, pool["amqp"], pool.get("tls"), fail)
    _check_namespace(where, pool, fail)
    for key in (
        "default_timeout",
        "reply_grace",
        "connect_timeout",
        "start_timeout",
        "max_reply_size",
    ):
        if key in pool and pool[key] <= 0:
            fail(f"{where}.{key}", f"must be positive, not {pool[key]!r}")


def _option(where: str, fail: Any, check: Callable[..., Any], *args: Any) -> None:
    """
    Check an option with the rule the dispatcher applies (see
    L{actordispatch._core.options}), reporting a mistake against C{where}.
    """
    try:
        check(*args)
    except OptionError as e:
        fail(where, e.problem)


def _match_value(where: str, value: Any, fail: Any) -> Any:
    """
    A match spec value from TOML: a single value, or an operator as a table of
    one key (see L{from_table}).
    """
    try:
        return from_table(value)
    except ValueError as e:
        fail(where, str(e))


def _phase(where: str, entry: Any, fail: Callable[[str, str], NoReturn]) -> Phase:
    """
    One entry of C{dispatcher.phases}: a name, or a table with a C{name} and
    the options of L{Phase}.
    """
    if isinstance(entry, str) and entry:
        return Phase(entry)
    if not isinstance(entry, dict):
        fail(where, f"{entry!r} is neither a phase name nor a table")
    table = _check_table(where, entry, _PHASE_KEYS, fail)
    if "name" not in table:
        fail(f"{where}.name", "missing")
    try:
        return Phase(**table)
    except ValueError as e:
        fail(where, str(e))


def _load_tables(
    text: str, source: str, tables: tuple[str, ...]
) -> tuple[dict[str, Any], Callable[[str, str], NoReturn]]:
    """
    The TOML document in C{text}, whose top-level tables must be among
    C{tables}, and the function that reports a mistake in it.
    """

    def fail(key: str, problem: str) -> NoReturn:
        raise ConfigError(f"{source}: {key}: {problem}")

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    for key in data:
        if key not in tables:
            fail(key, f"unknown table (known: {', '.join(tables)})")
    return data, fail


def parse_config(text: str, source: str = "<config>") -> ServiceConfig:
    """
    Check a configuration given as TOML text.

    @raise ConfigError: naming C{source}, the key and the problem.
    """

    data, fail = _load_tables(
        text, source, ("dispatcher", "pools", "handlers", "listen", "metrics")
    )

    dispatcher = _check_table(
        "dispatcher", data.get("dispatcher", {}), _DISPATCHER_KEYS, fail
    )
    keywords = dispatcher.pop("keywords", None)
    if keywords is None:
        fail("dispatcher.keywords", "missing: list the match keywords")
    assert keywords is not None
    for index, keyword in enumerate(keywords):
        _option(f"dispatcher.keywords[{index}]", fail, check_keyword_name, keyword)
    declared = dispatcher.pop("phases", ["before", "during", "after"])
    if not declared:
        fail("dispatcher.phases", "must be a non-empty list of names or tables")
    specs = [
        _phase(f"dispatcher.phases[{index}]", entry, fail)
        for index, entry in enumerate(declared)
    ]
    phases = [spec.name for spec in specs]
    if len(set(phases)) != len(phases):
        fail("dispatcher.phases", f"names must be distinct: {phases!r}")
    for key, check in _DISPATCHER_RULES.items():
        if key in dispatcher:
            _option(f"dispatcher.{key}", fail, check, dispatcher[key])
    if "order_by" in dispatcher:
        _option(
            "dispatcher.order_by",
            fail,
            check_order_by,
            dispatcher["order_by"],
            keywords,
        )
    dispatcher["allowed_match_spec_keywords"] = tuple(keywords)
    dispatcher["phases"] = tuple(
        spec if spec != Phase(spec.name) else spec.name for spec in specs
    )

    pools_table = data.get("pools", {})
    if not isinstance(pools_table, dict):
        fail("pools", "must be a table of pools")
    pools: dict[str, dict[str, Any]] = {"default": {}} | {
        name: _check_table(
            f"pools.{name}",
            table,
            _AMQP_POOL_KEYS
            if isinstance(table, dict) and "amqp" in table and name != "default"
            else _POOL_KEYS,
            fail,
        )
        for name, table in pools_table.items()
    }
    for name, pool in pools.items():
        if "amqp" in pool:
            _check_amqp_pool(f"pools.{name}", pool, fail)
        else:
            _check_local_pool(f"pools.{name}", pool, fail)

    handlers_list = data.get("handlers", [])
    if not isinstance(handlers_list, list):
        fail("handlers", "must be an array of tables ([[handlers]])")
    handlers = []
    for index, entry in enumerate(handlers_list):
        where = f"handlers[{index}]"
        entry = _check_table(where, entry, _HANDLER_KEYS, fail)
        for required in ("handler", "phase"):
            if required not in entry:
                fail(f"{where}.{required}", "missing")
        if not HANDLER_NAME.match(entry["handler"]):
            fail(
                f"{where}.handler",
                f"{entry['handler']!r} is not 'package.module:attribute'",
            )
        if entry["phase"] not in phases:
            fail(
                f"{where}.phase",
                f"unknown phase {entry['phase']!r}; phases are {phases}",
            )
        match = dict(entry.get("match", {}))
        for key, value in match.items():
            if key not in keywords:
                fail(f"{where}.match.{key}", f"not one of the keywords {keywords}")
            match[key] = _match_value(f"{where}.match.{key}", value, fail)
        if entry.get("pool", "default") not in pools:
            fail(f"{where}.pool", f"unknown pool {entry['pool']!r}")
        for key, check in _HANDLER_RULES.items():
            if key in entry:
                _option(f"{where}.{key}", fail, check, entry[key])
        options: dict[str, Any] = {
            k: entry[k]
            for k in (
                "timeout",
                "max_calls",
                "retries",
                "pool",
                "expires",
                "owner",
                "priority",
            )
            if k in entry
        }
        handlers.append(
            HandlerConfig(entry["handler"], entry["phase"], dict(match), options)
        )

    listen = _check_table("listen", data.get("listen", {}), _LISTEN_KEYS, fail)
    for index, endpoint in enumerate(listen.get("endpoints", [])):
        if not isinstance(endpoint, str) or ":" not in endpoint:
            fail(
                f"listen.endpoints[{index}]", f"{endpoint!r} is not an endpoint string"
            )
    metrics = _check_table("metrics", data.get("metrics", {}), _METRICS_KEYS, fail)
    return ServiceConfig(
        dispatcher=dispatcher,
        pools=pools,
        handlers=tuple(handlers),
        listen=listen,
        metrics_endpoint=metrics.get("endpoint"),
        source=source,
    )


def load_config(path: str | Path) -> ServiceConfig:
    """
    Read and check the configuration file at C{path}.

    @raise ConfigError: naming the file, the key and the problem.
    """
    return parse_config(_read(path), str(path))


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: {e}") from None


_WORKER_KEYS: dict[str, type | tuple[type, ...]] = {
    "amqp": str,
    "namespace": str,
    "handlers": list,
    "prefetch": int,
    "name": str,
    "tls": dict,
}


@frozen
class WorkerConfig:
    """
    A checked worker host configuration (C{actordispatch worker --config}).

    @ivar amqp: the broker URL, if the file gives it.
    @ivar handlers: the handlers to serve.
    @ivar tls: keyword arguments for C{ClientTLS}, if any.
    @ivar pool: keyword arguments for the local C{AmpoulePool} (the keys of a
        C{[pools.NAME]} table, sandbox included).
    """

    amqp: str | None
    namespace: str
    handlers: tuple[str, ...]
    prefetch: int | None
    name: str | None
    tls: dict[str, Any] | None
    pool: dict[str, Any]
    source: str


def parse_worker_config(text: str, source: str = "<config>") -> WorkerConfig:
    """
    Check a worker host configuration given as TOML text::

        [worker]
        amqp = "amqps://broker.example:5671/%2F"   # else $ACTORDISPATCH_AMQP_URL
        namespace = "myapp"
        handlers = ["myapp.handlers:notify_admin"]
        prefetch = 8
        tls = { ca = "ca.pem", certificate = "worker-1.pem", key = "worker-1.key" }

        [pool]                  # the local children, as a [pools.NAME] table
        size = 4
        max_rss = 536870912
        sandbox = { address_space = 1073741824, deny_network = true }

    @raise ConfigError: naming C{source}, the key and the problem.
    """

    data, fail = _load_tables(text, source, ("worker", "pool"))
    worker = _check_table("worker", data.get("worker", {}), _WORKER_KEYS, fail)
    handlers = worker.get("handlers", [])
    for index, name in enumerate(handlers):
        if not isinstance(name, str) or not HANDLER_NAME.match(name):
            fail(
                f"worker.handlers[{index}]",
                f"{name!r} is not 'package.module:attribute'",
            )
    if "prefetch" in worker and worker["prefetch"] < 1:
        fail("worker.prefetch", f"must be at least 1, not {worker['prefetch']!r}")
    if "amqp" in worker:
        _check_tls("worker", worker["amqp"], worker.get("tls"), fail)
    elif "tls" in worker:
        _check_table("worker.tls", worker["tls"], _AMQP_TLS_KEYS, fail)
    _check_namespace("worker", worker, fail)
    pool = _check_table("pool", data.get("pool", {}), _POOL_KEYS, fail)
    _check_local_pool("pool", pool, fail)
    return WorkerConfig(
        amqp=worker.get("amqp"),
        namespace=worker.get("namespace", "actordispatch"),
        handlers=tuple(handlers),
        prefetch=worker.get("prefetch"),
        name=worker.get("name"),
        tls=worker.get("tls"),
        pool=pool,
        source=source,
    )


def load_worker_config(path: str | Path) -> WorkerConfig:
    """
    Read and check the worker host configuration file at C{path}.

    @raise ConfigError: naming the file, the key and the problem.
    """
    return parse_worker_config(_read(path), str(path))
