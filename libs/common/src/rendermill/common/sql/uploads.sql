-- name: insert_upload
INSERT INTO direct_uploads (id, tenant_id, object_key, name, content_type, size, sha256,
                            part_size, part_count, store_upload_id, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING *;

-- name: get_upload
SELECT * FROM direct_uploads WHERE id = $1 AND tenant_id = $2;

-- name: claim_completion
-- One completion at a time: the request that moves the upload to 'completing' does it.
UPDATE direct_uploads SET status = 'completing', updated_at = now()
WHERE id = $1 AND tenant_id = $2 AND status = 'pending' AND expires_at > now()
RETURNING *;

-- name: release_completion
UPDATE direct_uploads SET status = 'pending', updated_at = now()
WHERE id = $1 AND status = 'completing';

-- name: mark_completed
UPDATE direct_uploads SET status = 'completed', updated_at = now()
WHERE id = $1 AND status = 'completing'
RETURNING id;

-- name: mark_failed
UPDATE direct_uploads SET status = 'failed', cleanup_at = now(), updated_at = now()
WHERE id = $1 AND status = 'completing'
RETURNING *;

-- name: mark_aborted
UPDATE direct_uploads SET status = 'aborted', cleanup_at = now(), updated_at = now()
WHERE id = $1 AND tenant_id = $2 AND status = 'pending'
RETURNING *;

-- name: mark_expired
UPDATE direct_uploads SET status = 'expired', cleanup_at = now(), updated_at = now()
WHERE id = $1 AND status = 'pending' AND expires_at <= now()
RETURNING *;

-- name: expire_due
UPDATE direct_uploads SET status = 'expired', cleanup_at = now(), updated_at = now()
WHERE status = 'pending' AND expires_at <= now();

-- name: fail_stale_completions
-- A completion this old died with its gateway; nothing recorded an asset for it.
UPDATE direct_uploads SET status = 'failed', cleanup_at = now(), updated_at = now()
WHERE status = 'completing' AND updated_at < now() - make_interval(secs => $1);

-- name: claim_cleanup
-- Lease due cleanups: pushing cleanup_at forward hides them from other gateways while
-- this one talks to the store (outside any transaction); a lease that runs out is retried.
UPDATE direct_uploads u SET cleanup_at = now() + make_interval(secs => $2)
FROM (
    SELECT id FROM direct_uploads
    WHERE cleanup_at <= now()
    ORDER BY cleanup_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) due
WHERE u.id = due.id
RETURNING u.*;

-- name: mark_cleaned
-- Once more after its URLs are dead (plus $2 seconds for a PUT still streaming), then never.
UPDATE direct_uploads
SET cleanup_at = CASE WHEN now() < expires_at + make_interval(secs => $2)
                      THEN expires_at + make_interval(secs => $2) END
WHERE id = $1 AND status IN ('aborted', 'expired', 'failed');
