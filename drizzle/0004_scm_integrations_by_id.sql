-- Rebuilds scm_integrations as a WITHOUT ROWID table keyed by id: a Get is then one lookup
-- in one b-tree, where a rowid table needs its id index and then the table, and a create
-- writes one b-tree fewer. drizzle-kit does not model WITHOUT ROWID: a migration it
-- generates later that recreates this table must keep the clause (see schema.ts).
CREATE TABLE `__new_scm_integrations` (
	`id` text PRIMARY KEY NOT NULL,
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
) WITHOUT ROWID;
--> statement-breakpoint
INSERT INTO `__new_scm_integrations` SELECT `id`, `org_id`, `runner_id`, `scm_id`, `host`, `pat`, `oauth_client_id`, `oauth_encrypted_secret`, `oauth_sealed_to`, `issuer_url`, `virtual_directory`, `created_at`, `updated_at` FROM `scm_integrations` ORDER BY `id`;--> statement-breakpoint
DROP TABLE `scm_integrations`;--> statement-breakpoint
ALTER TABLE `__new_scm_integrations` RENAME TO `scm_integrations`;--> statement-breakpoint
CREATE UNIQUE INDEX `scm_integrations_runner_host_uq` ON `scm_integrations` (`runner_id`,`host`);--> statement-breakpoint
CREATE INDEX `scm_integrations_org_idx` ON `scm_integrations` (`org_id`,`id`);--> statement-breakpoint
CREATE INDEX `scm_integrations_runner_page_idx` ON `scm_integrations` (`runner_id`,`id`,`scm_id`,`host`,`pat`,`oauth_client_id`,`oauth_encrypted_secret`,`oauth_sealed_to`,`issuer_url`,`virtual_directory`);
