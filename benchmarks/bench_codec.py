"""
The codec measured: the standard library's C{json} against orjson and msgspec,
encoding and decoding the event shapes users send and the reply records
children send back, in one run, with every library's values checked against the
standard library's.

The dispatcher encodes each event once in the parent and decodes it in a child;
the child encodes each handler's result and the parent decodes the reply
records.  This script times each step per library on:

 - B{small}: a flat event of five keys (the usual case);
 - B{nested}: an order of 30 line items, about 2 KiB;
 - B{text}: 64 KiB of non-ASCII text;
 - B{blob}: a 1 MiB string (the payload sweep's largest event);
 - B{big ints}: integers beyond 64 bits, which a library must keep exact;
 - B{records}: a reply of 32 records, as a child sends under load.

Then the codec as adopted (C{encode_event}, C{decode_event}, C{decode_records})
against the same steps done by the standard library alone.  A library whose
values differ from the standard library's on a shape is marked so: it could not
be adopted for it, whatever its speed.

Run it from the project root::

    python -m benchmarks.bench_codec [--quick] [--json PATH]

Each figure is the best of several repeats (the machine is shared and noisy;
the best is the least disturbed), in microseconds per call.  Nothing here is a
pass or a miss.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import timeit
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from actordispatch._wire import codec as _codec
from actordispatch._wire.codec import (
    decode_event,
    decode_records,
    encode_event,
    encode_outcome_record,
    join_records,
)

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency of the package
    orjson = None  # type: ignore[assignment]
try:
    import msgspec.json
except ImportError:  # pragma: no cover - a dependency of the package
    msgspec = None  # type: ignore[assignment]


def shapes() -> dict[str, Any]:
    """
    The values measured, by name; C{None} stands for the reply records.
    """
    return {
        "small": {"kind": "order", "user": "u123", "amount": 42, "ok": True, "n": 7},
        "nested": {
            "kind": "batch",
            "items": [
                {
                    "id": i,
                    "name": f"item {i}",
                    "price": i * 1.25,
                    "attrs": {"colour": "red", "sizes": [1, 2, 3]},
                }
                for i in range(30)
            ],
        },
        "text": {"kind": "text", "data": "h\u00e9llo w\u00f6rld \u2603 " * 4096},
        "blob": {"kind": "blob", "data": "x" * (1 << 20)},
        "big ints": {"kind": "ids", "ids": [2**64 + i for i in range(20)]},
        "records": None,
    }


def _records() -> bytes:
    return join_records(
        [encode_outcome_record("ok", 1.25e-05, '{"n":1}') for _ in range(32)]
    )


def _stdlib_dumps(value: Any) -> bytes:
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode("utf-8")


def _stdlib_encode(value: Any) -> bytes:
    # What encode_event does, with the standard library's JSON underneath.
    return _stdlib_dumps(_codec._tag(value, "event"))


def libraries() -> dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]]:
    """
    Each library's encoder and decoder, by name; the standard library first.
    """
    out: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
        "json": (_stdlib_dumps, json.loads)
    }
    if orjson is not None:
        out["orjson"] = (orjson.dumps, orjson.loads)
    if msgspec is not None:
        out["msgspec"] = (msgspec.json.encode, msgspec.json.Decoder().decode)
    return out


def same(a: Any, b: Any) -> bool:
    """
    The same JSON values, types included (C{1} is not C{1.0}).
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def best_us(call: Callable[[], Any], budget: float, repeats: int) -> float:
    """
    The best of C{repeats} timings of C{call}, each about C{budget} seconds
    long, in microseconds per call.
    """
    timer = timeit.Timer(call)
    number, taken = timer.autorange()
    number = max(1, int(number * budget / max(taken, 1e-9)))
    return min(timer.repeat(repeat=repeats, number=number)) / number * 1e6


