"""
Handlers for the routing-and-control example (C{docs/examples/control.py}): a
shop checks an order (and may veto it), places it, and places its invoice as a
follow-up event.
"""

from __future__ import annotations

import os
from typing import Any

from actordispatch import Veto

#: Customers the shop refuses.
BANNED = frozenset({"mallory"})


def check_customer(event: dict[str, Any]) -> Any:
    """
    Phase C{check} (sequential, may veto), first by priority: refuse banned
    customers.
    """
    if event["customer"] in BANNED:
        return Veto(f"customer {event['customer']} is banned")
    return "customer ok"


def check_stock(event: dict[str, Any]) -> Any:
    """
    Phase C{check}, after L{check_customer}: refuse empty orders.
    """
    if not event["items"]:
        return Veto("nothing to ship")
    return f"{len(event['items'])} item(s) in stock"


async def place_order(event: dict[str, Any]) -> dict[str, Any]:
    """
    Phase C{place}: fire the invoice as a follow-up event and wait for it.
    """
    from actordispatch.children import fire_event

    invoice = await fire_event(
        {"customer": event["customer"], "total": sum(event["items"].values())},
        kind="invoice",
        customer=event["customer"],
    )
    return {
        "placed": True,
        "invoice": invoice.outcomes[0]["value"] if invoice.ok else None,
        "pid": os.getpid(),
    }


def write_invoice(event: dict[str, Any]) -> str:
    """
    Phase C{place}, for the follow-up C{kind="invoice"} events.
    """
    return f"invoice for {event['customer']}: {event['total']:.2f}"


def notify_staff(event: dict[str, Any]) -> str:
    """
    Phase C{after}: for orders of staff members (matched by C{Glob}).
    """
    return f"staff order from {event['customer']}"
