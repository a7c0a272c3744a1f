-- cordon's job store on PostgreSQL, version 1. Applied once, in one transaction.
CREATE TABLE jobs (
    id               text PRIMARY KEY,
    state            text NOT NULL CHECK (state IN ('queued', 'running', 'finished')),
    spec             text NOT NULL,
    submitted_ms     bigint NOT NULL,
    started_ms       bigint,
    finished_ms      bigint,
    outcome          text,
    result           text,
    events           bigint NOT NULL DEFAULT 0,
    submitter        text,
    image            text NOT NULL,
    -- The controller that holds (or last held) the job, the epoch of its claim, and when
    -- its lease runs out, on the database's clock.
    owner            text,
    epoch            bigint NOT NULL DEFAULT 0,
    attempts         integer NOT NULL DEFAULT 0,
    lease_until      timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    idem_key         text,
    idem_hash        text
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (submitter, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX jobs_queue ON jobs (submitted_ms, id) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_listing ON jobs (submitted_ms, id);
CREATE INDEX jobs_finished ON jobs (finished_ms) WHERE state = 'finished';

CREATE TABLE events (
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq    bigint NOT NULL,
    body   text NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- Uploaded workspaces and artifacts (tar.gz: already compressed, so stored as is). The
-- foreign key is checked at commit: a submission writes its workspace before its job row.
CREATE TABLE blobs (
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    kind   text NOT NULL,
    data   bytea NOT NULL,
    PRIMARY KEY (job_id, kind)
);
ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL;

-- Wake-ups for the other controllers; every waiter also polls.
CREATE FUNCTION cordon_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cordon_events', NEW.job_id);
    RETURN NULL;
END $$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION cordon_notify_events();

CREATE FUNCTION cordon_notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'queued' AND (TG_OP = 'INSERT' OR OLD.state <> 'queued') THEN
        PERFORM pg_notify('cordon_jobs', '');
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.cancel_requested AND NOT OLD.cancel_requested THEN
        PERFORM pg_notify('cordon_cancel', NEW.id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE OF state, cancel_requested ON jobs
    FOR EACH ROW EXECUTE FUNCTION cordon_notify_jobs();
