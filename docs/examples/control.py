"""
Routing and control, runnable: ``python docs/examples/control.py``.

A shop's dispatcher: match operators route orders, a sequential phase checks
them in priority order and may veto them, a handler places the invoice as a
follow-up event and waits for it, and ``explain()`` says who an event would
reach.  Every handler runs in a child process.  The test suite runs ``main``.
"""

from twisted.internet import defer, task

from actordispatch import EventDispatcher, Glob, In, Not, Phase

HANDLERS = "actordispatch.examples.orders:"


@defer.inlineCallbacks
def main(reactor, out=print):
    d = EventDispatcher(
        allowed_match_spec_keywords=("kind", "customer"),
        phases=(Phase("check", sequential=True, veto=True), "place", "after"),
        pool_size=2,
    )
    add = d.add_event_handler
    yield add(HANDLERS + "check_stock", "check", kind="order")
    yield add(HANDLERS + "check_customer", "check", kind="order", priority=10)
    yield add(HANDLERS + "place_order", "place", kind="order")
    yield add(HANDLERS + "write_invoice", "place", kind=In("invoice", "credit"))
    yield add(
        HANDLERS + "notify_staff",
        "after",
        kind="order",
        customer=Glob("staff_*"),
    )
    yield add(
        HANDLERS + "check_customer", "after", customer=Not("mallory"), max_calls=1
    )
    yield d.start()
    out(str(d.explain(kind="order", customer="staff_ann")))
    results = []
    for customer, items in [
        ("staff_ann", {"book": 12.5, "pen": 1.25}),
        ("mallory", {"book": 12.5}),
        ("bob", {}),
    ]:
        result = yield d.fire_event(
            {"customer": customer, "items": items}, kind="order", customer=customer
        )
        results.append(result)
        out(f"order from {customer}:")
        for o in result.outcomes:
            name = o.handler.rpartition(":")[2]
            said = o.veto and f"VETO {o.veto}" or o.value or o.error_message
            out(f"  {o.phase:>5} {name:<14} {o.status:<7} {said}")
    yield d.stop()
    return results


if __name__ == "__main__":
    task.react(lambda reactor: main(reactor).addCallback(lambda _: None))
