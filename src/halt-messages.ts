/**
 * Messages between the primary and its workers about a failed sync. A worker whose sync
 * failed says so; the primary tells every worker, so that the whole service stops writing
 * and reading, as one process does (see GroupCommit.halt). The kernel would report the lost
 * writeback to the other workers' own descriptors at their next sync too, but only if they
 * had the file open when it happened.
 *
 * Before it serves, each worker asks whether that has happened, and the primary answers
 * (`halt`, or `halt: null`). Node drops a message that comes before a process listens for
 * messages, so a worker still starting when another failed could not have been told.
 */
export type HaltMessage = { halt: string };
export const isHaltMessage = (m: unknown): m is HaltMessage => typeof (m as HaltMessage | null)?.halt === "string";
export const HALT_ASKED = { haltAsked: true } as const;
export const NOT_HALTED = { halt: null } as const;
