-- While a runner's secrets sealed to its earlier keys are still being dropped, a bounded
-- number a write after a Signup with a new key (one transaction for all of them held every
-- other call for seconds on a runner with many integrations), the number of the walk that
-- drops them; 0 when none are left.
ALTER TABLE `runners` ADD `secrets_walk` integer DEFAULT 0 NOT NULL;