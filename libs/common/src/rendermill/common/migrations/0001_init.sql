-- Tenants, API keys, uploads, jobs with their attempts and outbox, webhooks, and the
-- Postgres queue. Every state change of a job is a conditional UPDATE plus a job_events
-- row in one transaction.

CREATE TABLE tenants (
    id              uuid PRIMARY KEY,
    name            text NOT NULL,
    webhook_secret  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    prefix      text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE assets (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    object_key    text NOT NULL,
    name          text NOT NULL,
    content_type  text NOT NULL DEFAULT 'application/octet-stream',
    size          bigint NOT NULL,
    sha256        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX assets_tenant ON assets (tenant_id, created_at DESC);

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    stage            text NOT NULL DEFAULT 'queued'
                     CHECK (stage IN ('queued', 'fetching', 'rendering', 'uploading', 'done')),
    progress         double precision NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    frames_done      integer NOT NULL DEFAULT 0,
    frames_total     integer NOT NULL DEFAULT 0,
    message          text NOT NULL DEFAULT '',
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 3,
    priority         integer NOT NULL DEFAULT 0,
    project          jsonb NOT NULL,
    output           jsonb NOT NULL,
    media            jsonb NOT NULL DEFAULT '{}',
    webhook_url      text,
    idempotency_key  text,
    result           jsonb,
    error            jsonb,
    trace_id         text,
    traceparent      text,
    version          integer NOT NULL DEFAULT 1,
    event_seq        integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX jobs_tenant_created ON jobs (tenant_id, created_at DESC);
CREATE INDEX jobs_status ON jobs (status) WHERE status IN ('queued', 'running');

CREATE TABLE job_attempts (
    job_id        uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt       integer NOT NULL,
    launcher      text NOT NULL,
    task_id       text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    exit_code     integer,
    reason        text,
    PRIMARY KEY (job_id, attempt)
);

-- The outbox: one row per job event, numbered per job.
CREATE TABLE job_events (
    job_id         uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq            integer NOT NULL,
    type           text NOT NULL,
    data           jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Set once the notifier has turned a webhook-worthy event into deliveries.
    dispatched_at  timestamptz,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX job_events_undispatched ON job_events (created_at)
    WHERE dispatched_at IS NULL AND type IN ('job.succeeded', 'job.failed', 'job.canceled');

CREATE TABLE webhook_endpoints (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    url            text NOT NULL,
    secret         text NOT NULL,
    enabled        boolean NOT NULL DEFAULT true,
    failure_count  integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    disabled_at    timestamptz
);

-- One message per (event, target); retried on a schedule until delivered or given up.
CREATE TABLE webhook_messages (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    job_id           uuid NOT NULL,
    event_seq        integer NOT NULL,
    event_type       text NOT NULL,
    endpoint_id      uuid REFERENCES webhook_endpoints(id) ON DELETE SET NULL,
    url              text NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    UNIQUE (job_id, event_seq, url)
);
CREATE INDEX webhook_messages_due ON webhook_messages (next_attempt_at) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    id             bigserial PRIMARY KEY,
    message_id     uuid NOT NULL REFERENCES webhook_messages(id) ON DELETE CASCADE,
    attempt        integer NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    duration_ms    integer NOT NULL,
    status_code    integer,
    error          text,
    response_body  text
);

-- The embedded queue (SKIP LOCKED + visibility timeout), with its dead letters.
CREATE TABLE queue_messages (
    id             bigserial PRIMARY KEY,
    queue          text NOT NULL,
    body           jsonb NOT NULL,
    visible_at     timestamptz NOT NULL DEFAULT now(),
    receive_count  integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_messages_visible ON queue_messages (queue, visible_at);

CREATE TABLE queue_dead_letters (
    id             bigint PRIMARY KEY,
    queue          text NOT NULL,
    body           jsonb NOT NULL,
    receive_count  integer NOT NULL,
    created_at     timestamptz NOT NULL,
    dead_at        timestamptz NOT NULL DEFAULT now()
);
