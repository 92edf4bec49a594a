-- Least-privilege PostgreSQL roles for stateful.rollback: a MIGRATOR that runs
-- release migrations (stateful.rollback.migrate, the release ledger) and a
-- CHECKER that only reads (replication_parity, schema dumps for
-- schema_compat_check, the journal and the ledger).
--
-- Run it as a superuser (or, on managed services, the provider's admin role),
-- connected to the application's database, on every cluster that serves it:
-- the primary (physical standbys replay it, roles included) and each logical
-- subscriber (a separate cluster with its own roles):
--
--   psql -X -d app -v app_owner=app_owner -f docs/sql/roles.sql
--   psql -X -d app -v app_schema=public -v app_owner=app_owner -v app_user=app \
--        -v migrator=stateful_migrator -v checker=stateful_checker \
--        -v journal_schema=stateful_rollback -f docs/sql/roles.sql
--
-- Variables (psql -v NAME=VALUE):
--   app_owner       REQUIRED. The role that owns the app schema's tables. Best a
--                   NOLOGIN role that owns that schema's objects and nothing else
--                   (not the database); see "DDL needs ownership" below.
--   db              the application's database; default: the one psql is connected
--                   to (the script refuses to run in any other).
--   app_schema      the application's schema; default public.
--   app_user        the role the application connects as; it gets DML on tables the
--                   migrator creates. Default: app_owner.
--   migrator        default stateful_migrator.
--   checker         default stateful_checker.
--   journal_schema  schema of the migration journal and the release ledger (the
--                   modules' journal_schema option); default stateful_rollback.
--
-- The script is idempotent: every statement either checks first (DO blocks,
-- IF NOT EXISTS) or is a GRANT, which PostgreSQL treats as a no-op when the
-- privilege is already there. Run it again after a release adds a schema.
-- It sets no passwords (they would end up in shell history and server logs):
--   \password stateful_migrator     (psql, sends a SCRAM hash)
-- or community.postgresql.postgresql_user with no_log. Until then the roles
-- cannot log in over password authentication.
--
-- DDL needs ownership. PostgreSQL has no grantable ALTER/DROP privilege: only
-- the owner of a table (or a member of the owning role) may alter, drop, index
-- or add constraints to it. The two usual answers are (a) make the migrator the
-- owner of every table, or (b) keep one owner role and make the migrator a
-- member of it. This script does (b), the arrangement the PostgreSQL manual
-- describes for shared ownership (members of a role exercise the owner's rights):
-- nothing changes owner, the app keeps its owner role, revoking the migrator
-- is one REVOKE, and the migrator's reach is exactly the owner role's objects.
-- It follows that app_owner should own the app schema's objects and nothing
-- else: if it owns the database too (as the sandbox's `app` does), the migrator
-- inherits the database owner's rights; the script warns about that.
-- Tables the migrator itself creates belong to the migrator; default privileges
-- below give the app (DML) and the checker (SELECT) access to them.
--
-- What each role may do afterwards:
--   migrator: connect; DDL on app_owner's objects; CREATE in the app schema;
--             owns the journal schema; pg_monitor (replica lag gating of
--             backfills, naming lock holders); pg_checkpoint on 15+ (the
--             snapshot stage's CHECKPOINT). No superuser, CREATEDB,
--             CREATEROLE, REPLICATION or BYPASSRLS; no access to other schemas.
--   checker:  connect; pg_monitor; USAGE + SELECT on the app and journal schemas
--             (present and future tables); every transaction read-only by
--             default. No write, no DDL, no other schema.
--
-- To remove the roles again (as a superuser, in the app's database, on every
-- cluster; DROP OWNED drops whatever the role still owns, so hand the
-- migrator's objects - tables migrations created, the journal - over first):
--   REASSIGN OWNED BY stateful_migrator TO app_owner;
--   DROP OWNED BY stateful_checker;   -- one role per statement: PostgreSQL 15 fails with
--   DROP OWNED BY stateful_migrator;  -- "could not find tuple for default ACL" on both at once
--   DROP ROLE stateful_migrator, stateful_checker;

\set ON_ERROR_STOP on
\set QUIET on

-- Defaults for the variables not given with -v.
\if :{?db}
\else
  \set db :DBNAME
\endif
\if :{?app_schema}
\else
  \set app_schema public
\endif
\if :{?app_owner}
\else
  \set app_owner ''
\endif
\if :{?app_user}
\else
  \set app_user :app_owner
\endif
\if :{?migrator}
\else
  \set migrator stateful_migrator
\endif
\if :{?checker}
\else
  \set checker stateful_checker
\endif
\if :{?journal_schema}
\else
  \set journal_schema stateful_rollback
\endif

-- psql does not substitute variables inside DO blocks ($$ ... $$): hand them
-- over as session settings of this script's connection.
SET stateful_rollback_roles.db = :'db';
SET stateful_rollback_roles.app_schema = :'app_schema';
SET stateful_rollback_roles.app_owner = :'app_owner';
SET stateful_rollback_roles.app_user = :'app_user';
SET stateful_rollback_roles.migrator = :'migrator';
SET stateful_rollback_roles.checker = :'checker';
SET stateful_rollback_roles.journal_schema = :'journal_schema';

-- 1. Preconditions: fail with a clear message before changing anything.
DO $check$
DECLARE
  v_db text := current_setting('stateful_rollback_roles.db');
  v_schema text := current_setting('stateful_rollback_roles.app_schema');
  v_owner text := current_setting('stateful_rollback_roles.app_owner');
  v_app_user text := current_setting('stateful_rollback_roles.app_user');
  v_migrator text := current_setting('stateful_rollback_roles.migrator');
  v_checker text := current_setting('stateful_rollback_roles.checker');
  v_journal text := current_setting('stateful_rollback_roles.journal_schema');
  r record;
BEGIN
  IF current_database() <> v_db THEN
    RAISE EXCEPTION 'roles.sql: connected to database %, but db=%: connect to % (psql -d %)',
      current_database(), v_db, v_db, v_db;
  END IF;
  IF v_owner = '' THEN
    RAISE EXCEPTION 'roles.sql: app_owner is not set: run with -v app_owner=ROLE (the role owning the tables of schema %)', v_schema;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = v_schema) THEN
    RAISE EXCEPTION 'roles.sql: schema % does not exist in database %', v_schema, v_db;
  END IF;
  IF v_schema = v_journal THEN
    RAISE EXCEPTION 'roles.sql: app_schema and journal_schema are both %; the journal needs a schema of its own', v_schema;
  END IF;
  IF v_migrator IN (v_checker, v_owner, v_app_user) OR v_checker IN (v_owner, v_app_user) THEN
    RAISE EXCEPTION 'roles.sql: migrator (%), checker (%) and app_owner/app_user (%/%) must be different roles',
      v_migrator, v_checker, v_owner, v_app_user;
  END IF;
  FOR r IN SELECT unnest(ARRAY[v_owner, v_app_user]) AS name LOOP
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r.name) THEN
      RAISE EXCEPTION 'roles.sql: role % does not exist (app_owner/app_user)', r.name;
    END IF;
  END LOOP;
  -- A member may SET ROLE to the owner: a superuser owner would make the
  -- migrator a superuser.
  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = v_owner) THEN
    RAISE EXCEPTION 'roles.sql: app_owner % is a superuser; give the app schema''s objects to a NOLOGIN owner role first '
      '(ALTER TABLE ... OWNER TO ...), then run this script with -v app_owner=that role', v_owner;
  END IF;
  IF EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = v_db AND datdba = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = v_owner)) THEN
    RAISE WARNING 'roles.sql: app_owner % also owns database %: as its member the migrator inherits the database owner''s rights '
      '(ALTER/DROP DATABASE, CREATE SCHEMA). Least privilege wants a NOLOGIN role that owns only schema %''s objects.',
      v_owner, v_db, v_schema;
  END IF;
  FOR r IN SELECT rolname FROM pg_catalog.pg_roles WHERE rolname IN (v_migrator, v_checker) AND rolsuper LOOP
    RAISE WARNING 'roles.sql: role % is a superuser; this script takes that away (ALTER ROLE ... NOSUPERUSER)', r.rolname;
  END LOOP;
END
$check$;

SELECT current_setting('server_version_num')::int >= 150000 AS pg15,
       current_setting('server_version_num')::int >= 160000 AS pg16 \gset stateful_rollback_roles_

-- 2. The two login roles, created once; their attributes are enforced on every
--    run (a role someone made CREATEDB by hand is brought back in line).
DO $roles$
DECLARE
  v_name text;
BEGIN
  FOREACH v_name IN ARRAY ARRAY[current_setting('stateful_rollback_roles.migrator'),
                                current_setting('stateful_rollback_roles.checker')] LOOP
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = v_name) THEN
      EXECUTE format('CREATE ROLE %I LOGIN', v_name);
      RAISE NOTICE 'roles.sql: created role % (set its password: \password %)', v_name, v_name;
    END IF;
  END LOOP;
