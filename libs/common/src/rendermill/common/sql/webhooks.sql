-- name: undispatched_events
SELECT e.job_id, e.seq, e.type, e.data, e.created_at, j.tenant_id, j.webhook_url
FROM job_events e JOIN jobs j ON j.id = e.job_id
WHERE e.dispatched_at IS NULL AND e.type IN ('job.succeeded', 'job.failed', 'job.canceled')
ORDER BY e.created_at
LIMIT $1
FOR UPDATE OF e SKIP LOCKED;

-- name: enabled_endpoints
SELECT id, url FROM webhook_endpoints WHERE tenant_id = $1 AND enabled;

-- name: insert_message
INSERT INTO webhook_messages (id, tenant_id, job_id, event_seq, event_type, endpoint_id, url, payload)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (job_id, event_seq, url) DO NOTHING;

-- name: mark_dispatched
UPDATE job_events SET dispatched_at = now() WHERE job_id = $1 AND seq = $2;

-- name: claim_due
-- Lease due messages: pushing next_attempt_at forward hides them from other notifiers
-- while this one delivers (outside any transaction).
UPDATE webhook_messages m SET next_attempt_at = now() + make_interval(secs => $2)
FROM (
    SELECT id FROM webhook_messages
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) due
WHERE m.id = due.id
RETURNING m.*;

-- name: insert_attempt
INSERT INTO webhook_attempts (message_id, attempt, duration_ms, status_code, error, response_body)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: mark_delivered
UPDATE webhook_messages SET status = 'delivered', attempts = $2, delivered_at = now() WHERE id = $1;

-- name: mark_retry
UPDATE webhook_messages SET attempts = $2, next_attempt_at = now() + make_interval(secs => $3)
WHERE id = $1;

-- name: mark_failed
UPDATE webhook_messages SET status = 'failed', attempts = $2 WHERE id = $1;

-- name: tenant_secret
SELECT webhook_secret FROM tenants WHERE id = $1;

-- name: messages_for_job
SELECT * FROM webhook_messages WHERE job_id = $1 ORDER BY created_at;

-- name: attempts_for_message
SELECT * FROM webhook_attempts WHERE message_id = $1 ORDER BY attempt;

-- name: messages_for_tenant_job
SELECT * FROM webhook_messages WHERE job_id = $1 AND tenant_id = $2 ORDER BY created_at, url;

-- name: attempts_for_messages
SELECT * FROM webhook_attempts WHERE message_id = ANY($1::uuid[]) ORDER BY message_id, attempt;

-- name: resend_message
-- Due now, whatever it was: delivered, given up or still retrying. Its attempt numbers
-- continue; the retry schedule allows one more try after the last.
UPDATE webhook_messages SET status = 'pending', next_attempt_at = now()
WHERE id = $1 AND tenant_id = $2
RETURNING *;

-- name: insert_endpoint
INSERT INTO webhook_endpoints (id, tenant_id, url, secret) VALUES ($1, $2, $3, $4) RETURNING *;

-- name: list_endpoints
SELECT * FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY created_at, id;

-- name: get_endpoint
SELECT * FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2;

-- name: fail_pending_for_endpoint
UPDATE webhook_messages SET status = 'failed'
WHERE endpoint_id = $1 AND tenant_id = $2 AND status = 'pending';

-- name: delete_endpoint
DELETE FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2;

-- name: enable_endpoint
UPDATE webhook_endpoints SET enabled = true, failure_count = 0, disabled_at = NULL
WHERE id = $1 AND tenant_id = $2
RETURNING *;

-- name: resend_failed_for_endpoint
UPDATE webhook_messages SET status = 'pending', next_attempt_at = now()
WHERE endpoint_id = $1 AND tenant_id = $2 AND status = 'failed' AND created_at >= $3;

-- name: endpoint_secret
SELECT secret FROM webhook_endpoints WHERE id = $1;

-- name: endpoint_delivered
UPDATE webhook_endpoints SET failure_count = 0 WHERE id = $1 AND failure_count <> 0;

-- name: endpoint_gave_up
-- One more message given up on; at $2 in a row the endpoint is disabled (no new messages
-- go to it until it is recovered).
UPDATE webhook_endpoints
SET failure_count = failure_count + 1,
    enabled = enabled AND failure_count + 1 < $2,
    disabled_at = CASE WHEN enabled AND failure_count + 1 >= $2 THEN now() ELSE disabled_at END
WHERE id = $1
RETURNING enabled, failure_count, disabled_at;
