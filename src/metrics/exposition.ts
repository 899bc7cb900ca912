/**
 * Metrics as families of samples, and their Prometheus text form (exposition format 0.0.4).
 * Families are plain data so that workers can hand theirs to the primary as IPC messages,
 * which merges them under a `worker` label and writes one page.
 */

export type MetricType = "counter" | "gauge" | "histogram";

export interface Sample {
  /** Added to the family's name: a histogram's `_bucket`, `_sum` and `_count`. */
  suffix?: "_bucket" | "_sum" | "_count";
  labels?: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  help: string;
  type: MetricType;
  samples: Sample[];
}

export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** One page; families of the same name (one per worker) are written as one, HELP and TYPE once. */
export function render(families: readonly Family[]): string {
  const byName = new Map<string, Family>();
  for (const f of families) {
    const seen = byName.get(f.name);
    if (seen) seen.samples.push(...f.samples);
    else byName.set(f.name, { ...f, samples: [...f.samples] });
  }
  let out = "";
  for (const f of byName.values()) {
    out += `# HELP ${f.name} ${f.help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}\n# TYPE ${f.name} ${f.type}\n`;
    for (const s of f.samples) out += `${f.name}${s.suffix ?? ""}${labelText(s.labels)} ${numberText(s.value)}\n`;
  }
  return out;
}

/** The same families with `labels` added to every sample (a worker's number). */
export function labelled(families: readonly Family[], labels: Record<string, string>): Family[] {
  return families.map((f) => ({ ...f, samples: f.samples.map((s) => ({ ...s, labels: { ...labels, ...s.labels } })) }));
}

function labelText(labels: Record<string, string> | undefined): string {
  if (labels === undefined) return "";
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

function numberText(n: number): string {
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return Number.isNaN(n) ? "NaN" : String(n);
}

/** Upper bounds of the request-duration buckets, in seconds. */
export const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

/** A histogram of one label set: counts per bucket (not yet cumulative), their sum and count. */
class Histogram {
  readonly counts = new Array<number>(DURATION_BUCKETS.length + 1).fill(0);
  sum = 0;
  count = 0;

  observe(v: number): void {
    let i = 0;
    while (i < DURATION_BUCKETS.length && v > DURATION_BUCKETS[i]!) i++;
    this.counts[i]! += 1;
    this.sum += v;
    this.count += 1;
  }

  samples(labels: Record<string, string>): Sample[] {
    const out: Sample[] = [];
    let cumulative = 0;
    for (const [i, bound] of [...DURATION_BUCKETS, Infinity].entries()) {
      cumulative += this.counts[i]!;
      out.push({ suffix: "_bucket", labels: { ...labels, le: bound === Infinity ? "+Inf" : String(bound) }, value: cumulative });
    }
    out.push({ suffix: "_sum", labels, value: this.sum }, { suffix: "_count", labels, value: this.count });
    return out;
  }
}

/**
 * What the requests of one process came to: how many by procedure and code, and how long
 * they took by procedure. Both labels come from short fixed sets (see server.ts), never
 * from what a client wrote, so a scan of made-up paths cannot grow the page.
 */
export class RequestMetrics {
  private readonly counts = new Map<string, { procedure: string; code: string; n: number }>();
  private readonly durations = new Map<string, Histogram>();

  /** `seconds` is null for a request node answered before its start was known: counted, not timed. */
  record(procedure: string, code: string, seconds: number | null): void {
    const key = `${procedure} ${code}`;
    const c = this.counts.get(key);
    if (c) c.n++;
    else this.counts.set(key, { procedure, code, n: 1 });
    if (seconds === null) return;
    let h = this.durations.get(procedure);
    if (!h) this.durations.set(procedure, (h = new Histogram()));
    h.observe(seconds);
  }

  families(): Family[] {
    return [
      {
        name: "scm_requests_total",
        help: "Requests answered (or cut off), by procedure and the code the client was told.",
        type: "counter",
        samples: [...this.counts.values()].map(({ procedure, code, n }) => ({ labels: { procedure, code }, value: n })),
      },
      {
        name: "scm_request_duration_seconds",
        help: "Time from a request's arrival until its answer ended, by procedure.",
        type: "histogram",
        samples: [...this.durations.entries()].flatMap(([procedure, h]) => h.samples({ procedure })),
      },
    ];
  }
}

/** A family of one sample. */
export const single = (name: string, help: string, type: "counter" | "gauge", value: number, labels?: Record<string, string>): Family => ({
  name,
  help,
  type,
  samples: [{ labels, value }],
});
