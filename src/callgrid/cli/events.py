"""`callgrid deliveries` and `callgrid dead-letters list|replay`: watch Event Grid delivery."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from callgrid.cli.common import AsJson, DataDir, PortOption, client_for, console, fail, print_json

dead_letters_app = typer.Typer(help="Dead-lettered events: list them, send them again.", no_args_is_help=True)

Limit = Annotated[int, typer.Option(help="How many, newest first.")]
Subscription = Annotated[str | None, typer.Option("--subscription", help="Only this subscription (its ARM id).")]


def register(app: typer.Typer) -> None:
    app.command()(deliveries)
    app.add_typer(dead_letters_app, name="dead-letters")


def _short_time(value: str | None) -> str:
    # 2026-01-02T03:04:05.1234567Z -> 03:04:05.123
    return "" if not value else value[11:23]


def _subscription_name(subscription_id: str | None) -> str:
    return (subscription_id or "").rstrip("/").rsplit("/", 1)[-1]


def deliveries(
    limit: Limit = 20,
    subscription: Subscription = None,
    status: Annotated[str | None, typer.Option(help="pending, delivered, dropped or deadLettered.")] = None,
    attempts: Annotated[bool, typer.Option("--attempts", help="Show every attempt.")] = False,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    port: PortOption = None,
) -> None:
    """Recent deliveries (Event Grid and callbacks) and their attempts."""
    try:
        rows: list[dict[str, Any]] = client_for(data_dir, port).deliveries(
            limit, subscription_id=subscription, status=status
        )["value"]
    except Exception as exc:
        fail(exc)
    if as_json:
        print_json(rows)
        return
    table = Table("kind", "subscription", "status", "attempts", "last", "next", "url", "event")
    for r in rows:
        last = f"{r['lastStatus'] or ''} {r['lastOutcome'] or ''}".strip()
        state = r["status"] + (f" ({r['reason']})" if r.get("reason") else "")
        table.add_row(
            r["kind"],
            _subscription_name(r["subscriptionId"]),
            state,
            f"{r['attempts']}/{r['maxAttempts']}",
            last,
            "in flight" if r["inFlight"] else _short_time(r["nextAttemptAt"]),
            r["url"],
            r["eventId"],
        )
        if attempts:
            for a in r["history"]:
                table.add_row(
                    "",
                    "",
                    f"[dim]#{a['attempt']} {_short_time(a['startedAt'])}[/dim]",
                    "",
                    f"[dim]{a['status'] or ''} {a['outcome']}[/dim]",
                    f"[dim]{a['durationMs']:.1f} ms[/dim]",
                    f"[dim]batch of {a['batchSize']}[/dim]" if a["batchSize"] > 1 else "",
                    f"[dim]{a['error'] or ''}[/dim]",
                )
    console.print(table)


@dead_letters_app.command("list")
def list_dead_letters(
    limit: Limit = 20,
    subscription: Subscription = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    port: PortOption = None,
) -> None:
    """Dead-lettered events: why, when, and where they were written."""
    try:
        rows: list[dict[str, Any]] = client_for(data_dir, port).dead_letters(limit, subscription_id=subscription)[
            "value"
        ]
    except Exception as exc:
        fail(exc)
    if as_json:
        print_json(rows)
        return
    table = Table("id", "subscription", "reason", "attempts", "last outcome", "written to", "replayed", "event")
    for r in rows:
        event = r["event"]
        attempts = event.get("deliveryAttempts", event.get("deliveryattempts"))
        outcome = event.get("lastDeliveryOutcome", event.get("lastdeliveryoutcome"))
        write = r["write"]
        written = write["location"] or f"{write['status']} {write['error'] or ''}".strip()
        table.add_row(
            r["id"],
            r["subscriptionName"],
            r["deadLetterReason"],
            str(attempts),
            str(outcome),
            written,
            _short_time(r["replayedAt"]),
            r["eventId"],
        )
    console.print(table)


@dead_letters_app.command("replay")
def replay_dead_letter(
    dead_letter_id: Annotated[str, typer.Argument(help="The dead letter's id (see `dead-letters list`).")],
    data_dir: DataDir = None,
    port: PortOption = None,
) -> None:
    """Send a dead-lettered event to its subscription again, as a new delivery."""
    try:
        result = client_for(data_dir, port).replay_dead_letter(dead_letter_id)
    except Exception as exc:
        fail(exc)
    delivery = result["delivery"]
    console.print(
        f"event [bold]{delivery['eventId']}[/bold] queued again for "
        f"[bold]{result['deadLetter']['subscriptionName']}[/bold] as delivery {delivery['id']}"
    )
