DROP INDEX `scm_integrations_runner_idx`;
-- scm_integrations_runner_page_idx, the covering index that takes its place, is made by 0004,
-- which rebuilds the table with all its indexes: made here too, it would be built twice.
