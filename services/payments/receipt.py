"""A transaction's receipt as a printable HTML page: what was bought, for how much, when, and what a refund gave
back. Rendering only: every value is escaped, and the page loads nothing (its CSP says so)."""

from __future__ import annotations

from datetime import datetime
from html import escape

from services.payments.domain import Status, Transaction

# The page needs nothing but its own inline style: no script, no image, no request.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; color: #111; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; } table { width: 100%; border-collapse: collapse; margin: 1rem 0; }
th, td { text-align: left; padding: .4rem .3rem; border-bottom: 1px solid #ddd; } td.n, th.n { text-align: right; }
.muted { color: #555; } .refund { color: #8a1c1c; } @media print { a { color: inherit; } }
"""


def money(cents: int, currency: str) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100:,}.{abs(cents) % 100:02d} {escape(currency.upper())}"


def when(moment: datetime) -> str:
    return escape(moment.strftime("%Y-%m-%d %H:%M UTC"))


def render(tx: Transaction, *, receipt_url: str | None = None) -> str:
    refund = tx.metadata.get("refund")
    reason = refund.get("reason") if isinstance(refund, dict) else None
    rows = [
        f"<tr><td>{escape(tx.description)}</td><td class=n>{tx.credits:,} credits</td>"
        f"<td class=n>{money(tx.amount_cents, tx.currency)}</td></tr>"
    ]
    if tx.refunded_cents:
        rows.append(
            f"<tr class=refund><td>Refund on {when(tx.updated_at)}{' · ' + escape(str(reason)) if reason else ''}</td>"
            f"<td class=n>-{tx.credits_clawed_back:,} credits</td>"
            f"<td class=n>{money(-tx.refunded_cents, tx.currency)}</td></tr>"
        )
    paid = tx.amount_cents - tx.refunded_cents
    stripe = (
        f'<p>Stripe\'s receipt: <a href="{escape(receipt_url, quote=True)}">{escape(receipt_url)}</a></p>'
        if receipt_url and receipt_url.startswith("https://") else ""
    )  # fmt: skip
    status = "Refunded" if tx.status is Status.REFUNDED else tx.status.value.capitalize()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Receipt {escape(tx.id)}</title><style>{STYLE}</style></head>
<body>
<h1>creditstream · receipt</h1>
<p class="muted">Transaction {escape(tx.id)} · {when(tx.created_at)} · {escape(status)}</p>
<table>
<thead><tr><th scope="col">Item</th><th scope="col" class=n>Credits</th><th scope="col" class=n>Amount</th></tr></thead>
<tbody>{"".join(rows)}</tbody>
<tfoot><tr><th scope="row" colspan="2">Total paid</th><td class=n><strong>{money(paid, tx.currency)}</strong></td>
</tr></tfoot>
</table>
<p>Credits granted: <strong>{tx.credits - tx.credits_clawed_back:,}</strong>{
        f" ({tx.credits:,} bought, {tx.credits_clawed_back:,} taken back by the refund)"
        if tx.credits_clawed_back
        else ""
    }</p>
{stripe}
</body></html>
"""
