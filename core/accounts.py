"""Personal accounts (个人账户, SPEC §10.1): balances, what a settlement draws, and the insured province's adjustments.

A balance is the reference data set's opening balance plus the changes
recorded since that data set was loaded (``changes``); only accounts that
moved are kept.  Loading a new data set starts the changes afresh: its
opening balances already include every earlier change.
"""
from __future__ import annotations

from typing import Callable

from .commands import AccountResult, AdjustAccount, Decision
from .errors import YidiError
from .events import AccountAdjusted, ReferenceLoaded
from .filing import Filings
from .funds import check_text
from ._core import Index

MAX_ACCOUNT_ADJUST_FEN = 10 ** 10   # one adjustment of a personal account: at most 1 亿元


class Accounts:
    def __init__(self, index: Index, filings: Filings, changes: list[tuple[str, int]] = ()) -> None:
        self.index = index
        self.filings = filings
        self.changes: dict[str, int] = dict(changes)   # psn_no -> change (fen) since the data set was loaded

    def decisions(self) -> dict[type, Callable]:
        return {AdjustAccount: self.decide_adjust}

    def appliers(self) -> dict[type, Callable]:
        return {AccountAdjusted: self.apply_adjusted, ReferenceLoaded: self.apply_reference_loaded}

    # ------------------------------------------------------------ reads
    def balance(self, psn_no: str) -> int:
        """A personal account's balance: the opening balance of the data set in force + the changes since."""
        account = self.index.account(psn_no)
        return (account[0] if account is not None else 0) + self.changes.get(psn_no, 0)

    def account(self, psn_no: str = "", certno: str = "") -> AccountResult:
        psn_no = self.filings.person(psn_no, certno)["psn_no"]
        return self._result(psn_no, self.balance(psn_no))

    def _result(self, psn_no: str, balance: int) -> AccountResult:
        family = self.index.account(psn_no)[1]
        return AccountResult(psn_no, balance, family, tuple(self.balance(p) for p in family))

    def draws(self, psn_no: str, payable: int, own: bool,
              family: bool) -> tuple[tuple[tuple[str, int], ...], int, int]:
        """(each account drawn and how much, in order; acct_pay; acct_mulaid_pay) for ``payable`` fen."""
        drawn: list[tuple[str, int]] = []
        acct_pay = mulaid_pay = 0
        if own:
            acct_pay = max(0, min(self.balance(psn_no), payable))
            if acct_pay:
                drawn.append((psn_no, acct_pay))
        if family:
            for other in self.index.account(psn_no)[1]:
                pay = max(0, min(self.balance(other), payable - acct_pay - mulaid_pay))
                if pay:
                    drawn.append((other, pay))
                    mulaid_pay += pay
        return tuple(drawn), acct_pay, mulaid_pay

    # ------------------------------------------------------------ decide
    def decide_adjust(self, cmd: AdjustAccount, _seq: int) -> Decision:
        """The insured province credits or debits a personal account; never below zero."""
        psn_no = self.filings.person(cmd.psn_no)["psn_no"]
        amount = cmd.amount_fen
        if type(amount) is not int or amount == 0 or abs(amount) > MAX_ACCOUNT_ADJUST_FEN:
            raise YidiError("INVALID_AMOUNT", what=f"调整金额 {cmd.amount_fen} 分",
                            problem=f"不合理：须为非零整数分，绝对值不超过 {MAX_ACCOUNT_ADJUST_FEN} 分", field="amount_fen")
        check_text(cmd.reason, "调整原因")
        balance = self.balance(psn_no)
        if balance + amount < 0:
            raise YidiError("ACCOUNT_INSUFFICIENT", balance=balance, amount=-amount)
        return Decision(AccountAdjusted(psn_no=psn_no, amount_fen=amount, reason=cmd.reason),
                        self._result(psn_no, balance + amount))

    # ------------------------------------------------------------- apply
    def apply_adjusted(self, event: AccountAdjusted, _seq: int) -> list:
        self.add(event.psn_no, event.amount_fen)
        return []

    def apply_reference_loaded(self, _event: ReferenceLoaded, _seq: int) -> list:
        """The gateway loads reference data before it replays or records this (SPEC §10.1)."""
        self.changes.clear()
        return []

    def add(self, psn_no: str, amount_fen: int) -> None:
        """A settlement's draw (negative) or its cancellation's refund, or an adjustment."""
        change = self.changes.get(psn_no, 0) + amount_fen
        if change:
            self.changes[psn_no] = change
        else:
            self.changes.pop(psn_no, None)