END
$roles$;
ALTER ROLE :"migrator" LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE :"checker" LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
COMMENT ON ROLE :"migrator" IS 'stateful.rollback migrator: DDL on the app schema (member of its owner role), owns the journal schema';
COMMENT ON ROLE :"checker" IS 'stateful.rollback checker: pg_monitor and read-only access to the app and journal schemas';

-- 3. The database. PUBLIC usually has CONNECT already; hardened databases revoke
--    it, so grant it explicitly.
GRANT CONNECT ON DATABASE :"db" TO :"migrator", :"checker";
-- No CREATE on the database: the journal schema is pre-created below, owned by
-- the migrator, and the modules only create a schema that does not exist yet.

-- 4. The migrator.
-- DDL on the app's existing tables: membership in their owner role (see the
-- header). On PostgreSQL 16+ the membership is inherit-only: the migrator uses
-- the owner's rights but cannot SET ROLE to it (so cannot act under the owner's
-- name or use its role attributes).
\if :stateful_rollback_roles_pg16
GRANT :"app_owner" TO :"migrator" WITH INHERIT TRUE, SET FALSE;
\else
GRANT :"app_owner" TO :"migrator";
\endif
-- Replica lag gating of backfills reads pg_stat_replication's LSNs, and a lock
-- wait names its holder from pg_stat_activity: both are hidden without
-- pg_read_all_stats, which pg_monitor includes. Read-only statistics.
GRANT pg_monitor TO :"migrator";
-- The snapshot stage runs CHECKPOINT right before it snapshots the volumes, so
-- that a restore replays little WAL; PostgreSQL 15+ allows that to members of
-- pg_checkpoint (older versions: superusers only, and the stage notes the skip).
\if :stateful_rollback_roles_pg15
GRANT pg_checkpoint TO :"migrator";
\endif
-- Create tables, indexes, types, functions in the app schema (public is owned by
-- pg_database_owner since PostgreSQL 15 and grants PUBLIC no CREATE).
GRANT USAGE, CREATE ON SCHEMA :"app_schema" TO :"migrator";
-- The journal schema (migration journal, release ledger) belongs to the
-- migrator: pre-created here so the checker's default privileges exist before
-- the first table. IF NOT EXISTS leaves an existing schema and its owner alone.
CREATE SCHEMA IF NOT EXISTS :"journal_schema" AUTHORIZATION :"migrator";
-- A journal schema created earlier by another role (say, the app's role before
-- these roles existed): the migrator must still create, read and write in it.
DO $journal$
DECLARE
  v_journal text := current_setting('stateful_rollback_roles.journal_schema');
  v_migrator text := current_setting('stateful_rollback_roles.migrator');
  v_owner text;
