-- name: claim_expiring_outputs
-- Finished jobs whose output was kept long enough; locked, so that two gateways sweeping
-- at once take different ones.
SELECT id, result FROM jobs
WHERE finished_at < $1 AND result IS NOT NULL AND NOT (result ? 'expired_at')
ORDER BY finished_at
LIMIT $2
FOR UPDATE SKIP LOCKED;

-- name: mark_output_expired
UPDATE jobs SET result = result || jsonb_build_object('expired_at', now())
WHERE id = $1;

-- name: claim_old_assets
-- Uploads kept long enough that no queued or running job still needs.
SELECT a.id, a.object_key FROM assets a
WHERE a.created_at < $1
  AND NOT EXISTS (
    SELECT 1 FROM jobs j
    WHERE j.status IN ('queued', 'running')
      AND EXISTS (SELECT 1 FROM jsonb_each_text(j.media) m WHERE m.value = a.id::text))
ORDER BY a.created_at
LIMIT $2
FOR UPDATE OF a SKIP LOCKED;

-- name: delete_asset
DELETE FROM assets WHERE id = $1;

-- name: lock_finished_job
-- A tenant's job, locked, for deleting its output on request.
SELECT id, status, result FROM jobs WHERE id = $1 AND tenant_id = $2 FOR UPDATE;

-- name: lock_asset
-- A tenant's upload, locked, with a queued or running job that plays it (if any).
SELECT a.id, a.object_key,
       (SELECT j.id FROM jobs j
        WHERE j.status IN ('queued', 'running')
          AND EXISTS (SELECT 1 FROM jsonb_each_text(j.media) m WHERE m.value = a.id::text)
        LIMIT 1) AS played_by
FROM assets a WHERE a.id = $1 AND a.tenant_id = $2
FOR UPDATE OF a;
