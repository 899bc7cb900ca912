-- Rebuilds scm_integrations as a rowid table whose integer key is made from the id (keyOf in
-- src/store/scm-integrations.ts): the 48 bits of time of a UUIDv7 and the 14 random bits that
-- follow, 62 bits in all. A Get looks the key up in a b-tree whose interior pages hold only
-- keys, four levels at a million rows, where the table keyed by the id text (0004) held whole
-- rows in its interior pages and was eight levels deep. Ids made in one millisecond share
-- their time; when two share a key, the later (in id order) takes one above 2^62 instead,
-- and is found through the unique index on id. The key is worked out here from the hex
-- digits, as keyOf does: SQLite has no function that reads hex as a number.
-- drizzle-kit does not model the key column or the triggers of 0005: a generated migration
-- that recreates this table must keep both (see schema.ts).
CREATE TABLE `__new_scm_integrations` (
	`key` integer PRIMARY KEY NOT NULL,
	`id` text NOT NULL,
	`org_id` text NOT NULL,
	`runner_id` text NOT NULL,
	`scm_id` text NOT NULL,
	`host` text NOT NULL,
	`pat` integer NOT NULL,
	`oauth_client_id` text,
	`oauth_encrypted_secret` blob,
	`oauth_sealed_to` blob,
	`issuer_url` text,
	`virtual_directory` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	FOREIGN KEY (`runner_id`) REFERENCES `runners`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
INSERT INTO `__new_scm_integrations` (`key`, `id`, `org_id`, `runner_id`, `scm_id`, `host`, `pat`, `oauth_client_id`, `oauth_encrypted_secret`, `oauth_sealed_to`, `issuer_url`, `virtual_directory`, `created_at`, `updated_at`)
SELECT CASE WHEN `nth` = 1 THEN `k` ELSE 4611686018427387903 + `seq` END, `id`, `org_id`, `runner_id`, `scm_id`, `host`, `pat`, `oauth_client_id`, `oauth_encrypted_secret`, `oauth_sealed_to`, `issuer_url`, `virtual_directory`, `created_at`, `updated_at`
FROM (
	SELECT *, row_number() OVER (PARTITION BY `k` ORDER BY `id`) AS `nth`, row_number() OVER (ORDER BY `id`) AS `seq`
	FROM (SELECT *, ((((((((((((((((instr('0123456789abcdef', lower(substr(`id`, 1, 1))) - 1)) * 16 + (instr('0123456789abcdef', lower(substr(`id`, 2, 1))) - 1)) * 16 + (instr('0123456789abcdef', lower(substr(`id`, 3, 1))) - 1)) * 16 + (instr('0123456789abcdef', lower(substr(`id`, 4, 1))) - 1)) * 16 + (instr('0123456789abcdef', lower(substr(`id`, 5, 1))) - 1)) * 16 + (instr('0123456789abcdef', lower(substr(`id`, 6, 1))) - 1)) * 16 + (instr('0123456789abcdef', lower(substr(`id`, 7, 1))) - 1)) * 16 + (instr('0123456789abcdef', lower(substr(`id`, 8, 1))) - 1)) * 16 + (instr('0123456789abcdef', lower(substr(`id`, 10, 1))) - 1)) * 16 + (instr('0123456789abcdef', lower(substr(`id`, 11, 1))) - 1)) * 16 + (instr('0123456789abcdef', lower(substr(`id`, 12, 1))) - 1)) * 16 + (instr('0123456789abcdef', lower(substr(`id`, 13, 1))) - 1)) * 16 + (instr('0123456789abcdef', lower(substr(`id`, 16, 1))) - 1)) * 16 + (instr('0123456789abcdef', lower(substr(`id`, 17, 1))) - 1)) * 16 + (instr('0123456789abcdef', lower(substr(`id`, 18, 1))) - 1)) * 4 + ((instr('0123456789abcdef', lower(substr(`id`, 20, 1))) - 1) & 3) AS `k` FROM `scm_integrations`)
)
ORDER BY 1;--> statement-breakpoint
DROP TABLE `scm_integrations`;--> statement-breakpoint
ALTER TABLE `__new_scm_integrations` RENAME TO `scm_integrations`;--> statement-breakpoint
CREATE UNIQUE INDEX `scm_integrations_id_idx` ON `scm_integrations` (`id`);--> statement-breakpoint
CREATE INDEX `scm_integrations_org_idx` ON `scm_integrations` (`org_id`,`id`);--> statement-breakpoint
CREATE INDEX `scm_integrations_runner_host_idx` ON `scm_integrations` (`runner_id`,`host`,`id`,`scm_id`,`pat`,`oauth_client_id`,`oauth_encrypted_secret`,`oauth_sealed_to`,`issuer_url`,`virtual_directory`);--> statement-breakpoint
-- Dropped with the table above; as 0005 made them.
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