BEGIN
  SELECT nspowner::regrole::text INTO v_owner FROM pg_catalog.pg_namespace WHERE nspname = v_journal;
  IF v_owner IS DISTINCT FROM quote_ident(v_migrator) THEN
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO %I', v_journal, v_migrator);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I', v_journal, v_migrator);
    EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I TO %I', v_journal, v_migrator);
    RAISE NOTICE 'roles.sql: journal schema % is owned by %, not by %: granted access; to hand it over run '
      'ALTER SCHEMA % OWNER TO % (and ALTER TABLE ... OWNER TO for its tables)', v_journal, v_owner, v_migrator, v_journal, v_migrator;
  END IF;
END
$journal$;
-- Tables and sequences the migrator creates in the app schema: the app keeps
-- working with them (DML, sequences for defaults).
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA :"app_schema"
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA :"app_schema"
  GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO :"app_user";

-- 5. The checker.
-- pg_monitor: replication health (pg_stat_replication LSNs and lag,
-- pg_replication_slots' retained WAL, pg_stat_subscription), lock and activity
-- views. It reads statistics only, no table data.
GRANT pg_monitor TO :"checker";
-- Read the app's tables (parity hashes, baselines, invariants, pg_dump
-- --schema-only for schema_compat_check) and sequences (invariants compare
-- last_value with the column: pg_sequences hides it without SELECT/USAGE).
-- Deliberately not pg_read_all_data: that would read every schema.
GRANT USAGE ON SCHEMA :"app_schema" TO :"checker";
GRANT SELECT ON ALL TABLES IN SCHEMA :"app_schema" TO :"checker";
GRANT SELECT ON ALL SEQUENCES IN SCHEMA :"app_schema" TO :"checker";
-- Read the journal and the ledger (which release runs, migration progress).
GRANT USAGE ON SCHEMA :"journal_schema" TO :"checker";
GRANT SELECT ON ALL TABLES IN SCHEMA :"journal_schema" TO :"checker";
GRANT SELECT ON ALL SEQUENCES IN SCHEMA :"journal_schema" TO :"checker";
-- Future tables: whoever creates them in these schemas (the owner role, the
-- migrator), the checker can read them without another run of this script.
ALTER DEFAULT PRIVILEGES FOR ROLE :"app_owner" IN SCHEMA :"app_schema" GRANT SELECT ON TABLES TO :"checker";
ALTER DEFAULT PRIVILEGES FOR ROLE :"app_owner" IN SCHEMA :"app_schema" GRANT SELECT ON SEQUENCES TO :"checker";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA :"app_schema" GRANT SELECT ON TABLES TO :"checker";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA :"app_schema" GRANT SELECT ON SEQUENCES TO :"checker";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA :"journal_schema" GRANT SELECT ON TABLES TO :"checker";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA :"journal_schema" GRANT SELECT ON SEQUENCES TO :"checker";
-- Defence in depth: every transaction of the checker in this database starts
-- read-only (the privileges above already forbid writes to the app's tables;
-- this also covers temporary tables and anything PUBLIC may write).
ALTER ROLE :"checker" IN DATABASE :"db" SET default_transaction_read_only = on;

