// The entry point. Signals are held first, before the rest of the service loads (a moment,
// longer under tsx), in which a signal would otherwise end the process (see signals.ts).
import "./signals.js";

await import("./lifecycle.js");
