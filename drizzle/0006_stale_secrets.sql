-- Marks a runner whose secrets sealed to its earlier keys are still being dropped, a bounded
-- number a write after a Signup with a new key (one transaction for all of them held every
-- other call for seconds on a runner with many integrations).
ALTER TABLE `runners` ADD `stale_secrets` integer DEFAULT false NOT NULL;