-- 6. Self-check: what least privilege promises, verified from the catalogs.
DO $verify$
DECLARE
  v_schema text := current_setting('stateful_rollback_roles.app_schema');
  v_journal text := current_setting('stateful_rollback_roles.journal_schema');
  v_migrator text := current_setting('stateful_rollback_roles.migrator');
  v_checker text := current_setting('stateful_rollback_roles.checker');
  v_owner text := current_setting('stateful_rollback_roles.app_owner');
  v_writable text;
BEGIN
  IF NOT (has_schema_privilege(v_migrator, v_schema, 'USAGE,CREATE')
          AND has_schema_privilege(v_migrator, v_journal, 'USAGE,CREATE')
          AND pg_has_role(v_migrator, v_owner, 'USAGE')) THEN
    RAISE EXCEPTION 'roles.sql: self-check failed: % lacks CREATE on % or % or membership in %', v_migrator, v_schema, v_journal, v_owner;
  END IF;
  IF NOT (has_schema_privilege(v_checker, v_schema, 'USAGE') AND has_schema_privilege(v_checker, v_journal, 'USAGE')
          AND pg_has_role(v_checker, 'pg_monitor', 'USAGE')) THEN
    RAISE EXCEPTION 'roles.sql: self-check failed: % lacks USAGE on % or % or pg_monitor', v_checker, v_schema, v_journal;
  END IF;
  SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ') INTO v_writable
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname IN (v_schema, v_journal) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
     AND (has_table_privilege(v_checker, c.oid, 'INSERT,UPDATE,DELETE,TRUNCATE') OR NOT has_table_privilege(v_checker, c.oid, 'SELECT'));
  IF v_writable IS NOT NULL THEN
    RAISE EXCEPTION 'roles.sql: self-check failed: % may write to, or may not read, %', v_checker, v_writable;
  END IF;
  IF has_schema_privilege(v_checker, v_schema, 'CREATE') THEN
    -- PostgreSQL 14 and older grant CREATE on public to PUBLIC.
    RAISE WARNING 'roles.sql: % may create objects in schema % (through PUBLIC); consider REVOKE CREATE ON SCHEMA % FROM PUBLIC',
      v_checker, v_schema, v_schema;
  END IF;
END
$verify$;

RESET stateful_rollback_roles.db;
RESET stateful_rollback_roles.app_schema;
RESET stateful_rollback_roles.app_owner;
RESET stateful_rollback_roles.app_user;
RESET stateful_rollback_roles.migrator;
RESET stateful_rollback_roles.checker;
RESET stateful_rollback_roles.journal_schema;

\echo roles.sql: migrator :migrator and checker :checker ready in database :db, schemas :app_schema and :journal_schema
