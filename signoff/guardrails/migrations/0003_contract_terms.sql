-- The renewal terms the contracts agent read, per Odoo record (signoff.tools.contract_terms).
-- depends: 0002_server_tables

CREATE TABLE contract_terms (
    db TEXT NOT NULL,
    res_model TEXT NOT NULL,
    res_id BIGINT NOT NULL,
    attachment_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    notice_deadline TEXT,
    auto_renewal INTEGER,
    model_version TEXT NOT NULL,
    analysed_at TEXT NOT NULL,
    PRIMARY KEY (db, res_model, res_id, attachment_id)
);
