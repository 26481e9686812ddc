-- Who holds a claim (host|pid|start), so a holder that died on this host frees it at once (signoff.guardrails.owner).
-- depends: 0003_contract_terms

ALTER TABLE claims ADD COLUMN owner TEXT;
