"""`creditstream finance --month YYYY-MM`: the month's revenue report per currency (what was owed when it began,
sold, recognised, broken, refunded, owed at its end) and its recognised revenue by operation, from projections'
finance API (shared/finance.py says how value moves and is rounded)."""

from __future__ import annotations

from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from creditstream.connect import service_token, service_urls
from shared.scopes import Scope

FIGURES = ("deferred_opening", "sold", "recognised", "breakage", "refunded", "deferred_closing")


def money(cents: int) -> str:
    return f"{cents / 100:,.2f}" if cents >= 0 else f"-{-cents / 100:,.2f}"


def run(console: Console, month: str | None, account_id: str | None) -> int:
    token = service_token("creditstream-cli", audience="projections", scopes=[Scope.PROJECTIONS_FINANCE])
    if token is None:
        console.print("[red]No service key:[/] set SERVICE_JWT_PRIVATE_KEY, or DATA_DIR to where `up` keeps its key.")
        return 2
    params = {k: v for k, v in (("month", month), ("account_id", account_id)) if v}
    with httpx.Client(base_url=service_urls()["projections"], headers={"Authorization": f"Bearer {token}"},
                      timeout=30) as client:  # fmt: skip
        report = client.get("/api/admin/finance/revenue", params=params)
        if report.status_code != 200:
            console.print(f"[red]{report.status_code}[/] {report.text}", highlight=False)
            return 1
        operations = client.get("/api/admin/finance/revenue/by-operation", params=params).json()
    body: dict[str, Any] = report.json()
    whose = f" of account {account_id}" if account_id else ""
    table = Table(title=f"Revenue {body['month']}{whose}")
    table.add_column("currency")
    for figure in FIGURES:
        table.add_column(figure.replace("_", " "), justify="right")
    for row in body["currencies"]:
        table.add_row(row["currency"], *(money(int(row[f])) for f in FIGURES))
    console.print(table if body["currencies"] else f"Nothing sold or owed by the end of {body['month']}{whose}.")
    if operations["operations"]:
        by_operation = Table(title="Recognised by operation")
        for column in ("currency", "operation", "credits", "recognised"):
            by_operation.add_column(column, justify="left" if column in ("currency", "operation") else "right")
        for op in operations["operations"]:
            by_operation.add_row(op["currency"], op["operation"], f"{op['credits']:,}", money(int(op["recognised"])))
        console.print(by_operation)
    console.print(body["rounding"], style="dim", highlight=False)
    return 0
