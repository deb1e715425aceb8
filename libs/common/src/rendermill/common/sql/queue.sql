-- name: send
-- $4: the tier's rank (1 high, 0 normal, -1 low); $5: the aging period in seconds; $6: when
-- the attempt joined the queue (NULL: now). Its turn is that time moved one aging period
-- earlier per rank.
INSERT INTO queue_messages (queue, body, visible_at, priority, queued_at, turn_at)
SELECT $1, $2, now() + make_interval(secs => $3), $4, q.at,
       q.at - make_interval(secs => $4::smallint * $5::float8)
FROM (SELECT coalesce($6::timestamptz, now()) AS at) q
RETURNING id;

-- name: receive
-- Claim visible messages in turn order (higher tiers first, FIFO within a tier); a claimed
-- message is invisible for the visibility timeout and comes back (receive_count + 1)
-- unless deleted in time.
WITH claimed AS (
    UPDATE queue_messages m
    SET visible_at = now() + make_interval(secs => $3), receive_count = m.receive_count + 1
    FROM (
        SELECT id FROM queue_messages
        WHERE queue = $1 AND visible_at <= now()
        ORDER BY turn_at, id
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    ) due
    WHERE m.id = due.id
    RETURNING m.id, m.body, m.receive_count, m.queued_at, m.turn_at
)
SELECT id, body, receive_count, queued_at FROM claimed ORDER BY turn_at, id;

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
