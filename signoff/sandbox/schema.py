"""Field specs of the models the Odoo stand-in emulates.

Each model is a dict ``field -> spec``; a spec is the subset of Odoo's ``fields_get`` attributes the
stand-in needs (``type``, ``string``, ``relation``, ``selection``, ``required``, ``readonly``) plus a few
private keys (leading underscore) that drive the emulation and are never returned over RPC:

* ``_default``: value (or zero-argument callable) used on ``create`` when the field is not given;
* ``_compute``: the field is computed at read time (not stored), by a function in :mod:`.orm`;
* ``_inverse``: for a ``one2many``, the many2one field on the comodel pointing back.

Shapes follow Odoo 17 Community + OCA ``helpdesk_mgmt`` and the Enterprise subscription fields on
``sale.order`` (see ``shared/research/odoo_slack.md`` §3). Names are Odoo's; nothing is copied from Odoo.
"""

from __future__ import annotations

from typing import Any

FieldSpec = dict[str, Any]
ModelSpec = dict[str, Any]


def f(type_: str, string: str, **kw: Any) -> FieldSpec:
    spec: FieldSpec = {"type": type_, "string": string, "required": False, "readonly": False}
    spec.update(kw)
    return spec


def m2o(relation: str, string: str, **kw: Any) -> FieldSpec:
    return f("many2one", string, relation=relation, **kw)


def o2m(relation: str, inverse: str, string: str) -> FieldSpec:
    return f("one2many", string, relation=relation, relation_field=inverse, _inverse=inverse, readonly=True)


def m2m(relation: str, string: str) -> FieldSpec:
    return f("many2many", string, relation=relation)


def sel(options: list[tuple[str, str]], string: str, **kw: Any) -> FieldSpec:
    return f("selection", string, selection=[list(o) for o in options], **kw)


def computed(type_: str, string: str, **kw: Any) -> FieldSpec:
    return f(type_, string, readonly=True, _compute=True, **kw)


PRIORITIES = [("0", "Low"), ("1", "Medium"), ("2", "High"), ("3", "Very High")]
PAYMENT_STATES = [
    ("not_paid", "Not Paid"),
    ("in_payment", "In Payment"),
    ("paid", "Paid"),
    ("partial", "Partially Paid"),
    ("reversed", "Reversed"),
    ("invoicing_legacy", "Invoicing App Legacy"),
]
SUBSCRIPTION_STATES = [
    ("1_draft", "Quotation"),
    ("2_renewal", "Renewal Quotation"),
    ("3_progress", "In Progress"),
    ("4_paused", "Paused"),
    ("5_renewed", "Renewed"),
    ("6_churn", "Churned"),
    ("7_upsell", "Upsell"),
]
MESSAGE_TYPES = [
    ("email", "Incoming Email"),
    ("comment", "Comment"),
    ("notification", "System notification"),
    ("auto_comment", "Automated Targeted Notification"),
    ("user_notification", "User Specific Notification"),
    ("email_outgoing", "Outgoing Email"),
]

#: Models with a chatter (``mail.thread``): ``message_post`` works on them.
MAIL_THREAD_MODELS = {"res.partner", "helpdesk.ticket", "sale.order", "account.move", "res.users"}

