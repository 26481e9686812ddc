-- The server's tables: inbox users, API keys, idempotency, outbox, Slack and Odoo bookkeeping.
-- depends: 0001_store_audit

-- Timestamps here are ISO-8601 text (UTC) or Unix seconds written by Signoff, as in the SQLite state file.
CREATE TABLE inbox_users (
    name TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    salt TEXT NOT NULL,
    hash TEXT NOT NULL,
    params TEXT NOT NULL,
    created_at TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    actor TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE idempotency (
    principal TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (principal, key)
);
CREATE TABLE webhook_subscriptions (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    scope TEXT NOT NULL,
    description TEXT,
    created_at TEXT NOT NULL,
    created_seq BIGINT NOT NULL,
    removed_at TEXT
);
CREATE TABLE webhook_events (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    order_key TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    order_key TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at DOUBLE PRECISION NOT NULL,
    first_attempt_at DOUBLE PRECISION,
    last_attempt_at DOUBLE PRECISION,
    claimed_at DOUBLE PRECISION,
    last_status INTEGER,
    last_error TEXT,
    delivered_at DOUBLE PRECISION
);
CREATE INDEX webhook_deliveries_order ON webhook_deliveries(subscription_id, order_key, seq);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_at);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries(event_id);
CREATE TABLE webhook_cursor (name TEXT PRIMARY KEY, seq BIGINT NOT NULL);
CREATE TABLE slack_messages (
    proposal_id TEXT PRIMARY KEY,
    channel TEXT,
    ts TEXT,
    posted_at TEXT NOT NULL,
    reminded_at TEXT,
    shown_state TEXT
);
CREATE INDEX slack_messages_ts ON slack_messages(channel, ts);
CREATE TABLE slack_seen (key TEXT PRIMARY KEY, at TEXT NOT NULL);
CREATE INDEX slack_seen_at ON slack_seen(at);
CREATE TABLE odoo_activities (
    proposal_id TEXT PRIMARY KEY,
    activity_id BIGINT NOT NULL,
    approver_uid BIGINT NOT NULL,
    posted_at TEXT NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0
);
-- The web inbox's Pending page filters, counts and sorts on these fields of the stored proposal.
CREATE INDEX inbox_pending ON proposals(state, ((data::jsonb ->> 'approver_group')),
    ((data::jsonb ->> 'expires_at')), created_at);
