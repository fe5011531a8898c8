"""The privacy budget ledger: what each analyst has spent, charged atomically.

Every differentially private release costs (epsilon, delta). Before a query
runs, the pipeline calls `Ledger.charge`: one transaction reads what the
analyst has spent in the current period, refuses with BudgetExhausted (writing
nothing) if the cost does not fit, and otherwise appends the charge. The charge
is committed before `charge` returns, so a crash right after can only leave a
paid-for query unanswered, never an answered query unpaid.

Where it lives: SQLite (`<state_dir>/ledger.sqlite`, WAL, synchronous=FULL,
`BEGIN IMMEDIATE` around read-sum-insert) or, when the config names a DSN,
PostgreSQL (table `dp_ledger`, one transaction holding a transaction-level
advisory lock on the account), so threads, gunicorn's forks and several
gateway hosts sharing one database all see one budget. Connections are opened
per call (gateway/storage.py).

Exactness: amounts are integers, epsilon in units of 1e-12 and delta in units
of 1e-18. A float is taken at its shortest decimal form (what the policy says:
0.1 is 0.1, not 0.1000000000000000055...), costs are rounded up and budgets
down, so ten charges of 0.1 exactly fill a budget of 1.0 and rounding never
lets an analyst spend more than the budget.

Accounting: each charge records how it was accounted (`pure`: an epsilon; or
`zcdp`: a rho, see gateway/dp/accounting.py), and what counts against the
budget is the pure epsilons plus what the summed rho is worth at the delta the
budget has left after the charges' own deltas:

    spent epsilon = sum(pure epsilon) + rho + 2 sqrt(rho ln(1 / (budget delta - sum(delta))))

With no rho this is exactly the integer sum it always was. The conversion runs
in exact decimals and rounds up (gateway/dp/accounting.py). Ledgers made before
the accounting existed are migrated in place when opened: two columns are
added (`accounting` 'pure', `rho_units` 0), nothing is rewritten.

The ledger is append-only: an operator's reset (`cleanroom budget reset`) is a
row too, and what counts as spent is the charges after the latest reset that
fall in the budget's current period (UTC day, ISO week from Monday, calendar
month, or forever).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, NamedTuple

from gateway.dp.accounting import ACCOUNTINGS, PURE, ZCDP, epsilon_units_of_rho, max_rho_units
from gateway.errors import BudgetExhausted
from gateway.storage import Connection, Database, lock_key

EPSILON_SCALE = 10**12  # ledger units per 1 epsilon
RHO_SCALE = 10**12  # ledger units per 1 rho (zCDP)
DELTA_SCALE = 10**18  # ledger units per 1 delta
MAX_EPSILON = 1_000_000  # keeps sums of units inside a signed 64-bit integer
REFRESH_PERIODS = ("never", "daily", "weekly", "monthly")


@dataclass(frozen=True)
class Budget:
    """What an analyst may spend per period (from the policy)."""

    epsilon: float
    delta: float = 0.0
    refresh: str = "never"  # "never" | "daily" | "weekly" | "monthly" (UTC calendar periods)
    accounting: str = PURE  # the policy's: how balances are shown (every charge is counted whichever it is)

    def __post_init__(self):
        _check_amount("budget epsilon", self.epsilon, MAX_EPSILON)
        _check_amount("budget delta", self.delta, 1)
        if self.refresh not in REFRESH_PERIODS:
            raise ValueError(f"budget refresh must be one of {', '.join(REFRESH_PERIODS)}, not {self.refresh!r}")
        if self.accounting not in ACCOUNTINGS:
            raise ValueError(f"budget accounting must be one of {', '.join(ACCOUNTINGS)}, not {self.accounting!r}")


@dataclass(frozen=True)
class Spend:
    """A cost, or an amount spent or remaining.

    A cost is accounted `pure` (its loss is epsilon; rho must be 0) or `zcdp`
    (its loss is rho; epsilon must be 0); delta is what private key selection
    spends under either. An amount spent is the epsilon the whole period is
    worth (pure epsilons plus the converted rho), the delta the charges spent and
    the summed rho; remaining rho is what still fits."""

    epsilon: float
    delta: float = 0.0
    rho: float = 0.0
    accounting: str = PURE


@dataclass(frozen=True)
class Account:
    """Whose budget."""

    cleanroom: str
    analyst: str


@dataclass(frozen=True)
class Balance:
    account: Account
    budget: Budget
    spent: Spend
    remaining: Spend
    period_start: dt.datetime | None  # None: the budget never renews
    queries: int  # charges counted in `spent`

    @property
    def shows_rho(self) -> bool:
        return self.budget.accounting == ZCDP or self.spent.rho > 0

    @property
    def renews_at(self) -> dt.datetime | None:
        return None if self.period_start is None else next_period(self.period_start, self.budget.refresh)

    def as_json(self) -> dict:
        def iso(value):
            return None if value is None else value.isoformat()

        def amounts(spend: Spend) -> dict:
            shown = {"epsilon": None if math.isinf(spend.epsilon) else spend.epsilon, "delta": spend.delta}
            return {**shown, "rho": spend.rho} if self.shows_rho else shown

        return {
            "cleanroom": self.account.cleanroom, "analyst": self.account.analyst,
            "accounting": self.budget.accounting,
            "budget": {"epsilon": self.budget.epsilon, "delta": self.budget.delta},
            "spent": amounts(self.spent), "remaining": amounts(self.remaining),
            "queries": self.queries, "refresh": self.budget.refresh,
            "period_start": iso(self.period_start), "renews_at": iso(self.renews_at),
        }


# -- amounts ---------------------------------------------------------------------


def _check_amount(what: str, value: Any, maximum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ValueError(f"{what} must be a number, not {value!r}")
    if not math.isfinite(value) or value < 0 or value > maximum:
        raise ValueError(f"{what} must be between 0 and {maximum}, not {value!r}")


def _units(value: float, scale: int, rounding: str) -> int:
    """`value` in ledger units, from its shortest decimal form, rounded as told."""
    try:
        exact = Decimal(str(value)) * scale
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    return int(exact.to_integral_value(rounding=rounding))


def cost_units(cost: Spend) -> tuple[int, int]:
    """(epsilon, delta) of a cost in ledger units, rounded up."""
    _check_amount("cost epsilon", cost.epsilon, MAX_EPSILON)
    _check_amount("cost delta", cost.delta, 1)
    return _units(cost.epsilon, EPSILON_SCALE, ROUND_CEILING), _units(cost.delta, DELTA_SCALE, ROUND_CEILING)


def cost_rho_units(cost: Spend) -> int:
    """The rho of a cost in ledger units, rounded up; checks the cost's accounting."""
    _check_amount("cost rho", cost.rho, MAX_EPSILON)
    if cost.accounting not in ACCOUNTINGS:
        raise ValueError(f"cost accounting must be one of {', '.join(ACCOUNTINGS)}, not {cost.accounting!r}")
    if cost.accounting == PURE and cost.rho:
        raise ValueError(f"a pure epsilon-DP cost has no rho (rho {cost.rho!r}): account it as zcdp")
    if cost.accounting == ZCDP and cost.epsilon:
        raise ValueError(f"a zCDP cost is stated as rho, not epsilon (epsilon {cost.epsilon!r})")
    return _units(cost.rho, RHO_SCALE, ROUND_CEILING)


