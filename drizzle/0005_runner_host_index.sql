-- One covering index in (runner_id, host) order takes the place of two: the unique index on
-- (runner_id, host) and the covering one in (runner_id, id) order. A create then writes one
-- b-tree at a random place instead of two. SQLite has no unique index with extra columns, so
-- the one-integration-per-host-and-runner rule moves to the triggers below, which look the
-- pair up in the new index (the page the insert then writes). drizzle-kit does not model
-- triggers: a generated migration that recreates this table must add them back.
CREATE INDEX `scm_integrations_runner_host_idx` ON `scm_integrations` (`runner_id`,`host`,`id`,`scm_id`,`pat`,`oauth_client_id`,`oauth_encrypted_secret`,`oauth_sealed_to`,`issuer_url`,`virtual_directory`);--> statement-breakpoint
DROP INDEX `scm_integrations_runner_host_uq`;--> statement-breakpoint
DROP INDEX `scm_integrations_runner_page_idx`;--> statement-breakpoint
-- The message is SQLite's own for a unique index, so the error reads as it did (store/errors.ts).
CREATE TRIGGER `scm_integrations_runner_host_unique_insert` BEFORE INSERT ON `scm_integrations`
WHEN EXISTS (SELECT 1 FROM `scm_integrations` WHERE `runner_id` = NEW.`runner_id` AND `host` = NEW.`host`)
BEGIN
  SELECT RAISE(ABORT, 'UNIQUE constraint failed: scm_integrations.runner_id, scm_integrations.host');
END;--> statement-breakpoint
CREATE TRIGGER `scm_integrations_runner_host_unique_update` BEFORE UPDATE OF `runner_id`, `host` ON `scm_integrations`
WHEN EXISTS (SELECT 1 FROM `scm_integrations` WHERE `runner_id` = NEW.`runner_id` AND `host` = NEW.`host` AND `id` <> NEW.`id`)
BEGIN
  SELECT RAISE(ABORT, 'UNIQUE constraint failed: scm_integrations.runner_id, scm_integrations.host');
END;
