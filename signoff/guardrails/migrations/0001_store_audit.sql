-- Proposals, claims and the audit log.

CREATE TABLE proposals (
    id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX proposals_thread ON proposals(thread_id);
CREATE INDEX proposals_state ON proposals(state);
CREATE TABLE claims (key TEXT PRIMARY KEY, claimed_at TIMESTAMPTZ NOT NULL);
-- ``at`` and ``data`` are the exact text the hash was computed over (no time zone or key-order drift).
CREATE TABLE audit (
    seq BIGINT PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    thread_id TEXT,
    actor TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_subject ON audit(subject);
CREATE INDEX audit_thread ON audit(thread_id);
CREATE FUNCTION signoff_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER audit_no_update_or_delete BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION signoff_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION signoff_audit_append_only();
