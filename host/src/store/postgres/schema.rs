//! The PostgreSQL schema, versioned: each migration runs once, in order,
//! in one transaction under an advisory lock, so hosts starting together
//! apply it once. A database whose schema is newer than this binary is
//! refused before anything is read.

/// The schema version this binary writes.
pub(super) const VERSION: i32 = 8;

/// The key of the advisory lock migrations take.
pub(super) const MIGRATION_LOCK: i64 = 0x6361_6972_6e00_0001;

/// Migration `n` brings the schema from version `n` to `n + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 0 → 1: everything.
    r#"
    CREATE TABLE cairn_shards (
        shard integer PRIMARY KEY,
        owner text,
        epoch bigint NOT NULL DEFAULT 0,
        lease_until timestamptz NOT NULL DEFAULT 'epoch'
    );
    CREATE TABLE cairn_hosts (
        host text PRIMARY KEY,
        address text,
        seen timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE cairn_runs (
        run_id text PRIMARY KEY,
        shard integer NOT NULL,
        workflow text NOT NULL,
        version integer,
        status text NOT NULL,
        generation integer NOT NULL,
        meta bytea NOT NULL
    );
    CREATE INDEX cairn_runs_status ON cairn_runs (status, run_id);
    CREATE INDEX cairn_runs_workflow ON cairn_runs (workflow, status, run_id);
    CREATE INDEX cairn_runs_version ON cairn_runs (workflow, version, run_id);
    CREATE INDEX cairn_runs_shard ON cairn_runs (shard, status, run_id);
    CREATE TABLE cairn_journal (
        run_id text NOT NULL,
        seq bigint NOT NULL,
        record bytea NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE cairn_history (
        run_id text NOT NULL,
        generation integer NOT NULL,
        seq bigint NOT NULL,
        record bytea NOT NULL,
        PRIMARY KEY (run_id, generation, seq)
    );
    CREATE TABLE cairn_completions (
        run_id text NOT NULL,
        handle integer NOT NULL,
        row bytea NOT NULL,
        PRIMARY KEY (run_id, handle)
    );
    CREATE TABLE cairn_timers (
        run_id text NOT NULL,
        due_ms bigint NOT NULL,
        handle integer NOT NULL,
        shard integer NOT NULL,
        PRIMARY KEY (run_id, due_ms, handle)
    );
    CREATE INDEX cairn_timers_due ON cairn_timers (shard, due_ms);
    CREATE TABLE cairn_signals (
        run_id text NOT NULL,
        seq bigint NOT NULL,
        row bytea NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE cairn_attempts (
        run_id text NOT NULL,
        handle integer NOT NULL,
        failed integer NOT NULL,
        PRIMARY KEY (run_id, handle)
    );
    CREATE TABLE cairn_deployments (
        name text PRIMARY KEY,
        row bytea NOT NULL
    );
    CREATE TABLE cairn_components (
        sha256 text PRIMARY KEY,
        bytes bytea NOT NULL
    );
    CREATE TABLE cairn_compiled (
        sha256 text NOT NULL,
        engine text NOT NULL,
        bytes bytea NOT NULL,
        PRIMARY KEY (sha256, engine)
    );
    CREATE TABLE cairn_wakeups (
        id bigserial PRIMARY KEY,
        shard integer NOT NULL,
        run_id text NOT NULL
    );
    CREATE INDEX cairn_wakeups_shard ON cairn_wakeups (shard, id);
    CREATE SEQUENCE cairn_arrivals;
    "#,
    // 1 → 2: the board of external tasks, which need not survive a crash.
    r#"
    CREATE UNLOGGED TABLE cairn_tasks (
        token text PRIMARY KEY,
        owner text NOT NULL,
        activity text NOT NULL,
        component text NOT NULL,
        task text NOT NULL,
        posted timestamptz NOT NULL DEFAULT clock_timestamp(),
        worker text,
        beat timestamptz,
        outcome text
    );
    CREATE INDEX cairn_tasks_waiting ON cairn_tasks (posted) WHERE worker IS NULL;
    CREATE INDEX cairn_tasks_owner ON cairn_tasks (owner);
    "#,
    // 2 → 3: schedules.
    r#"
    CREATE TABLE cairn_schedules (
        name text PRIMARY KEY,
        row bytea NOT NULL
    );
    "#,
    // 3 → 4: finished runs by end time, for retention (rows written before
    // get theirs from the row itself).
    r#"
    ALTER TABLE cairn_runs ADD COLUMN ended_ms bigint;
    UPDATE cairn_runs SET ended_ms = (convert_from(meta, 'UTF8')::jsonb->>'updated_ms')::bigint
        WHERE status IN ('completed', 'failed', 'terminated');
    CREATE INDEX cairn_runs_ended ON cairn_runs (workflow, ended_ms) WHERE ended_ms IS NOT NULL;
    "#,
    // 4 → 5: concurrency buckets (runs of a workflow with a limit).
    r#"
    ALTER TABLE cairn_runs ADD COLUMN slot_key text, ADD COLUMN slot_priority smallint, ADD COLUMN created_ms bigint;
    CREATE INDEX cairn_runs_slot ON cairn_runs (workflow, slot_key, status, slot_priority, created_ms)
        WHERE slot_key IS NOT NULL;
    "#,
    // 5 → 6: token buckets of rate-limited concurrency buckets.
    r#"
    CREATE TABLE cairn_buckets (
        workflow text NOT NULL,
        key text NOT NULL,
        credit_ms bigint NOT NULL,
        at_ms bigint NOT NULL,
        PRIMARY KEY (workflow, key)
    );
    "#,
    // 6 → 7: slots of limited activities' attempts in flight, which need
    // not survive a crash (the attempts do not either).
    r#"
    CREATE UNLOGGED TABLE cairn_activity_slots (
        bucket text NOT NULL,
        holder text NOT NULL,
        owner text NOT NULL,
        PRIMARY KEY (bucket, holder)
    );
    CREATE INDEX cairn_activity_slots_owner ON cairn_activity_slots (owner);
    "#,
    // 7 → 8: search attributes, indexed (a query on an attribute's value
    // reads its runs from the index, not every run).
    r#"
    ALTER TABLE cairn_runs ADD COLUMN search jsonb;
    UPDATE cairn_runs SET search = convert_from(meta, 'UTF8')::jsonb->'search'
        WHERE convert_from(meta, 'UTF8')::jsonb ? 'search';
    CREATE INDEX cairn_runs_search ON cairn_runs USING gin (search jsonb_path_ops);
    "#,
];