MODELS: dict[str, ModelSpec] = {
    "res.partner": {
        "_description": "Contact",
        "_rec_name": "name",
        "fields": {
            "name": f("char", "Name", required=True),
            "is_company": f("boolean", "Is a Company"),
            "company_type": computed(
                "selection", "Company Type", selection=[["person", "Individual"], ["company", "Company"]]
            ),
            "parent_id": m2o("res.partner", "Related Company"),
            "child_ids": o2m("res.partner", "parent_id", "Contact"),
            "commercial_partner_id": computed("many2one", "Commercial Entity", relation="res.partner"),
            "email": f("char", "Email"),
            "phone": f("char", "Phone"),
            "mobile": f("char", "Mobile"),
            "street": f("char", "Street"),
            "city": f("char", "City"),
            "zip": f("char", "Zip"),
            "country_code": f("char", "Country Code"),
            "vat": f("char", "Tax ID"),
            "ref": f("char", "Reference"),
            "website": f("char", "Website Link"),
            "lang": sel(
                [("en_US", "English (US)"), ("fr_FR", "French"), ("de_DE", "German")],
                "Language",
                _default="en_US",
            ),
            "tz": f("char", "Timezone"),
            "function": f("char", "Job Position"),
            "user_id": m2o("res.users", "Salesperson"),
            "comment": f("html", "Notes"),
            "active": f("boolean", "Active", _default=True),
            "customer_rank": f("integer", "Customer Rank"),
            "supplier_rank": f("integer", "Supplier Rank"),
            "sale_order_ids": o2m("sale.order", "partner_id", "Sales Order"),
            "invoice_ids": o2m("account.move", "partner_id", "Invoices"),
            "helpdesk_ticket_ids": o2m("helpdesk.ticket", "partner_id", "Related tickets"),
        },
    },
    "res.users": {
        "_description": "User",
        "_rec_name": "name",
        "fields": {
            "name": f("char", "Name", required=True),
            "login": f("char", "Login", required=True),
            "email": f("char", "Email"),
            "partner_id": m2o("res.partner", "Related Partner"),
            "active": f("boolean", "Active", _default=True),
            "share": f("boolean", "Share User"),
            "tz": f("char", "Timezone", _default="UTC"),
            "lang": f("char", "Language", _default="en_US"),
        },
    },
    "helpdesk.ticket.team": {
        "_description": "Helpdesk Ticket Team",
        "_rec_name": "name",
        "fields": {
            "name": f("char", "Name", required=True),
            "description": f("text", "Description"),
            "sequence": f("integer", "Sequence", _default=10),
            "user_id": m2o("res.users", "Team Leader"),
            "user_ids": m2m("res.users", "Members"),
            "active": f("boolean", "Active", _default=True),
            "ticket_ids": o2m("helpdesk.ticket", "team_id", "Tickets"),
        },
    },
    "helpdesk.ticket.stage": {
        "_description": "Helpdesk Ticket Stage",
        "_rec_name": "name",
        "_order": "sequence, id",
        "fields": {
            "name": f("char", "Stage Name", required=True),
            "description": f("html", "Description"),
            "sequence": f("integer", "Sequence", _default=1),
            "active": f("boolean", "Active", _default=True),
            "closed": f("boolean", "Closed"),
            "unattended": f("boolean", "Unattended"),
            "fold": f("boolean", "Folded in Kanban"),
        },
    },
    "helpdesk.ticket.category": {
        "_description": "Helpdesk Ticket Category",
        "_rec_name": "name",
        "fields": {
            "name": f("char", "Name", required=True),
            "description": f("text", "Description"),
            "active": f("boolean", "Active", _default=True),
        },
    },
    "helpdesk.ticket.tag": {
        "_description": "Helpdesk Ticket Tag",
        "_rec_name": "name",
        "fields": {
            "name": f("char", "Name", required=True),
            "color": f("integer", "Color Index"),
            "active": f("boolean", "Active", _default=True),
        },
    },
    "helpdesk.ticket": {
        "_description": "Helpdesk Ticket",
        "_rec_name": "number",
        "_order": "priority desc, sequence, number desc, id desc",
        "fields": {
            "number": f("char", "Ticket number", readonly=True),
            "name": f("char", "Title", required=True),
            "description": f("html", "Description", required=True),
            "ticket_ref": f("char", "Reference", help="External reference (source dataset id in the demo)."),
            "user_id": m2o("res.users", "Assigned user"),
            "stage_id": m2o("helpdesk.ticket.stage", "Stage"),
            "partner_id": m2o("res.partner", "Contact"),
            "partner_name": f("char", "Partner Name"),
            "partner_email": f("char", "Email"),
            "last_stage_update": f("datetime", "Last Stage Update"),
            "assigned_date": f("datetime", "Assigned Date"),
            "closed_date": f("datetime", "Closed Date"),
            "closed": computed("boolean", "Closed", related="stage_id.closed"),
            "unattended": computed("boolean", "Unattended", related="stage_id.unattended"),
            "tag_ids": m2m("helpdesk.ticket.tag", "Tags"),
            "category_id": m2o("helpdesk.ticket.category", "Category"),
            "team_id": m2o("helpdesk.ticket.team", "Team"),
            "priority": sel(PRIORITIES, "Priority", _default="1"),
            "color": f("integer", "Color Index"),
            "kanban_state": sel(
                [("normal", "Default"), ("done", "Ready for next stage"), ("blocked", "Blocked")],
                "Kanban State",
                _default="normal",
            ),
            "sequence": f("integer", "Sequence", _default=10),
            "active": f("boolean", "Active", _default=True),
        },
    },
    "sale.subscription.plan": {
        "_description": "Subscription Plan",
        "_rec_name": "name",
        "fields": {
            "name": f("char", "Name", required=True),
            "code": f("char", "Code"),
            "billing_period_value": f("integer", "Duration", _default=1),
            "billing_period_unit": sel(
                [("week", "Weeks"), ("month", "Months"), ("year", "Years")], "Unit", _default="month"
            ),
            "active": f("boolean", "Active", _default=True),
        },
    },
    "sale.order": {
        "_description": "Sales Order",
        "_rec_name": "name",
        "_order": "date_order desc, id desc",
        "fields": {
            "name": f("char", "Order Reference", required=True),
            "partner_id": m2o("res.partner", "Customer", required=True),
            "state": sel(
                [
                    ("draft", "Quotation"),
                    ("sent", "Quotation Sent"),
                    ("sale", "Sales Order"),
                    ("cancel", "Cancelled"),
                ],
                "Status",
                _default="draft",
            ),
            "date_order": f("datetime", "Order Date"),
            "validity_date": f("date", "Expiration"),
            "amount_untaxed": f("monetary", "Untaxed Amount"),
            "amount_tax": f("monetary", "Taxes"),
            "amount_total": f("monetary", "Total"),
            "currency_code": f("char", "Currency", _default="USD"),
            "user_id": m2o("res.users", "Salesperson"),
            "client_order_ref": f("char", "Customer Reference"),
            "origin": f("char", "Source Document"),
            "note": f("html", "Terms and conditions"),
            "invoice_ids": m2m("account.move", "Invoices"),
            "is_subscription": f("boolean", "Recurring"),
            "plan_id": m2o("sale.subscription.plan", "Recurring Plan"),
            "subscription_state": sel(SUBSCRIPTION_STATES, "Subscription Status"),
            "start_date": f("date", "Start Date"),
            "next_invoice_date": f("date", "Date of Next Invoice"),
            "end_date": f("date", "End Date"),
            "first_contract_date": f("date", "First contract date"),
            "recurring_monthly": f("monetary", "Monthly Recurring"),
            "recurring_total": f("monetary", "Total Recurring"),
            "seats": f("integer", "Seats"),
        },
    },
    "account.move": {
        "_description": "Journal Entry",
        "_rec_name": "name",
        "_order": "invoice_date desc, name desc, id desc",
        "fields": {
            "name": f("char", "Number", _default="/"),
            "move_type": sel(
                [
                    ("entry", "Journal Entry"),
                    ("out_invoice", "Customer Invoice"),
                    ("out_refund", "Customer Credit Note"),
                    ("in_invoice", "Vendor Bill"),
                    ("in_refund", "Vendor Credit Note"),
                    ("out_receipt", "Sales Receipt"),
                    ("in_receipt", "Purchase Receipt"),
                ],
                "Type",
                _default="entry",
            ),
            "state": sel(
                [("draft", "Draft"), ("posted", "Posted"), ("cancel", "Cancelled")],
                "Status",
                _default="draft",
            ),
            "payment_state": sel(PAYMENT_STATES, "Payment Status", _default="not_paid"),
            "partner_id": m2o("res.partner", "Partner"),
            "invoice_date": f("date", "Invoice/Bill Date"),
            "invoice_date_due": f("date", "Due Date"),
            "amount_untaxed": f("monetary", "Untaxed Amount"),
            "amount_tax": f("monetary", "Tax"),
            "amount_total": f("monetary", "Total"),
            "amount_residual": f("monetary", "Amount Due"),
            "currency_code": f("char", "Currency", _default="USD"),
            "invoice_origin": f("char", "Origin"),
            "ref": f("char", "Reference"),
            "payment_reference": f("char", "Payment Reference"),
        },
    },
    "payment.transaction": {
        "_description": "Payment Transaction",
        "_rec_name": "reference",
        "_order": "id desc",
        "fields": {
            "reference": f("char", "Reference", required=True),
            "provider_reference": f("char", "Provider Reference"),
            "amount": f("monetary", "Amount", required=True),
            "currency_code": f("char", "Currency", _default="USD"),
            "state": sel(
                [
                    ("draft", "Draft"),
                    ("pending", "Pending"),
                    ("authorized", "Authorized"),
                    ("done", "Confirmed"),
                    ("cancel", "Canceled"),
                    ("error", "Error"),
                ],
                "Status",
                _default="draft",
            ),
            "state_message": f("text", "Message"),
            "last_state_change": f("datetime", "Last State Change Date"),
            "operation": sel(
                [("online_redirect", "Online payment with redirection"), ("online_token", "Online payment by token"),
                 ("offline", "Offline payment by token"), ("refund", "Refund")],
                "Operation",
            ),
            "partner_id": m2o("res.partner", "Customer"),
            "invoice_ids": m2m("account.move", "Invoices"),
            "sale_order_ids": m2m("sale.order", "Sales Orders"),
        },
    },
    "mail.activity.type": {
        "_description": "Activity Type",
        "_rec_name": "name",
        "fields": {
            "name": f("char", "Name", required=True),
            "summary": f("char", "Default Summary"),
            "category": sel(
                [
                    ("default", "None"),
                    ("upload_file", "Upload Document"),
                    ("phonecall", "Phonecall"),
                    ("meeting", "Meeting"),
                ],
                "Action",
                _default="default",
            ),
            "delay_count": f("integer", "Schedule"),
            "delay_unit": sel(
                [("days", "days"), ("weeks", "weeks"), ("months", "months")], "Delay units", _default="days"
            ),
            "res_model": f("char", "Model"),
            "keep_done": f("boolean", "Keep Done"),
            "active": f("boolean", "Active", _default=True),
        },
    },
    "mail.activity": {
        "_description": "Activity",
        "_rec_name": "summary",
        "_order": "date_deadline asc, id asc",
        "fields": {
            "res_model_id": m2o("ir.model", "Document Model"),
            "res_model": f("char", "Related Document Model"),
            "res_id": f("many2one_reference", "Related Document ID", required=True, model_field="res_model"),
            "res_name": computed("char", "Document Name"),
            "activity_type_id": m2o("mail.activity.type", "Activity Type"),
            "summary": f("char", "Summary"),
            "note": f("html", "Note"),
            "date_deadline": f("date", "Due Date", required=True),
            "date_done": f("date", "Done Date"),
            "user_id": m2o("res.users", "Assigned to"),
            "automated": f("boolean", "Automated activity"),
            "state": computed(
                "selection",
                "State",
                selection=[
                    ["overdue", "Overdue"],
                    ["today", "Today"],
                    ["planned", "Planned"],
                    ["done", "Done"],
                ],
            ),
            "active": f("boolean", "Active", _default=True),
        },
    },
    "mail.message.subtype": {
        "_description": "Message subtypes",
        "_rec_name": "name",
        "fields": {
            "name": f("char", "Message Type", required=True),
            "internal": f("boolean", "Internal Only"),
            "description": f("text", "Description"),
        },
    },
    "mail.message": {
        "_description": "Message",
        "_rec_name": "record_name",
        "_order": "id desc",
        "fields": {
            "model": f("char", "Related Document Model"),
            "res_id": f("many2one_reference", "Related Document ID", model_field="model"),
            "record_name": f("char", "Message Record Name"),
            "subject": f("char", "Subject"),
            "body": f("html", "Contents"),
            "message_type": sel(MESSAGE_TYPES, "Type", _default="comment"),
            "subtype_id": m2o("mail.message.subtype", "Subtype"),
            "is_internal": f("boolean", "Employee Only"),
            "author_id": m2o("res.partner", "Author"),
            "email_from": f("char", "From"),
            "date": f("datetime", "Date"),
            "partner_ids": m2m("res.partner", "Recipients"),
            "attachment_ids": m2m("ir.attachment", "Attachments"),
            "parent_id": m2o("mail.message", "Parent Message"),
            "mail_activity_type_id": m2o("mail.activity.type", "Mail Activity Type"),
        },
    },
    "ir.attachment": {
        "_description": "Attachment",
        "_rec_name": "name",
        "_order": "id desc",
        "fields": {
            "name": f("char", "Name", required=True),
            "description": f("text", "Description"),
            "res_model": f("char", "Resource Model"),
            "res_id": f("many2one_reference", "Resource ID", model_field="res_model"),
            "res_field": f("char", "Resource Field"),
            "type": sel([("url", "URL"), ("binary", "File")], "Type", _default="binary"),
            "url": f("char", "Url"),
            "datas": f("binary", "File Content (base64)"),
            "mimetype": f("char", "Mime Type"),
            "file_size": f("integer", "File Size", readonly=True),
            "checksum": f("char", "Checksum/SHA1", readonly=True),
            "public": f("boolean", "Is public document"),
        },
    },
    "ir.model": {
        "_description": "Models",
        "_rec_name": "name",
        "fields": {
            "model": f("char", "Model", required=True),
            "name": f("char", "Model Description", required=True),
            "transient": f("boolean", "Transient Model"),
        },
    },
    "ir.model.data": {
        "_description": "Model Data",
        "_rec_name": "complete_name",
        "fields": {
            "module": f("char", "Module", required=True),
            "name": f("char", "External Identifier", required=True),
            "complete_name": computed("char", "Complete ID"),
            "model": f("char", "Model Name", required=True),
            "res_id": f("many2one_reference", "Record ID", model_field="model"),
            "noupdate": f("boolean", "Non Updatable"),
        },
    },
}

#: Fields every model has (Odoo's magic fields).
MAGIC_FIELDS: dict[str, FieldSpec] = {
    "id": f("integer", "ID", readonly=True),
    "display_name": computed("char", "Display Name"),
    "create_date": f("datetime", "Created on", readonly=True),
    "create_uid": m2o("res.users", "Created by", readonly=True),
    "write_date": f("datetime", "Last Updated on", readonly=True),
    "write_uid": m2o("res.users", "Last Updated by", readonly=True),
}


_FIELDS_CACHE: dict[str, dict[str, FieldSpec]] = {}


def fields_of(model: str) -> dict[str, FieldSpec]:
    """All fields of ``model``: its own plus the magic ones (cached; do not mutate)."""
    found = _FIELDS_CACHE.get(model)
    if found is None:
        found = _FIELDS_CACHE[model] = {**MAGIC_FIELDS, **MODELS[model]["fields"]}
    return found
