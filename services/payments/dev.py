"""Development only, against localstripe: pay a checkout with a test card number, as Stripe.js would in the
browser (localstripe's own Stripe.js cannot confirm a PaymentIntent with a card). Mounted only when
AUTH_MODE=dev and STRIPE_API_BASE names a fake Stripe; with the real Stripe a card never reaches us. The
payment then takes the ordinary road: Stripe's signed webhook, the inbox, the ledger."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.payments.api import PaymentsDep
from services.payments.commands import PayWithTestCard
from services.payments.domain import NotPendingError, TransactionNotFoundError
from services.payments.gateway import CardRefusedError, NotPayableError, StripeUnavailableError
from shared.auth import SignedInUser
from shared.guard import GuardedRoute
from shared.problems import Problem, responses

router = APIRouter(route_class=GuardedRoute, tags=["dev"])


class TestCardPayment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transaction_id: uuid.UUID
    card_number: Annotated[str, StringConstraints(pattern=r"^\d{12,19}$")] = Field(
        default="4242424242424242", description="one of Stripe's test card numbers"
    )


class PaymentAnswer(BaseModel):
    transaction_id: str
    status: str  # Stripe's PaymentIntent status: succeeded, requires_action, ...


@router.post("/dev/pay", response_model=PaymentAnswer, responses=responses(402, 404, 409, 502))
async def pay_with_test_card(body: TestCardPayment, principal: SignedInUser, payments: PaymentsDep) -> PaymentAnswer:
    """Pay one of your PENDING checkouts at localstripe with a test card (development only)."""
    command = PayWithTestCard(
        user_id=principal.user_id, transaction_id=str(body.transaction_id), card_number=body.card_number
    )
    try:
        state = await payments.handle(command)
    except TransactionNotFoundError as exc:
        raise Problem(404, f"You have no transaction {body.transaction_id}.") from exc
    except NotPendingError as exc:
        raise Problem(409, f"The transaction is {exc}: only a pending checkout is paid.") from exc
    except CardRefusedError as exc:
        raise Problem(402, f"The card was refused: {exc}") from exc
    except NotPayableError as exc:
        raise Problem(409, f"This checkout's payment is {exc}: it takes no card now.") from exc
    except StripeUnavailableError as exc:
        raise Problem(502, str(exc)) from exc
    return PaymentAnswer(transaction_id=str(body.transaction_id), status=state.status)