def budget_units(budget: Budget) -> tuple[int, int]:
    return _units(budget.epsilon, EPSILON_SCALE, ROUND_FLOOR), _units(budget.delta, DELTA_SCALE, ROUND_FLOOR)


def _amount(units: int, scale: int) -> float:
    return float(Decimal(units) / scale)


def _text(units: int, scale: int) -> str:
    """Units as an exact, short decimal: 100000000000 at 1e12 -> '0.1'."""
    return format((Decimal(units) / scale).normalize(), "f")


class Totals(NamedTuple):
    """Units of a period's charges (or of one cost): pure epsilon, delta, rho."""

    epsilon: int
    delta: int
    rho: int
    queries: int = 0

    def plus(self, cost: "Totals") -> "Totals":
        return Totals(self.epsilon + cost.epsilon, self.delta + cost.delta, self.rho + cost.rho,
                      self.queries + cost.queries)

    def epsilon_worth(self, limit_delta: int) -> int | None:
        """Epsilon units these charges are worth against a budget of limit_delta:
        the pure epsilons plus the rho converted at the delta the charges left
        (None: rho with no delta left to convert it)."""
        converted = epsilon_units_of_rho(self.rho, limit_delta - self.delta, EPSILON_SCALE, RHO_SCALE, DELTA_SCALE)
        return None if converted is None else self.epsilon + converted

    def fits(self, limits: tuple[int, int]) -> bool:
        worth = self.epsilon_worth(limits[1])
        return self.delta <= limits[1] and worth is not None and worth <= limits[0]


