-- name: send
INSERT INTO queue_messages (queue, body, visible_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
RETURNING id;

-- name: receive
-- Claim visible messages; a claimed message is invisible for the visibility timeout and
-- comes back (receive_count + 1) unless deleted in time.
UPDATE queue_messages m
SET visible_at = now() + make_interval(secs => $3), receive_count = m.receive_count + 1
FROM (
    SELECT id FROM queue_messages
    WHERE queue = $1 AND visible_at <= now()
    ORDER BY visible_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
) due
WHERE m.id = due.id
RETURNING m.id, m.body, m.receive_count;

-- name: delete
DELETE FROM queue_messages WHERE id = $1;

-- name: change_visibility
UPDATE queue_messages SET visible_at = now() + make_interval(secs => $2) WHERE id = $1;

-- name: dead_letter
WITH moved AS (DELETE FROM queue_messages WHERE id = $1 RETURNING *)
INSERT INTO queue_dead_letters (id, queue, body, receive_count, created_at)
SELECT id, queue, body, receive_count, created_at FROM moved;

-- name: depth
SELECT count(*) AS depth,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age
FROM queue_messages WHERE queue = $1;

-- name: dead_letters
SELECT * FROM queue_dead_letters WHERE queue = $1 ORDER BY dead_at;
