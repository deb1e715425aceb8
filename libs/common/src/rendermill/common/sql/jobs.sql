-- name: insert_job
INSERT INTO jobs (id, tenant_id, project, output, media, webhook_url, idempotency_key,
                  max_attempts, priority, trace_id, traceparent, event_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1)
ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
RETURNING *;

-- name: get_by_idempotency_key
SELECT * FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2;

-- name: get_job
SELECT * FROM jobs WHERE id = $1;

-- name: get_job_for_tenant
SELECT * FROM jobs WHERE id = $1 AND tenant_id = $2;

-- name: list_jobs
SELECT * FROM jobs
WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2)
ORDER BY created_at DESC, id DESC
LIMIT $3;

-- name: insert_event
INSERT INTO job_events (job_id, seq, type, data) VALUES ($1, $2, $3, $4);

-- name: notify
SELECT pg_notify($1, $2);

-- name: events_after
SELECT job_id, seq, type, data, created_at FROM job_events
WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3;

-- name: start_attempt
UPDATE jobs SET status = 'running', stage = 'fetching', attempt = $2, message = 'starting',
       started_at = coalesce(started_at, now()), updated_at = now(),
       version = version + 1, event_seq = event_seq + 1
WHERE id = $1 AND status = 'queued'
RETURNING *;

-- name: report_progress
UPDATE jobs SET stage = $3, progress = $4, frames_done = $5, frames_total = $6, message = $7,
       updated_at = now(), version = version + 1, event_seq = event_seq + 1
WHERE id = $1 AND status = 'running' AND attempt = $2
RETURNING *;

-- name: finish
UPDATE jobs SET status = $3, stage = CASE WHEN $3 = 'succeeded' THEN 'done' ELSE stage END,
       progress = CASE WHEN $3 = 'succeeded' THEN 1 ELSE progress END,
       frames_done = CASE WHEN $3 = 'succeeded' THEN frames_total ELSE frames_done END,
       result = $4, error = $5, message = $6,
       finished_at = now(), updated_at = now(), version = version + 1, event_seq = event_seq + 1
WHERE id = $1 AND status = ANY($2::text[])
RETURNING *;

-- name: finish_if_version
UPDATE jobs SET status = $3, result = $4, error = $5, message = $6,
       finished_at = now(), updated_at = now(), version = version + 1, event_seq = event_seq + 1
WHERE id = $1 AND version = $2 AND status NOT IN ('succeeded', 'failed', 'canceled')
RETURNING *;

-- name: requeue
UPDATE jobs SET status = 'queued', stage = 'queued', progress = 0, frames_done = 0, message = $3,
       error = $4, updated_at = now(), version = version + 1, event_seq = event_seq + 1
WHERE id = $1 AND status = 'running' AND attempt = $2
RETURNING *;

-- name: insert_attempt
INSERT INTO job_attempts (job_id, attempt, launcher) VALUES ($1, $2, $3)
ON CONFLICT (job_id, attempt) DO NOTHING
RETURNING *;

-- name: get_attempt
SELECT * FROM job_attempts WHERE job_id = $1 AND attempt = $2;

-- name: set_attempt_task
UPDATE job_attempts SET task_id = $3 WHERE job_id = $1 AND attempt = $2;

-- name: heartbeat
UPDATE job_attempts SET heartbeat_at = now() WHERE job_id = $1 AND attempt = $2 AND finished_at IS NULL;

-- name: finish_attempt
UPDATE job_attempts SET finished_at = now(), exit_code = $3, reason = $4
WHERE job_id = $1 AND attempt = $2 AND finished_at IS NULL
RETURNING *;

-- name: list_attempts
SELECT * FROM job_attempts WHERE job_id = $1 ORDER BY attempt;

-- name: count_active
SELECT status, count(*) AS n FROM jobs WHERE status IN ('queued', 'running') GROUP BY status;

-- name: lock_tenant
-- Serialises attempt starts of one tenant (for its concurrency cap) until commit.
SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0));

-- name: count_running_for_tenant
SELECT count(*) FROM jobs WHERE tenant_id = $1 AND status = 'running';

-- name: mark_enqueued
UPDATE jobs SET enqueued_at = now() WHERE id = $1 AND enqueued_at IS NULL;

-- name: never_enqueued
SELECT id, attempt, traceparent, priority FROM jobs
WHERE status = 'queued' AND enqueued_at IS NULL AND created_at < now() - interval '60 seconds';