def _spend(epsilon_units: int, delta_units: int) -> Spend:
    return Spend(_amount(epsilon_units, EPSILON_SCALE), _amount(delta_units, DELTA_SCALE))


# -- periods ---------------------------------------------------------------------


def _utc(now: dt.datetime) -> dt.datetime:
    return now.replace(tzinfo=dt.timezone.utc) if now.tzinfo is None else now.astimezone(dt.timezone.utc)


def period_start(refresh: str, now: dt.datetime) -> dt.datetime | None:
    """Start of the UTC calendar period holding `now`; None for budgets that never renew."""
    now = _utc(now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if refresh == "never":
        return None
    if refresh == "daily":
        return midnight
    if refresh == "weekly":
        return midnight - dt.timedelta(days=midnight.weekday())  # ISO weeks start on Monday
    if refresh == "monthly":
        return midnight.replace(day=1)
    raise ValueError(f"unknown budget refresh {refresh!r}")


def next_period(start: dt.datetime, refresh: str) -> dt.datetime | None:
    if refresh == "daily":
        return start + dt.timedelta(days=1)
    if refresh == "weekly":
        return start + dt.timedelta(days=7)
    if refresh == "monthly":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return None


# -- the database (gateway/storage.py) --------------------------------------------


def database_for(config) -> Database:
    """The ledger's and release cache's database for a GatewayConfig."""
    return Database.for_config(config, "ledger.sqlite")


class OnDatabase:
    """What keeps its tables in that database (the ledger, the release cache), and
    how it is opened: from a gateway config, or from a path or DSN."""

    @classmethod
    def from_config(cls, config, **kwargs):
        """SQLite file <state_dir>/ledger.sqlite, or PostgreSQL when config.store.postgres_dsn is set."""
        return cls(database_for(config), **kwargs)

    @classmethod
    def open(cls, sqlite_path: Path | None = None, postgres_dsn: str | None = None, **kwargs):
        return cls(Database(sqlite_path=sqlite_path, postgres_dsn=postgres_dsn), **kwargs)


# -- the ledger ------------------------------------------------------------------

SCHEMA = [
    # kind 'charge': a query's cost; kind 'reset': an operator's reset (units 0).
    # Append-only; `id` orders resets and charges of an account (they are
    # written under the account's lock), `at` (unix seconds, UTC) places a
    # charge in a period. `accounting` 'pure' charges carry epsilon_units,
    # 'zcdp' charges rho_units; either may carry delta_units.
    """CREATE TABLE IF NOT EXISTS dp_ledger (
        id {serial},
        cleanroom TEXT NOT NULL,
        analyst TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('charge', 'reset')),
        epsilon_units BIGINT NOT NULL CHECK (epsilon_units >= 0),
        delta_units BIGINT NOT NULL CHECK (delta_units >= 0),
        at DOUBLE PRECISION NOT NULL,
        request_id TEXT NOT NULL DEFAULT '',
        query_sha256 TEXT NOT NULL DEFAULT '',
        actor TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT '',
        accounting TEXT NOT NULL DEFAULT 'pure' CHECK (accounting IN ('pure', 'zcdp')),
        rho_units BIGINT NOT NULL DEFAULT 0 CHECK (rho_units >= 0))""",
    "CREATE INDEX IF NOT EXISTS dp_ledger_account ON dp_ledger (cleanroom, analyst, id)",
    "CREATE INDEX IF NOT EXISTS dp_ledger_query ON dp_ledger (cleanroom, analyst, query_sha256)",  # charge_once
]

# Columns added since the first ledgers were made, in order: an existing table
# gets the ones it lacks when a Ledger opens it (old rows take the defaults).
ADDED_COLUMNS = [
    ("accounting", "TEXT NOT NULL DEFAULT 'pure' CHECK (accounting IN ('pure', 'zcdp'))"),
    ("rho_units", "BIGINT NOT NULL DEFAULT 0 CHECK (rho_units >= 0)"),
]

_SPENT = """SELECT COALESCE(SUM(epsilon_units), 0), COALESCE(SUM(delta_units), 0), COALESCE(SUM(rho_units), 0),
    COUNT(*)
    FROM dp_ledger WHERE cleanroom = ? AND analyst = ? AND kind = 'charge'
    AND id > COALESCE((SELECT MAX(id) FROM dp_ledger WHERE cleanroom = ? AND analyst = ? AND kind = 'reset'), 0)"""

# A charge for this measurement since the account's last reset whose statement has not failed (charge_once).
_PAID = """SELECT 1 FROM dp_ledger WHERE cleanroom = ? AND analyst = ? AND kind = 'charge' AND query_sha256 = ?
    AND reason = ''
    AND id > COALESCE((SELECT MAX(id) FROM dp_ledger WHERE cleanroom = ? AND analyst = ? AND kind = 'reset'), 0)"""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Ledger(OnDatabase):
    """Charges and balances of privacy budgets. Thread- and fork-safe: it holds
    no connection, only where the database is.

    `clock` (a callable returning an aware datetime) decides the period and
    the time recorded; tests replace it."""

    def __init__(self, database: Database, clock: Callable[[], dt.datetime] = _utcnow):
        self.db = database
        self.clock = clock
        self.db.create(SCHEMA, serial="INTEGER PRIMARY KEY AUTOINCREMENT|BIGSERIAL PRIMARY KEY")
        self.migrated = self.db.add_columns("dp_ledger", ADDED_COLUMNS)  # what this open added to an older ledger

    # -- what the pipeline calls

    def charge(self, account: Account, cost: Spend, budget: Budget, *, request_id: str, query_sha256: str) -> Balance:
        """Debit `cost` from the account's budget, or raise BudgetExhausted and
        write nothing. Check and debit are one transaction under the account's
        lock; the charge is committed when this returns."""
        return self._charge(account, cost, budget, request_id, query_sha256, once=False)

    def charge_once(self, account: Account, cost: Spend, budget: Budget, *, request_id: str,
                    query_sha256: str) -> bool:
        """`charge` for a measurement, unless the account has paid for it (query_sha256)
        already in this period for an identical statement still running (on any worker or
        host sharing the ledger) or answered. Returns whether it charged. The release cache
        keeps one answer per measurement, so a second payment would buy nothing, and near
        the end of a budget would refuse a statement that is being answered. A statement
        that failed after paying covers nothing (`failed`): its retry pays, as every run
        whose outcome or time an analyst sees must."""
        return self._charge(account, cost, budget, request_id, query_sha256, once=True) is not None

    def failed(self, account: Account, request_id: str) -> None:
        """The statement `request_id` failed after paying: its charge stays spent (no refund:
        that would tell the analyst something), but no longer pays for identical statements."""
        self.db.execute("UPDATE dp_ledger SET reason = 'failed' WHERE cleanroom = ? AND analyst = ? "
                        "AND kind = 'charge' AND request_id = ?", (account.cleanroom, account.analyst, request_id))

    def _charge(self, account: Account, cost: Spend, budget: Budget, request_id: str, query_sha256: str,
                once: bool) -> Balance | None:
        cost_eps, cost_delta = cost_units(cost)
        cost_total = Totals(cost_eps, cost_delta, cost_rho_units(cost), 1)
        now = _utc(self.clock())
        start = period_start(budget.refresh, now)
        with self.db.transaction(lock=self._lock(account)) as tx:
            if once and self._paid(tx, account, start, query_sha256):
                return None
            spent = self._spent(tx, account, start)
            if not spent.plus(cost_total).fits(budget_units(budget)):
                raise self._exhausted(account, budget, start, cost, cost_total, spent)
            tx.execute(
                "INSERT INTO dp_ledger (cleanroom, analyst, kind, epsilon_units, delta_units, at, request_id, "
                "query_sha256, actor, accounting, rho_units) VALUES (?, ?, 'charge', ?, ?, ?, ?, ?, ?, ?, ?)",
                (account.cleanroom, account.analyst, cost_eps, cost_delta, now.timestamp(), request_id,
                 query_sha256, account.analyst, cost.accounting, cost_total.rho),
            )
        return self._balance(account, budget, start, spent.plus(cost_total))

    def balance(self, account: Account, budget: Budget) -> Balance:
        start = period_start(budget.refresh, self.clock())
        with self.db.reading() as tx:
            spent = self._spent(tx, account, start)
        return self._balance(account, budget, start, spent)

    # -- what operators call

    def reset(self, account: Account, *, by: str, reason: str = "") -> None:
        """Forgive what the account has spent so far. Nothing is deleted: a reset
        row is appended, and only charges after it count."""
        if not by:
            raise ValueError("a reset must say who made it (by)")
        now = _utc(self.clock())
        with self.db.transaction(lock=self._lock(account)) as tx:
            tx.execute(
                "INSERT INTO dp_ledger (cleanroom, analyst, kind, epsilon_units, delta_units, at, actor, reason) "
                "VALUES (?, ?, 'reset', 0, 0, ?, ?, ?)",
                (account.cleanroom, account.analyst, now.timestamp(), by, reason),
            )

    def history(self, account: Account, limit: int | None = None) -> list[dict]:
        """The account's rows, oldest first (the last `limit` of them), amounts as numbers."""
        sql = ("SELECT id, kind, accounting, epsilon_units, delta_units, rho_units, at, request_id, query_sha256, "
               "actor, reason FROM dp_ledger WHERE cleanroom = ? AND analyst = ? ORDER BY id DESC")
        params: list[Any] = [account.cleanroom, account.analyst]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self.db.reading() as tx:
            rows = tx.rows(sql, params)
        for row in rows:
            row["epsilon"] = _amount(int(row.pop("epsilon_units")), EPSILON_SCALE)
            row["delta"] = _amount(int(row.pop("delta_units")), DELTA_SCALE)
            row["rho"] = _amount(int(row.pop("rho_units")), RHO_SCALE)
            row["at"] = dt.datetime.fromtimestamp(row["at"], dt.timezone.utc).isoformat()
        return rows[::-1]

    # -- inside

    @staticmethod
    def _lock(account: Account) -> int:
        return lock_key(f"dp_ledger\0{account.cleanroom}\0{account.analyst}")

    @staticmethod
    def _paid(tx: Connection, account: Account, start: dt.datetime | None, query_sha256: str) -> bool:
        sql = _PAID + (" AND at >= ?" if start is not None else "")
        params = [account.cleanroom, account.analyst, query_sha256, account.cleanroom, account.analyst]
        return tx.one(sql + " LIMIT 1", params + ([start.timestamp()] if start is not None else [])) is not None

    @staticmethod
    def _spent(tx: Connection, account: Account, start: dt.datetime | None) -> Totals:
        sql, params = _SPENT, [account.cleanroom, account.analyst, account.cleanroom, account.analyst]
        if start is not None:
            sql += " AND at >= ?"
            params.append(start.timestamp())
        eps, delta, rho, count = tx.one(sql, params)
        return Totals(int(eps), int(delta), int(rho), int(count))  # PostgreSQL sums bigints as numeric

    @staticmethod
    def _left(budget: Budget, spent: Totals) -> tuple[int | None, int, int, int]:
        """Units (epsilon the charges are worth or None, epsilon left, delta left, rho left)."""
        limit_eps, limit_delta = budget_units(budget)
        worth = spent.epsilon_worth(limit_delta)
        delta_left = max(0, limit_delta - spent.delta)
        eps_left = 0 if worth is None else max(0, limit_eps - worth)
        # the total rho that fits beside the pure epsilons at the delta left, less the rho spent
        rho_fits = max_rho_units(limit_eps - spent.epsilon, delta_left, EPSILON_SCALE, RHO_SCALE, DELTA_SCALE)
        return worth, eps_left, delta_left, max(0, rho_fits - spent.rho)

    @staticmethod
    def _balance(account, budget, start, spent: Totals) -> Balance:
        worth, eps_left, delta_left, rho_left = Ledger._left(budget, spent)
        return Balance(
            account=account, budget=budget,
            spent=Spend(math.inf if worth is None else _amount(worth, EPSILON_SCALE), _amount(spent.delta, DELTA_SCALE),
                        _amount(spent.rho, RHO_SCALE), budget.accounting),
            remaining=Spend(_amount(eps_left, EPSILON_SCALE), _amount(delta_left, DELTA_SCALE),
                            _amount(rho_left, RHO_SCALE), budget.accounting),
            period_start=start, queries=spent.queries,
        )

    @staticmethod
    def _exhausted(account, budget, start, cost: Spend, cost_total: Totals, spent: Totals) -> BudgetExhausted:
        limit_eps, limit_delta = budget_units(budget)
        worth, eps_left, delta_left, rho_left = Ledger._left(budget, spent)
        with_delta = limit_delta > 0 or cost_total.delta > 0  # pure epsilon-DP: leave delta out

        def pair(eps: int | None, delta: int) -> str:
            text = f"epsilon {'unbounded' if eps is None else _text(eps, EPSILON_SCALE)}"
            return f"{text}, delta {_text(delta, DELTA_SCALE)}" if with_delta else text

        if cost.accounting == ZCDP:
            costs = f"rho {_text(cost_total.rho, RHO_SCALE)} (zCDP)"
            if cost_total.delta:
                costs += f" and delta {_text(cost_total.delta, DELTA_SCALE)}"
            has = (f"rho {_text(rho_left, RHO_SCALE)} left (its charges so far, rho {_text(spent.rho, RHO_SCALE)} in "
                   f"all, are worth {pair(worth, spent.delta)} of {pair(limit_eps, limit_delta)})")
        else:
            costs = pair(cost_total.epsilon, cost_total.delta)
            has = f"{pair(eps_left, delta_left)} left of {pair(limit_eps, limit_delta)}"
        message = (f"privacy budget exhausted: this query costs {costs}, and {account.analyst!r} has {has} "
                   f"in clean room {account.cleanroom!r}")
        renews = next_period(start, budget.refresh) if start is not None else None
        when = (f"the budget renews {budget.refresh} at {renews:%Y-%m-%d %H:%M} UTC" if renews
                else "the budget does not renew")
        show = f"cleanroom budget show --cleanroom {account.cleanroom} --analyst {account.analyst}"
        hint = f"{when}; a query that costs less may still fit; an operator can show the budget with `{show}`"
        return BudgetExhausted(message, rule="privacy.budget", hint=hint)
