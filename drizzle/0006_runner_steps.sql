-- What lets a runner's many rows be written in steps, a bounded number each, rather than in
-- one transaction that held every other call for seconds: secrets_walk numbers the walk that
-- drops secrets sealed to the runner's earlier keys after a Signup with a new key (0 when none
-- are left); deleting marks a runner whose DeleteRunner has begun, which takes no new
-- integrations.
ALTER TABLE `runners` ADD `secrets_walk` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `runners` ADD `deleting` integer DEFAULT false NOT NULL;