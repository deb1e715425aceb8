-- Priority tiers. A job's priority is its tier's rank: 1 high, 0 normal, -1 low. Integer
-- priorities accepted before tiers existed (never acted on) count by their sign.
UPDATE jobs SET priority = sign(priority) WHERE priority NOT BETWEEN -1 AND 1;
ALTER TABLE jobs ADD CONSTRAINT jobs_priority_tier CHECK (priority BETWEEN -1 AND 1);

-- A queue message's tier rank, when its attempt joined the queue (kept when a deferral
-- sends it again), and its turn: that time moved earlier by the aging period for a high
-- tier, later for a low one. Receive hands out visible messages by turn, so a higher tier
-- goes first unless the lower one has waited a whole aging period longer per tier step.
ALTER TABLE queue_messages
    ADD COLUMN priority smallint NOT NULL DEFAULT 0,
    ADD COLUMN queued_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN turn_at timestamptz NOT NULL DEFAULT now();
UPDATE queue_messages SET queued_at = created_at, turn_at = created_at;
CREATE INDEX queue_messages_turn ON queue_messages (queue, turn_at, id);
