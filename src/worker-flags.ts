const WORKER_HEAP_GROWING_PERCENT = 50;

/**
 * The node flags a worker runs with: the primary's, but for V8's heap growth, which is
 * `--heap-growing-percent=50` in every worker (a full collection once the old generation has
 * grown by half since the last, not doubled). Each worker holds a heap of its own, so what
 * V8 leaves uncollected counts once a worker; BENCHMARKS.md, "Both cores", has the figures.
 * (node takes this flag only as `--flag=value`, with dashes or underscores.)
 */
export function workerNodeFlags(primary: readonly string[]): string[] {
  return [...primary.filter((flag) => !/^--heap[-_]growing[-_]percent=/.test(flag)), `--heap-growing-percent=${WORKER_HEAP_GROWING_PERCENT}`];
}