def measure(budget: float, repeats: int) -> dict[str, Any]:
    """
    Every library on every shape, then the codec as adopted.
    """
    libs = libraries()
    rows = []
    for name, value in shapes().items():
        data = _records() if value is None else _stdlib_dumps(value)
        expected = json.loads(data)
        for op in ("encode", "decode"):
            if op == "encode" and value is None:
                continue  # records are framed by hand, not by a library
            row: dict[str, Any] = {"shape": name, "bytes": len(data), "op": op}
            for lib, (dumps, loads) in libs.items():
                call: Callable[[], Any] = (
                    partial(dumps, value) if op == "encode" else partial(loads, data)
                )
                try:
                    result = call()
                    agrees = same(
                        json.loads(result) if op == "encode" else result, expected
                    )
                except Exception as e:
                    # Refused: orjson will not encode integers beyond 64 bits.
                    row[lib] = {"us": None, "same": False, "refused": repr(e)}
                    continue
                us = best_us(call, budget, repeats)
                row[lib] = {"us": us, "same": agrees}
            rows.append(row)
    return {"libraries": list(libs), "rows": rows, "adopted": adopted(budget, repeats)}


def adopted(budget: float, repeats: int) -> list[dict[str, Any]]:
    """
    The codec's own entry points against the same work done by the standard
    library alone (the tagging is the same; only the JSON underneath differs).
    """
    out = []
    records = _records()
    for name, value in shapes().items():
        if value is None:
            steps: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
                (
                    "decode_records",
                    lambda: decode_records(records, 32),
                    lambda: _codec._stdlib_loads(records),
                )
            ]
        else:
            data = encode_event(value)
            steps = [
                (
                    "encode_event",
                    partial(encode_event, value),
                    partial(_stdlib_encode, value),
                ),
                (
                    "decode_event",
                    partial(decode_event, data),
                    partial(_codec._stdlib_loads, data),
                ),
            ]
        for step, ours, stdlib in steps:
            a = best_us(ours, budget, repeats)
            b = best_us(stdlib, budget, repeats)
            out.append({"shape": name, "step": step, "us": a, "stdlib_us": b})
    return out


def report(figures: dict[str, Any], out: Any = sys.stdout) -> None:
    libs = figures["libraries"]
    head = f"{'shape':9} {'bytes':>9} {'op':6} " + " ".join(
        f"{lib + ' us':>12} {'x json':>7}" for lib in libs
    )
    print(
        "Libraries, best of the repeats (us per call; x json = json's time over it)",
        file=out,
    )
    print(head, file=out)
    for row in figures["rows"]:
        base = row["json"]["us"]
        cells = []
        for lib in libs:
            cell = row[lib]
            if cell["us"] is None:
                cells.append(f"{'refuses':>12} {'':7}")
                continue
            mark = "" if cell["same"] else " DIFFERS"
            cells.append(f"{cell['us']:12.2f} {base / cell['us']:6.2f}x{mark}")
        print(
            f"{row['shape']:9} {row['bytes']:9,d} {row['op']:6} " + " ".join(cells),
            file=out,
        )
    for lib in libs[1:]:
        for op in ("encode", "decode"):
            ratios = [
                r["json"]["us"] / r[lib]["us"]
                for r in figures["rows"]
                if r["op"] == op and r[lib]["same"]
            ]
            differs = [
                r["shape"]
                for r in figures["rows"]
                if r["op"] == op and not r[lib]["same"]
            ]
            line = f"{lib} {op}: median {statistics.median(ratios):.2f}x json"
            if differs:
                line += f"; differs or refuses on: {', '.join(differs)}"
            print(line, file=out)
    print(
        "\nThe codec as adopted (orjson encodes, msgspec decodes untagged JSON,",
        file=out,
    )
    print(
        "each with the standard library behind it) against the standard library alone",
        file=out,
    )
    print(
        f"{'shape':9} {'step':15} {'ours us':>10} {'stdlib us':>10} {'x':>7}", file=out
    )
    for row in figures["adopted"]:
        print(
            f"{row['shape']:9} {row['step']:15} {row['us']:10.2f} "
            f"{row['stdlib_us']:10.2f} {row['stdlib_us'] / row['us']:6.2f}x",
            file=out,
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_codec",
        description="json against orjson and msgspec on the dispatcher's shapes",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    budget, repeats = (0.002, 1) if args.quick else (0.04, 5)
    figures = measure(budget, repeats)
    report(figures)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
