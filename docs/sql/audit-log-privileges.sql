-- The audit log table of stateful.rollback.audit_log (store: table), made append-only for the role
-- that runs the playbooks: the table, its append-only triggers, and grants of INSERT and SELECT only.
--
-- Run it as the role that is to OWN the table - a DBA or schema-owner role, never the executor:
--
--   psql -X -v ON_ERROR_STOP=1 -d app \
--        -v executor=deployer \                 # the role of the module's login_user (INSERT, SELECT)
--        -v auditor=auditor \                   # optional: a role that only reads and verifies (SELECT)
--        -v schema=stateful_rollback_audit \    # optional (this default): the module's journal_schema
--        -f docs/sql/audit-log-privileges.sql
--
-- and give the module the same schema: journal_schema: stateful_rollback_audit. Running it again is safe.
--
-- Why a schema of its own: the owner of a schema may drop any table in it, whatever the table's
-- privileges and triggers. The journal schema `stateful_rollback` is usually created (so owned) by the
-- executor (migrate, release), so the audit table goes into a schema the executor does not own. The
-- script refuses an executor that is a superuser, owns (or is a member of the owner of) the schema or the
-- table, or is the role running it.
--
-- What stays possible, and how it is caught: the table owner and superusers can still disable the
-- triggers (ALTER TABLE ... DISABLE TRIGGER) or drop the table. Every record carries the SHA-256 hash of
-- the one before it, so `stateful.rollback.audit_log` with `state: verified` reports any row changed,
-- deleted or reordered that way (and `append_only: false` while a trigger is disabled); with `hmac_key`
-- a rewritten chain cannot be made consistent again. Keep the `last_hash` it returns somewhere else to
-- also detect rows removed from the end.
--
-- The definitions below are those the module uses when it creates the table itself
-- (plugins/module_utils/audit.py; a unit test keeps them identical).

\set ON_ERROR_STOP on

\if :{?executor}
\else
  \echo 'audit-log-privileges.sql: name the executing role: psql -v executor=ROLE ...'
  DO $refuse$ BEGIN RAISE EXCEPTION 'audit-log-privileges.sql: -v executor=ROLE is required'; END $refuse$;
\endif
\if :{?schema}
\else
  \set schema stateful_rollback_audit
\endif

BEGIN;

-- Refuse an executor that could change or drop the table anyway.
SELECT r.oid IS NOT NULL AS executor_exists,
       coalesce(r.rolsuper, false) AS executor_is_superuser,
       coalesce(r.rolname = current_user, false) AS executor_runs_this,
       EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n
               WHERE n.nspname = :'schema' AND pg_catalog.pg_has_role(r.oid, n.nspowner, 'MEMBER')) AS executor_owns_schema,
       EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = :'schema' AND c.relname = 'audit_log'
                 AND pg_catalog.pg_has_role(r.oid, c.relowner, 'MEMBER')) AS executor_owns_table
  FROM (SELECT 1) AS one LEFT JOIN pg_catalog.pg_roles r ON r.rolname = :'executor' \gset
\if :executor_exists
\else
  \echo 'audit-log-privileges.sql: role' :executor 'does not exist'
  DO $refuse$ BEGIN RAISE EXCEPTION 'audit-log-privileges.sql: the executor role does not exist'; END $refuse$;
\endif
\if :executor_is_superuser
  \echo 'audit-log-privileges.sql:' :executor 'is a superuser: nothing is append-only for a superuser'
  DO $refuse$ BEGIN RAISE EXCEPTION 'audit-log-privileges.sql: the executor is a superuser'; END $refuse$;
\endif
\if :executor_runs_this
  \echo 'audit-log-privileges.sql: run this as the role that is to own the table, not as the executor' :executor
  DO $refuse$ BEGIN RAISE EXCEPTION 'audit-log-privileges.sql: run by the executor'; END $refuse$;
\endif
\if :executor_owns_schema
  \echo 'audit-log-privileges.sql:' :executor 'owns schema' :schema '(or is a member of its owner) and could drop the table; choose a schema it does not own (-v schema=...)'
  DO $refuse$ BEGIN RAISE EXCEPTION 'audit-log-privileges.sql: the executor owns the schema'; END $refuse$;
\endif
\if :executor_owns_table
  \echo 'audit-log-privileges.sql:' :executor 'owns' :schema.audit_log '(or is a member of its owner) and could disable its triggers; ALTER TABLE ... OWNER TO another role first'
  DO $refuse$ BEGIN RAISE EXCEPTION 'audit-log-privileges.sql: the executor owns the table'; END $refuse$;
\endif

CREATE SCHEMA IF NOT EXISTS :"schema";

CREATE TABLE IF NOT EXISTS :"schema".audit_log (
    seq bigint PRIMARY KEY CHECK (seq >= 1),
    "time" timestamptz NOT NULL,
    run text,
    stage text,
    release text,
    outcome text,
    actor text,
    prev_hash text NOT NULL UNIQUE CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash text NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$'),
    hmac text CHECK (hmac ~ '^[0-9a-f]{64}$'),
    record text NOT NULL
);
COMMENT ON TABLE :"schema".audit_log IS 'stateful.rollback audit log (format 1): append-only, SHA-256 hash chain over the record column';

-- Raises on UPDATE, DELETE and TRUNCATE, whoever runs them.
CREATE OR REPLACE FUNCTION :"schema".audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $audit$
BEGIN
    RAISE EXCEPTION 'audit log %.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'records are only ever inserted; the hash chain (stateful.rollback.audit_log state=verified) detects changes made around this trigger';
END
$audit$;

DROP TRIGGER IF EXISTS audit_log_append_only ON :"schema".audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON :"schema".audit_log FOR EACH ROW EXECUTE FUNCTION :"schema".audit_log_append_only();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON :"schema".audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON :"schema".audit_log FOR EACH STATEMENT EXECUTE FUNCTION :"schema".audit_log_append_only();

-- Nobody but the owner changes rows; the executor appends and reads, the auditor reads.
REVOKE UPDATE, DELETE, TRUNCATE ON :"schema".audit_log FROM PUBLIC;
REVOKE ALL ON :"schema".audit_log FROM :"executor";
GRANT USAGE ON SCHEMA :"schema" TO :"executor";
GRANT INSERT, SELECT ON :"schema".audit_log TO :"executor";
\if :{?auditor}
REVOKE ALL ON :"schema".audit_log FROM :"auditor";
GRANT USAGE ON SCHEMA :"schema" TO :"auditor";
GRANT SELECT ON :"schema".audit_log TO :"auditor";
\endif

COMMIT;
