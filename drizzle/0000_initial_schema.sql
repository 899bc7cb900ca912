CREATE TABLE `api_tokens` (
	`id` text PRIMARY KEY NOT NULL,
	`org_id` text NOT NULL,
	`token_hash` blob NOT NULL,
	`created_at` integer NOT NULL,
	`revoked_at` integer,
	FOREIGN KEY (`org_id`) REFERENCES `organizations`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE UNIQUE INDEX `api_tokens_token_hash_unique` ON `api_tokens` (`token_hash`);--> statement-breakpoint
CREATE INDEX `api_tokens_org_idx` ON `api_tokens` (`org_id`,`id`);--> statement-breakpoint
CREATE TABLE `organizations` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `organizations_name_unique` ON `organizations` (`name`);--> statement-breakpoint
CREATE TABLE `runners` (
	`id` text PRIMARY KEY NOT NULL,
	`org_id` text NOT NULL,
	`name` text NOT NULL,
	`kind` integer NOT NULL,
	`provider` integer NOT NULL,
	`creator_id` text NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`access_token_hash` blob NOT NULL,
	`public_key` blob,
	`status_updated_at` integer,
	`config_schema` text,
	FOREIGN KEY (`org_id`) REFERENCES `organizations`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE UNIQUE INDEX `runners_access_token_hash_unique` ON `runners` (`access_token_hash`);--> statement-breakpoint
CREATE INDEX `runners_org_idx` ON `runners` (`org_id`,`id`);--> statement-breakpoint
CREATE TABLE `scm_integrations` (
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
);
--> statement-breakpoint
CREATE UNIQUE INDEX `scm_integrations_runner_host_uq` ON `scm_integrations` (`runner_id`,`host`);--> statement-breakpoint
CREATE INDEX `scm_integrations_org_idx` ON `scm_integrations` (`org_id`,`id`);--> statement-breakpoint
CREATE INDEX `scm_integrations_runner_idx` ON `scm_integrations` (`runner_id`,`id`);