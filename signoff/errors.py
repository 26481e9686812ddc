"""One exception tree for all of Signoff.

::

    SignoffError
    ├── ConfigError                 a setting is missing or wrong (names the variable)
    ├── OdooError                   anything Odoo answered or failed to answer
    │   ├── OdooAccessError         AccessError / AccessDenied: do not retry
    │   ├── OdooMissingError        MissingError: the record does not exist
    │   ├── OdooValidationError     ValidationError / UserError: message safe to show a human
    │   ├── OdooConnectionError     cannot reach Odoo (down, refused, timeout): retryable
    │   └── OdooInternalError       any other server-side error
    ├── ReadOnlyViolation           an agent tried a method outside the read-only view (no request sent)
    ├── ModelError                  the model is missing, corrupt, or gave output that fails validation
    │   └── ModelNotTrained         no trained artefact: run `signoff train`
    ├── PolicyError                 the guardrail policy is missing or invalid
    ├── ProposalError               approvals: the proposal cannot take this step
    │   ├── ProposalNotFound
    │   ├── AlreadyDecided          someone decided first (carries who and when)
    │   ├── NotAuthorised           the approver is not in the group the policy names, or raised it
    │   └── InvalidDecision         missing reason, edit not allowed, edited args fail the guardrails
    ├── ExecutionError              the executor could not apply an approved proposal
    │   └── ChangedInOdoo           the field changed in Odoo after the proposal: not written
    ├── AuditIntegrityError         the audit hash chain does not verify
    └── DataError                   an input file or record is malformed (names the line)
"""

from __future__ import annotations


class SignoffError(Exception):
    """Base of every error Signoff raises on purpose."""


class ConfigError(SignoffError):
    pass


class OdooError(SignoffError):
    """An error from Odoo. ``name`` is Odoo's ``error.data.name`` when Odoo gave one."""

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class OdooAccessError(OdooError):
    pass


class OdooMissingError(OdooError):
    pass


class OdooValidationError(OdooError):
    pass


class OdooConnectionError(OdooError):
    pass


class OdooInternalError(OdooError):
    pass


class ReadOnlyViolation(SignoffError):
    pass


class ModelError(SignoffError):
    pass


class ModelNotTrained(ModelError):
    pass


class PolicyError(SignoffError):
    pass


class ProposalError(SignoffError):
    pass


class ProposalNotFound(ProposalError):
    pass


class AlreadyDecided(ProposalError):
    def __init__(self, proposal_id: str, state: str, by: str | None, at: str | None) -> None:
        super().__init__(f"proposal {proposal_id} is already {state} (by {by or 'unknown'} at {at or '?'})")
        self.proposal_id, self.state, self.by, self.at = proposal_id, state, by, at


class NotAuthorised(ProposalError):
    pass


class InvalidDecision(ProposalError):
    pass


class ExecutionError(SignoffError):
    pass


class ChangedInOdoo(ExecutionError):
    """The value the approver saw as "current" is no longer what Odoo has: someone changed it since."""


class AuditIntegrityError(SignoffError):
    pass


class DataError(SignoffError):
    pass
